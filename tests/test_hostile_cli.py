"""Hostile but fair command lines and plan files: a one-line error naming the fix, the
documented exit code, no traceback, and nothing started or written.

(`catch_exceptions=False` in tests.clihelp.run: an unexpected exception fails the test
instead of becoming exit 1.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import run
from toolkit.api.plan import make_plans


def _plan_doc() -> dict[str, Any]:
    doc = make_plans("smollm2-135m", hw="cpu,ram=24G,cores=2", calibration=[]).to_dict()
    assert len(doc["plans"]) == 2
    return doc


def _one_line(stderr: str) -> None:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert 1 <= len(lines) <= 2, stderr  # the error, and its hint
    assert "Traceback" not in stderr


@pytest.mark.parametrize("port", ["70000", "-1", "0", "http"])
def test_up_port_out_of_range(port: str) -> None:
    res = run("up", "smollm2-135m:q4_1", "--port", port, "--dry-run")
    assert res.exit_code == 2 and "--port" in res.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-3", "lots"])
def test_cost_figures_must_be_finite(value: str) -> None:
    res = run("cost", "smollm2-135m", "--hw", "cpu,ram=24G", "--gpu-hour-usd", value)
    assert res.exit_code == 2 and "--gpu-hour-usd" in res.stderr


def test_model_and_plan_file_together(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(_plan_doc()))
    res = run("up", "qwen3-coder", "--plan", str(path), "--dry-run")
    assert res.exit_code == 2 and "not both" in res.stderr
    _one_line(res.stderr)


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda p: p.update(ctx=-5), "ctx -5"),
        (lambda p: p.update(ctx="big"), "ctx 'big'"),
        (lambda p: p.update(concurrency=0), "concurrency 0"),
        (lambda p: p.update(engine="sglang"), "engine 'sglang'"),
        (lambda p: p["llamacpp"].update(ubatch=10**9), "llamacpp.ubatch"),
        (lambda p: p["llamacpp"].update(threads=-2), "llamacpp.threads"),
        (lambda p: p.pop("memory"), "not a valid plan"),
        (lambda p: p.update(speed=[1, 2]), "not a valid plan"),
        (lambda p: p["llamacpp"].update(bogus=1), "not a valid plan"),
        (lambda p: p.update(variant_id="x" * 500), "variant_id"),
    ],
)
def test_plan_file_values_are_checked(tmp_path: Path, mutate: Any, words: str) -> None:
    plan = _plan_doc()["plans"][0]
    mutate(plan)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    res = run("up", "--plan", str(path), "--dry-run")
    assert res.exit_code == 2, res.stderr
    assert words in res.stderr
    _one_line(res.stderr)


def test_a_plan_answer_with_several_plans_says_which_it_runs(tmp_path: Path) -> None:
    doc = _plan_doc()
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(doc))
    first = run("up", "--plan", str(path), "--dry-run")
    # (4: the model is not pulled in this test's store; the choice is said before that)
    assert first.exit_code in (0, 4), first.stderr
    assert "running plan #1 of 2" in first.stderr and "--plan-index" in first.stderr
    assert doc["plans"][0]["variant_id"] in first.stderr
    beyond = run("up", "--plan", str(path), "--plan-index", "3", "--dry-run")
    assert beyond.exit_code == 2 and "holds 2 plans" in beyond.stderr
    alone = run("up", "smollm2-135m", "--plan-index", "2", "--dry-run")
    assert alone.exit_code == 2 and "--plan-index needs --plan" in alone.stderr


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ('{"model_type": "llama", "num_hidden_layers": "many", "hidden_size": 64}', "many"),
        (
            '{"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, '
            '"num_attention_heads": 0, "vocab_size": 100}',
            "config.json",
        ),
        ("[1, 2, 3]", "not an object"),
        (
            '{"model_type": "llama", "num_hidden_layers": 1e12, "hidden_size": 64, '
            '"num_attention_heads": 8, "vocab_size": 100}',
            "config.json",
        ),
        ('{"model_type": "llama"}', "config.json lacks"),
    ],
)
def test_bad_config_json_is_one_line(tmp_path: Path, config: str, words: str) -> None:
    (tmp_path / "config.json").write_text(config)
    for cmd in ("estimate", "plan"):
        res = run(cmd, str(tmp_path), "--quant", "q4_k_m", "--hw", "cpu,ram=8G")
        assert res.exit_code == 2, (cmd, res.stderr)
        assert words in res.stderr
        _one_line(res.stderr)


@pytest.mark.parametrize(
    ("key", "value", "kind", "words"),
    [
        ("general.alignment", 0, "UINT32", "makes no sense"),
        ("general.alignment", "abc", "STRING", "makes no sense"),
        ("llama.context_length", -1, "INT32", "GGUF"),
    ],
)
def test_bad_gguf_header_values_are_one_line(
    tmp_path: Path, key: str, value: Any, kind: str, words: str
) -> None:
    from gguf import GGUFValueType

    from tests.fabricate import write_gguf
    from toolkit.catalog.schema import Architecture

    arch = Architecture(
        model_type="llama", layers=2, hidden_size=64, heads=4, kv_heads=2, head_dim=16,
        vocab_size=256, intermediate_size=128,
    )  # fmt: skip
    (path,) = write_gguf(
        tmp_path / "bad.gguf", arch, ftype="Q8_0", extra={key: (value, GGUFValueType[kind])}
    )
    for cmd in ("estimate", "plan"):
        res = run(cmd, str(path), "--hw", "cpu,ram=8G")
        assert res.exit_code in (0, 2), (cmd, res.stderr)  # a usable value may still plan
        if res.exit_code == 2:
            assert words in res.stderr
            _one_line(res.stderr)


def test_a_gguf_with_billions_of_layers_is_refused_quickly(tmp_path: Path) -> None:
    from gguf import GGUFValueType

    from tests.fabricate import write_gguf
    from toolkit.catalog.schema import Architecture

    arch = Architecture(
        model_type="llama", layers=2, hidden_size=64, heads=4, kv_heads=2, head_dim=16,
        vocab_size=256, intermediate_size=128,
    )  # fmt: skip
    (path,) = write_gguf(
        tmp_path / "huge.gguf",
        arch,
        ftype="Q8_0",
        extra={"llama.block_count": (4_000_000_000, GGUFValueType.UINT32)},
    )
    res = run("estimate", str(path), "--hw", "cpu,ram=8G")
    assert res.exit_code == 2 and "layers" in res.stderr
    _one_line(res.stderr)


def _profile(tmp_path: Path) -> dict[str, Any]:
    good = tmp_path / "good.json"
    assert run("hw", "--hw", "1xrtx4090,ram=64G,cores=8", "--save", str(good)).exit_code == 0
    doc: dict[str, Any] = json.loads(good.read_text())
    return doc


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: d["host"].update(ram_total_bytes="lots"), "host.ram_total_bytes is 'lots'"),
        (lambda d: d.update(host=None), "malformed hardware profile"),
        (lambda d: d["host"].update(ram_available_bytes=-5), "ram_available_bytes is -5"),
        (lambda d: d["gpus"][0].update(total_bytes="x"), "gpus[0].total_bytes"),
        (lambda d: d["gpus"][0].update(vendor="acme"), "vendor"),
        (lambda d: d.update(gpus=d["gpus"] * 65), "65 GPUs"),
        (lambda d: d["gpus"].append({"total_bytes": 1}), "malformed hardware profile"),
    ],
)
def test_bad_hardware_profiles_are_one_line(tmp_path: Path, mutate: Any, words: str) -> None:
    doc = _profile(tmp_path)
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    res = run("plan", "smollm2-135m", "--hw", str(path))
    assert res.exit_code == 2, res.stderr
    assert words in res.stderr
    _one_line(res.stderr)


def test_a_recipe_file_that_is_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "recipes"
    d.mkdir()
    (d / "bad.yaml").write_bytes(b"family: x\nmodels: []\n\xff\xfe bad")
    monkeypatch.setenv("DEPLOY_RECIPES_PATH", str(d))
    res = run("recipes", "list")
    assert res.exit_code == 2 and "bad.yaml: not UTF-8 text (byte 0xff" in res.stderr
    _one_line(res.stderr)


@pytest.mark.parametrize("host", ["not a host!", "-bad", "a..b", "x" * 300, "http://x"])
def test_up_host_must_be_an_address_or_a_name(host: str) -> None:
    res = run("up", "smollm2-135m:q4_1", "--host", host, "--dry-run")
    assert res.exit_code == 2 and "--host" in res.stderr
    _one_line(res.stderr)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "0.0.0.0"])
def test_up_host_accepts_addresses_and_names(host: str) -> None:
    res = run("up", "smollm2-135m:q4_1", "--host", host, "--dry-run")
    assert "--host" not in res.stderr or "not an IP address" not in res.stderr


def test_deploy_home_that_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("DEPLOY_HOME", str(home))
    for args in (("pull", "smollm2-135m:q4_1"), ("ps",), ("models",)):
        res = run(*args)
        assert res.exit_code == 2 and "is a file, not a folder" in res.stderr, args
        _one_line(res.stderr)
    assert home.read_text() == "not a folder"


def test_junk_tls_files_are_refused_before_any_engine(tmp_path: Path, smollm2_gguf: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("junk")
    res = run(
        "up", str(smollm2_gguf), "--ctx", "512", "--host", "0.0.0.0", "--tls-cert", str(junk),
        "--tls-key", str(junk), "--dry-run",
    )  # fmt: skip
    assert res.exit_code == 2 and "do not load as a PEM certificate" in res.stderr
    _one_line(res.stderr)


def test_no_engines_names_the_folder_it_looked_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_ENGINES_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    res = run("engines")
    assert res.exit_code == 0
    assert (
        str(tmp_path / "none") in res.stdout.replace("\n", "")
        and "DEPLOY_ENGINES_DIR" in res.stdout
    )


def test_a_plan_for_a_gpu_on_a_machine_without_it(tmp_path: Path, smollm2_gguf: Path) -> None:
    """A plan made for a 4090 run here (no GPU): exit 3 naming the missing device."""
    from toolkit.api.plan import make_plans as plans
    from toolkit.api.runs import free_memory_now

    if "cuda:0" in free_memory_now():
        pytest.skip("this machine has an NVIDIA GPU: the plan's device exists here")
    plan = plans(str(smollm2_gguf), hw="1xrtx4090,ram=64G", calibration=[]).plans[0]
    assert "cuda:0" in plan.devices
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_dict()))
    res = run("up", "--plan", str(path), "--dry-run")
    assert res.exit_code == 3, res.stderr
    assert "cuda:0: the plan uses it, this machine has none (planned for 1xrtx4090" in res.stderr
