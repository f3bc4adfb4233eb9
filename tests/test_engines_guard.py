"""deploy's key guard for vLLM, driven through the ASGI protocol vLLM serves it with."""

from __future__ import annotations

import asyncio
import types
from pathlib import Path
from typing import Any

import pytest

from toolkit.engines import vllm_guard

KEY = "sk-guard-test"


def load_guard() -> types.ModuleType:
    """The module exactly as written into the run folder (compiled from its text)."""
    module = types.ModuleType(vllm_guard.MODULE)
    exec(compile(vllm_guard.SOURCE, f"{vllm_guard.MODULE}.py", "exec"), module.__dict__)
    return module


def call(path: str, *, method: str = "POST", token: str | None = None) -> tuple[int, bool]:
    """Send one HTTP request through RequireKey; (status, whether the app was reached)."""
    reached: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(True)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else []
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": headers}
    guard = load_guard().RequireKey(app)
    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], bool(reached)


@pytest.fixture
def with_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", KEY)


@pytest.mark.usefixtures("with_key")
def test_every_path_but_health_needs_the_key() -> None:
    for path in ("/invocations", "/v1/chat/completions", "/tokenize", "/metrics", "/version"):
        assert call(path) == (401, False), path
        assert call(path, token="wrong") == (401, False), path
        assert call(path, token=KEY) == (200, True), path
    assert call("/health", method="GET") == (200, True)
    assert call("/invocations", method="OPTIONS") == (200, True)  # CORS preflight


def test_no_key_configured_refuses_all_but_health(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    assert call("/invocations", token="") == (401, False)
    assert call("/health", method="GET") == (200, True)


def test_keys_file_holds_several_keys_and_is_read_again_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's key and the team's named keys; `deploy keys revoke` rewrites the file and
    the revoked key stops working at the next request, with no restart."""
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"{KEY}\nsk-alice\n")
    monkeypatch.setenv(vllm_guard.KEYS_FILE_VAR, str(keys_file))
    monkeypatch.setenv("VLLM_API_KEY", "sk-ignored-when-a-file-is-named")
    guard = load_guard()
    gate = guard.RequireKey(lambda *a: None)

    def allowed(token: str) -> bool:
        scope = {"headers": [(b"authorization", f"Bearer {token}".encode())]}
        return bool(gate._allowed(scope))

    assert allowed(KEY) and allowed("sk-alice")
    assert not allowed("sk-ignored-when-a-file-is-named") and not allowed("sk-bob")
    keys_file.write_text(f"{KEY}\nsk-bob-longer\n")  # alice revoked, bob added
    assert allowed(KEY) and allowed("sk-bob-longer") and not allowed("sk-alice")
    keys_file.unlink()  # no file: no key works
    assert not allowed(KEY)


def test_guard_is_written_and_named_in_the_launch(tmp_path: Path) -> None:
    from tests.test_engines import VLLM_CPU, launch, make_plan

    la = launch(make_plan("vllm"), VLLM_CPU, tmp_path)
    assert la.argv[la.argv.index("--middleware") + 1] == vllm_guard.MIDDLEWARE
    env = la.process_env({})
    written = Path(env["PYTHONPATH"]) / f"{vllm_guard.MODULE}.py"
    assert written.read_text() == vllm_guard.SOURCE
