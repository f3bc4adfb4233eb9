"""`deploy check` logic against a loopback server that replays RECORDED responses.

No small tool-calling model runs here, so the tool-call check is proven on responses
recorded from a real llama-server (tests/fixtures/toolcall/README.md says how): one where
the server parsed the model's call into `tool_calls`, and one where the model answered in
prose instead. The replay server
speaks the real protocol (paths, bearer key, 401) and the real `deploy check` code runs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from toolkit.runs.check import check_server, judge_tool_response
from toolkit.runs.ready import Probe

FIXTURES = Path(__file__).parent / "fixtures" / "toolcall"
KEY = "sk-deploy-replay"


def _load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class Replay:
    """GET /v1/models, GET /props, POST /v1/chat/completions answered from recordings."""

    def __init__(self, tool_response: str) -> None:
        self.tool_response = tool_response
        self.requests: list[dict[str, Any]] = []
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {KEY}":
                    return True
                self._send(401, {"error": {"code": 401, "message": "Invalid API Key"}})
                return False

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                if self.path == "/v1/models":
                    self._send(200, _load("models.json"))
                elif self.path == "/props":
                    self._send(200, _load("props.json"))
                else:
                    self._send(404, {"error": {"code": 404, "message": "File Not Found"}})

            def do_POST(self) -> None:
                if not self._authorized():
                    return
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                replay.requests.append(body)
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"code": 404, "message": "File Not Found"}})
                elif body.get("tools"):
                    self._send(200, _load(replay.tool_response))
                else:
                    self._send(200, _load("chat.json"))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Replay:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorded_ctx() -> int:
    """The per-slot context the recorded server ran with (from its own /props)."""
    return int(_load("props.json")["default_generation_settings"]["n_ctx"])


@pytest.fixture
def served_model() -> str:
    return str(_load("models.json")["data"][0]["id"])


@pytest.fixture
def parsed() -> Iterator[Replay]:
    with Replay("tool_call.json") as r:
        yield r


def test_recorded_tool_call_passes(parsed: Replay, recorded_ctx: int, served_model: str) -> None:
    items = check_server(
        Probe(parsed.url, served_model, KEY), expected_ctx=recorded_ctx, tool_calling=True
    )
    assert [(i.name, i.verdict) for i in items] == [
        ("context", "pass"),
        ("chat", "pass"),
        ("tool call", "pass"),
    ]
    assert "get_weather(" in items[2].detail
    tool_request = parsed.requests[-1]
    assert tool_request["tools"][0]["function"]["name"] == "get_weather"
    assert tool_request["model"] == served_model


def test_context_mismatch_fails(parsed: Replay, recorded_ctx: int, served_model: str) -> None:
    (ctx, *_) = check_server(
        Probe(parsed.url, served_model, KEY), expected_ctx=recorded_ctx * 2, tool_calling=False
    )
    assert ctx.verdict == "fail"
    assert f"served {recorded_ctx:,}" in ctx.detail and f"plan {recorded_ctx * 2:,}" in ctx.detail


def test_answer_without_tool_call_fails(recorded_ctx: int, served_model: str) -> None:
    with Replay("no_tool_call.json") as r:
        items = check_server(
            Probe(r.url, served_model, KEY), expected_ctx=recorded_ctx, tool_calling=True
        )
    tool = items[2]
    assert tool.verdict == "fail"
    assert tool.detail.startswith("no tool call; answered")


def test_tool_call_left_as_text_is_named() -> None:
    """A Hermes-style model behind a server without the tool parser: the call the server
    parsed in the recording, put back as the raw text the model wrote."""
    body = _load("tool_call.json")
    message = body["choices"][0]["message"]
    call = message.pop("tool_calls")[0]["function"]
    message["content"] = (
        f'<tool_call>\n{{"name": "{call["name"]}", "arguments": {call["arguments"]}}}\n</tool_call>'
    )
    item = judge_tool_response(body)
    assert item.verdict == "fail" and "as text" in item.detail


def test_recipe_without_tool_calling_is_not_judged(parsed: Replay, served_model: str) -> None:
    items = check_server(
        Probe(parsed.url, served_model, KEY), expected_ctx=None, tool_calling=False
    )
    assert items[0].verdict == "unknown" and items[2].verdict == "unknown"
    assert all("tools" not in r for r in parsed.requests)


def test_wrong_key_is_an_http_error(parsed: Replay, served_model: str) -> None:
    import httpx

    with pytest.raises(httpx.HTTPStatusError, match="401"):
        check_server(Probe(parsed.url, served_model, "wrong"), expected_ctx=1, tool_calling=False)


def test_judge_rejects_bad_arguments() -> None:
    body = _load("tool_call.json")
    call = body["choices"][0]["message"]["tool_calls"][0]
    call["function"]["arguments"] = "{not json"
    assert judge_tool_response(body).verdict == "fail"
    call["function"]["arguments"] = "{}"
    assert "lack 'city'" in judge_tool_response(body).detail
    call["function"]["name"] = "rm_rf"
    assert "unknown function" in judge_tool_response(body).detail
