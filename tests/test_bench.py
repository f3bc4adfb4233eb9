"""deploy bench against a loopback server speaking the real OpenAI streaming protocol.

The server streams tokens at a known pace (first token after TTFT_S, then one every
TOKEN_S), so the client's measurements can be checked against the truth; it also refuses
`ignore_eos` or fails requests on demand, to test those paths. The real llama-server is
benchmarked in tests/test_bench_llamacpp.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import run
from toolkit import bench
from toolkit.api import bench as api
from toolkit.errors import EngineError, UsageError

TTFT_S = 0.05
TOKEN_S = 0.01
TEMPLATE_TOKENS = 7  # fixed "chat template" overhead the fake server adds to every prompt


class FakeOpenAI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.key = "sk-test"
        self.refuse_ignore_eos = False
        self.fail_every = 0  # every Nth chat request answers 500
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, code: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        if self.headers.get("Authorization") != f"Bearer {self.server.key}":
            self._json(401, {"error": {"message": "Invalid API Key"}})
            return
        with self.server.lock:
            self.server.requests += 1
            n = self.server.requests
            self.server.bodies.append(body)
        if self.server.refuse_ignore_eos and "ignore_eos" in body:
            self._json(400, {"error": {"message": "Unrecognized request argument: ignore_eos"}})
            return
        if self.server.fail_every and n % self.server.fail_every == 0:
            self._json(500, {"error": {"message": "boom"}})
            return
        prompt = body["messages"][0]["content"]
        prompt_tokens = len(prompt.split()) + TEMPLATE_TOKENS
        max_tokens = int(body["max_tokens"])
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        time.sleep(TTFT_S)
        for i in range(max_tokens):
            if i:
                time.sleep(TOKEN_S)
            self._chunk({"choices": [{"index": 0, "delta": {"content": f" t{i}"}}]})
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens}
        self._chunk({"choices": [], "usage": usage})
        self._send(b"data: [DONE]\n\n")
        self._send(b"")

    def _chunk(self, doc: dict[str, Any]) -> None:
        self._send(f"data: {json.dumps(doc)}\n\n".encode())

    def _send(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    srv = FakeOpenAI()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _target(srv: FakeOpenAI) -> bench.Target:
    return bench.Target(srv.base_url, "fake", api_key=srv.key, label="fake")


def test_percentile_matches_linear_interpolation() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert bench.percentile(values, 50) == pytest.approx(25.0)
    assert bench.percentile(values, 90) == pytest.approx(37.0)
    assert bench.percentile([5.0], 99) == 5.0
    with pytest.raises(ValueError):
        bench.percentile([], 50)


def test_prompts_are_unique_and_sized() -> None:
    a, b = bench.make_prompt(100, 1), bench.make_prompt(100, 2)
    assert a != b and a.split()[0] != b.split()[0]
    assert len(a.split()) == 100


def test_measures_what_the_server_does(server: FakeOpenAI) -> None:
    settings, levels = bench.run_bench(
        _target(server),
        concurrency=[1, 4],
        prompt_tokens=64,
        output_tokens=20,
        duration_s=0.6,
        timeout_s=10,
    )
    # The prompt was sized using the server's own usage figures (template overhead removed).
    assert settings.measured_prompt_tokens == 64
    assert settings.ignore_eos is True
    assert all(b.get("ignore_eos") is True for b in server.bodies)
    one, four = levels
    assert one.errors == 0 and four.errors == 0
    assert one.requests >= 1 and four.requests >= 4
    assert one.output_tokens == 20 * one.requests
    # TTFT and decode rate follow the server's pace: never faster, at most a little slower
    # (loose bounds: the machine is shared).
    assert one.ttft_s.p50 is not None and TTFT_S <= one.ttft_s.p50 < TTFT_S + 0.5
    assert one.decode_tok_s.p50 is not None
    assert 0.3 / TOKEN_S <= one.decode_tok_s.p50 <= 1.05 / TOKEN_S
    expected_latency = TTFT_S + 19 * TOKEN_S
    assert one.latency_s.p50 is not None and one.latency_s.p50 >= expected_latency
    # Four streams in parallel: about four times the throughput of one.
    assert four.throughput_tok_s > 2.0 * one.throughput_tok_s
    assert four.prompt_tokens == 64 * four.requests


def test_server_that_refuses_ignore_eos(server: FakeOpenAI) -> None:
    server.refuse_ignore_eos = True
    settings, levels = bench.run_bench(
        _target(server),
        concurrency=[1],
        prompt_tokens=16,
        output_tokens=5,
        duration_s=0.2,
        timeout_s=10,
    )
    assert settings.ignore_eos is False
    assert any("ignore_eos" in n for n in settings.notes)
    assert levels[0].errors == 0


def test_errors_are_counted_with_samples(server: FakeOpenAI) -> None:
    server.fail_every = 3
    _, levels = bench.run_bench(
        _target(server),
        concurrency=[2],
        prompt_tokens=8,
        output_tokens=4,
        duration_s=0.5,
        timeout_s=10,
    )
    lv = levels[0]
    assert lv.errors >= 1
    assert lv.requests > lv.errors
    assert any("HTTP 500" in s for s in lv.error_samples)


def test_explicit_timeout_fails_slow_requests(server: FakeOpenAI) -> None:
    target = _target(server)

    async def go() -> bench.RequestResult:
        async with bench._client(1, 10) as client:
            return await bench.one_request(
                client, target, "hello", 50, ignore_eos=True, timeout_s=0.1
            )

    import asyncio

    result = asyncio.run(go())
    assert not result.ok and result.error is not None and "timed out" in result.error


def test_wrong_key_is_an_engine_error(server: FakeOpenAI) -> None:
    target = bench.Target(server.base_url, "fake", api_key="wrong", label="fake")
    with pytest.raises(EngineError, match="401"):
        bench.run_bench(
            target, concurrency=[1], prompt_tokens=8, output_tokens=4, duration_s=0.1, timeout_s=5
        )


def test_bad_arguments() -> None:
    t = bench.Target("http://127.0.0.1:9/v1", "m")
    with pytest.raises(UsageError):
        bench.run_bench(
            t, concurrency=[0], prompt_tokens=8, output_tokens=4, duration_s=1, timeout_s=1
        )
    with pytest.raises(UsageError):
        api.parse_concurrency("1,x")
    assert api.parse_concurrency("1, 4,16") == (1, 4, 16)


def test_cli_bench_url_json_and_saved(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    monkeypatch.setenv("FAKE_KEY", server.key)
    res = run(
        "bench",
        "--url",
        server.base_url,
        "--model",
        "fake",
        "--api-key-env",
        "FAKE_KEY",
        "--concurrency",
        "1,2",
        "--prompt-tokens",
        "32",
        "--output-tokens",
        "8",
        "--duration",
        "0.3",
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [lv["concurrency"] for lv in doc["levels"]] == [1, 2]
    assert doc["settings"]["timeout_s"] == 300.0
    saved = Path(doc["path"])
    assert saved.parent == isolated_env / "bench" and saved.exists()
    again = api.result_from_dict(json.loads(saved.read_text()))
    assert again.levels[1].concurrency == 2


def test_cli_bench_table(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KEY", server.key)
    res = run(
        "bench",
        "--url",
        server.base_url.removesuffix("/v1"),
        "--model",
        "fake",
        "--api-key-env",
        "FAKE_KEY",
        "--concurrency",
        "1",
        "--output-tokens",
        "4",
        "--prompt-tokens",
        "8",
        "--duration",
        "0.1",
        "--no-save",
    )
    assert res.exit_code == 0, res.stderr
    assert "TTFT ms" in res.stdout and "total" in res.stdout
    row = next(line for line in res.stdout.splitlines() if line.strip().startswith("1 "))
    assert row.split()[2] == "0"  # no errors


def test_cli_bench_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("bench").exit_code == 2
    assert run("bench", "--url", "http://127.0.0.1:9").exit_code == 2
    monkeypatch.delenv("NOPE_KEY", raising=False)
    res = run("bench", "--url", "http://127.0.0.1:9", "--model", "m", "--api-key-env", "NOPE_KEY")
    assert res.exit_code == 2 and "NOPE_KEY" in res.stderr


def test_unknown_run_is_not_found() -> None:
    res = run("bench", "no-such-run", "--duration", "0.1")
    assert res.exit_code == 4, res.stderr


def test_llama_server_timing_lines_from_a_real_log() -> None:
    text = (Path(__file__).parent / "fixtures/logs/llamacpp-cpu-smollm2-timings.log").read_text()
    timings = bench.parse_llamacpp_timings(text)
    assert [(t.prompt_tokens, t.eval_tokens) for t in timings] == [(1, 1), (94, 2), (40, 2)]
    assert timings[1].prompt_ms == 6129.49 and timings[1].eval_ms == 471.50
    summary = bench.engine_timings(timings)
    assert summary is not None and summary.requests == 3
    # eval_ms 0.00 (one token) is left out of the rate, not divided by.
    assert summary.decode_tok_s == pytest.approx((2 / 0.4715 + 2 / 5.89186) / 2)


def test_log_tail_reads_only_new_text(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("old line\n")
    tail = bench.LogTail(log)
    assert tail() == ""
    with log.open("a") as fh:
        fh.write("new line\n")
    assert tail() == "new line\n" and tail() == ""
