"""LoRA adapters named in recipes: listed, pulled and verified by the store
(`MODEL:lora-NAME`), bundled and imported for an air gap, refused by the planner, and
served with `deploy up MODEL --lora NAME` and a stack's `lora: [{adapter: NAME}]`.

The adapter is a GGUF LoRA for SmolLM2 with random but fixed weights
(tests/fabricate.py), served by a loopback hub (tests/hubserver.py) to the real
huggingface_hub client; the base is the real SmolLM2-135M GGUF."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import run
from tests.fabricate import write_lora_gguf
from tests.hubserver import HubServer
from tests.storefixtures import SMOL_NAME, SMOL_SHA256, SMOL_SIZE
from tests.upfixtures import read_key

ADAPTER = "smol-sql-lora.gguf"


def _recipe(size: int, sha: str) -> str:
    return f"""\
schema_version: 1
family: loratest
models:
  - id: loratest-smol
    name: LoRA test model (SmolLM2-135M bytes)
    repo: test-org/Tiny
    same_architecture_as: smollm2-135m
    params: {{total: 134515008}}
    context: {{native: 8192}}
    variants:
      - quant: q4_1
        format: gguf
        repo: test-org/Tiny-GGUF
        files: [{{name: {SMOL_NAME}, size: {SMOL_SIZE}, sha256: {SMOL_SHA256}}}]
    adapters:
      - name: sql
        repo: test-org/Tiny-SQL-LoRA
        format: gguf
        rank: 8
        files: [{{name: {ADAPTER}, size: {size}, sha256: {sha}}}]
"""


@pytest.fixture
def lora_hub(
    smollm2_gguf: Path, tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[HubServer]:
    adapter = write_lora_gguf(tmp_path / ADAPTER, hidden=576, layers=30, kv_dim=192,
                              rank=8, scale=0.2, seed=7)  # fmt: skip
    data = adapter.read_bytes()
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "loratest.yaml").write_text(_recipe(len(data), hashlib.sha256(data).hexdigest()))
    monkeypatch.setenv("DEPLOY_RECIPES_PATH", str(recipes))
    with HubServer() as server:
        server.add_repo("test-org/Tiny-GGUF", {SMOL_NAME: smollm2_gguf})
        server.add_repo("test-org/Tiny-SQL-LoRA", {ADAPTER: data, "README.md": b"# sql\n"})
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server


def test_recipe_adapters_are_listed_pulled_verified_and_not_planned(
    lora_hub: HubServer, tmp_path: Path
) -> None:
    shown = run("recipes", "show", "loratest-smol", "--json")
    assert shown.exit_code == 0, shown.stderr
    (adapter,) = json.loads(shown.stdout)["adapters"]
    assert adapter["id"] == "loratest-smol:lora-sql" and adapter["rank"] == 8
    assert "loratest-smol:lora-sql" in run("recipes", "show", "loratest-smol").stdout

    # A corrupted download is refused and nothing is kept.
    lora_hub.corrupt("test-org/Tiny-SQL-LoRA", ADAPTER)
    bad = run("pull", "loratest-smol:lora-sql")
    assert bad.exit_code == 6 and "sha256" in bad.stderr
    assert json.loads(run("models", "--json").stdout) == []
    lora_hub._corrupt.clear()

    pulled = run("pull", "loratest-smol:lora-sql", "--json")
    assert pulled.exit_code == 0, pulled.stderr
    (path,) = (Path(p) for p in json.loads(pulled.stdout)["paths"])
    assert path.name == ADAPTER and path.is_file()
    rows = json.loads(run("models", "--json").stdout)
    assert [(r["variant"], r["verified"]) for r in rows] == [("loratest-smol:lora-sql", "ok")]
    assert run("verify", "loratest-smol:lora-sql").exit_code == 0

    # An adapter is not weights: the planner says what to do instead.
    plan = run("plan", "loratest-smol:lora-sql")
    assert plan.exit_code == 2 and "LoRA adapter" in plan.stderr
    assert "--lora sql" in plan.stderr
    missing = run("up", "loratest-smol", "--lora", "nosuch")
    assert missing.exit_code == 4 and "has no LoRA adapter 'nosuch'" in missing.stderr
    assert "sql" in missing.stderr
    bad_scale = run("up", "loratest-smol", "--lora", "sql=lots")
    assert bad_scale.exit_code == 2 and "NAME=SCALE" in bad_scale.stderr
    local = tmp_path / "model.gguf"
    local.write_bytes(b"GGUF")
    a_file = run("up", str(local), "--lora", "sql")
    assert (
        a_file.exit_code == 2 and "is a file" in a_file.stderr and "--lora-scaled" in a_file.stderr
    )


@pytest.mark.parametrize(
    ("adapter", "why"),
    [
        ({"format": "gguf", "files": []}, "one .gguf file"),
        ({"format": "gguf", "files": [{"name": "a.safetensors"}]}, "one .gguf file"),
        ({"format": "peft", "files": [{"name": "adapter_model.safetensors"}]}, "adapter_config"),
        ({"format": "gguf", "files": [{"name": "a.gguf"}], "name": "Bad Name"}, "lowercase"),
        ({"format": "gguf", "files": [{"name": "a.gguf"}], "repo": "no-owner"}, "owner/name"),
        ({"format": "gguf", "files": [{"name": "a.gguf", "sha256": "xyz"}]}, "64 lowercase hex"),
        ({"format": "onnx", "files": [{"name": "a.gguf"}]}, "format"),
    ],
)
def test_a_bad_adapter_entry_is_refused_with_its_reason(adapter: dict[str, Any], why: str) -> None:
    from pydantic import ValidationError

    from toolkit.catalog.schema import Adapter

    entry = {"name": "sql", "repo": "org/sql-lora", **adapter}
    with pytest.raises(ValidationError, match=why):
        Adapter.model_validate(entry)


def test_an_adapter_id_may_not_shadow_a_variant() -> None:
    from pydantic import ValidationError

    from toolkit.catalog.schema import Model

    doc = {
        "id": "m", "name": "M", "repo": "o/m", "params": {"total": 1e9},
        "context": {"native": 4096},
        "variants": [{"quant": "lora-sql", "format": "gguf", "repo": "o/m-gguf"}],
        "adapters": [{"name": "sql", "repo": "o/sql", "format": "gguf",
                      "files": [{"name": "sql.gguf"}]}],
    }  # fmt: skip
    with pytest.raises(ValidationError, match="is an adapter's id"):
        Model.model_validate(doc)


def test_an_adapter_travels_in_a_bundle(
    lora_hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("pull", "loratest-smol:lora-sql", "-q").exit_code == 0
    out = tmp_path / "bundle.tar"
    res = run("bundle", "loratest-smol:lora-sql", "-o", str(out), "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["models"] == ["loratest-smol:lora-sql"]
    # A fresh machine, offline, no hub.
    monkeypatch.setenv("DEPLOY_HOME", str(tmp_path / "target-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "target-hf"))
    monkeypatch.setenv("DEPLOY_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    lora_hub.requests.clear()
    imported = run("import", str(out), "--json")
    assert imported.exit_code == 0, imported.stderr
    rows = json.loads(run("models", "--json").stdout)
    assert [(r["variant"], r["origin"], r["verified"]) for r in rows] == [
        ("loratest-smol:lora-sql", "import", "ok")
    ]
    assert lora_hub.requests == []


@pytest.mark.engine
@pytest.mark.llamacpp
def test_up_serves_a_recipe_adapter_on_llama_server(
    lora_hub: HubServer, llama_server: Any, cached_engines: Path, isolated_env: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    from openai import OpenAI

    not_pulled = run("up", "loratest-smol", "--lora", "sql", "--dry-run")
    assert not_pulled.exit_code == 4 and "deploy pull" in not_pulled.stderr
    assert run("pull", "loratest-smol:q4_1", "-q").exit_code == 0
    assert run("pull", "loratest-smol:lora-sql", "-q").exit_code == 0
    dry = run("up", "loratest-smol", "--lora", "sql=0.5", "--ctx", "1024", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    argv = json.loads(dry.stdout)["argv"]
    scaled = argv[argv.index("--lora-scaled") + 1]
    assert scaled.endswith(f"{ADAPTER}:0.5") and Path(scaled.rsplit(":", 1)[0]).is_file()

    up = run("up", "loratest-smol", "--lora", "sql", "--ctx", "1024", "--name", "sq", "--json")
    assert up.exit_code == 0, up.stderr
    doc = json.loads(up.stdout)
    try:
        client = OpenAI(base_url=doc["base_url"], api_key=read_key(isolated_env, "sq"),
                        max_retries=2, timeout=300)  # fmt: skip

        def ask(scale: float) -> str:
            reply = client.chat.completions.create(
                model=doc["served_model_name"],
                messages=[{"role": "user", "content": "Name three colours."}],
                max_tokens=16,
                temperature=0,
                extra_body={"lora": [{"id": 0, "scale": scale}], "cache_prompt": False},
            )
            return reply.choices[0].message.content or ""

        on, off = ask(1.0), ask(0.0)
        assert on != off  # the adapter the recipe names is loaded and changes the answer
        # `restart` keeps the adapter: its flags are part of the run's saved launch.
        restarted = run("restart", "sq", "--json")
        assert restarted.exit_code == 0, restarted.stderr
        assert (ask(1.0), ask(0.0)) == (on, off)
    finally:
        assert run("stop", "sq").exit_code == 0


@pytest.mark.engine
@pytest.mark.llamacpp
def test_a_stack_names_a_recipe_adapter(
    lora_hub: HubServer, llama_server: Any, cached_engines: Path, isolated_env: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    from openai import OpenAI

    stack = tmp_path / "deploy.yaml"
    both = "lora: [{adapter: sql, path: x.gguf}]"
    stack.write_text(
        f"version: 1\nname: ad\nmodels:\n  - {{alias: t, model: loratest-smol, {both}}}\n"
    )
    bad = run("stack", "validate", "-f", str(stack))
    assert bad.exit_code == 2 and "not both" in bad.stderr
    stack.write_text(
        "version: 1\nname: ad\nmodels:\n"
        "  - {alias: base, model: loratest-smol, ctx: 1024}\n"
        "  - {alias: sql, model: loratest-smol, ctx: 1024, lora: [{adapter: sql}]}\n"
    )
    assert run("stack", "validate", "-f", str(stack)).exit_code == 0
    assert run("pull", "loratest-smol:q4_1", "-q").exit_code == 0
    unpulled = run("up", "-f", str(stack))
    assert unpulled.exit_code == 4 and "deploy pull loratest-smol:lora-sql" in unpulled.stderr
    assert run("pull", "loratest-smol:lora-sql", "-q").exit_code == 0
    res = run("up", "-f", str(stack), "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    try:
        client = OpenAI(base_url=doc["base_url"], api_key=read_key(isolated_env, "ad"),
                        max_retries=2, timeout=120)  # fmt: skip

        def answer(alias: str) -> str:
            r = client.chat.completions.create(
                model=alias,
                messages=[{"role": "user", "content": "Name three colours."}],
                max_tokens=16,
                temperature=0,
            )
            return r.choices[0].message.content or ""

        assert answer("sql") != answer("base")
    finally:
        assert run("stop", "ad").exit_code == 0
