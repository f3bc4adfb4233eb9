"""Load against a running OpenAI-compatible server: TTFT, decode tok/s, throughput.

Each concurrency level runs `concurrency` clients for `duration` seconds; every client sends
streaming chat completions back to back (each with a unique prompt, so no prefix cache can
answer it) and asks for exactly `output_tokens` tokens (`ignore_eos`, when the server
accepts it). Per request we time the first token (TTFT), the whole request (latency) and
the decode rate after the first token; per level the aggregate output throughput.

Client timeouts are explicit (`timeout_s` bounds each request end to end; connecting gets
10 s). Nothing here prints; the CLI renders `BenchResult`.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import sse
from toolkit.errors import EngineError, UsageError

if TYPE_CHECKING:
    import httpx

CONNECT_TIMEOUT_S = 10.0
#: Words that most BPE tokenizers encode as one token each with a leading space.
_WORD_TEXT = (
    "the of and to in is for on that with as was by at from it an be this are or have "
    "not but had his they you were which one all their there has been if more when will "
    "would who so no she other its may these about than can them two into time only new "
    "some could first over such like our also after most made many before must through"
)
_WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True)
class Target:
    """Where to send load: an OpenAI-compatible base URL (ending in /v1) and a model name."""

    base_url: str
    model: str
    api_key: str | None = None
    #: The run name, or the URL when benchmarking any server.
    label: str = ""


@dataclass(frozen=True)
class RequestResult:
    ok: bool
    started: float
    ttft_s: float | None = None
    latency_s: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int = 0
    #: Output tokens after the first, over the time from first to last token.
    decode_tok_s: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p90: float | None
    p99: float | None
    mean: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        if not values:
            return cls(None, None, None, None)
        return cls(
            percentile(values, 50),
            percentile(values, 90),
            percentile(values, 99),
            sum(values) / len(values),
        )


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass(frozen=True)
class EngineTimings:
    """What the engine's own log says about the requests of one level (llama-server)."""

    requests: int
    prompt_tok_s: float | None
    decode_tok_s: float | None
    decode_tokens: int


@dataclass(frozen=True)
class LevelResult:
    concurrency: int
    requests: int
    errors: int
    wall_s: float
    output_tokens: int
    prompt_tokens: int
    #: All output tokens of the level over its wall time.
    throughput_tok_s: float
    ttft_s: Percentiles
    latency_s: Percentiles
    decode_tok_s: Percentiles
    error_samples: tuple[str, ...] = ()
    engine: EngineTimings | None = None
    #: The plan's prediction for this level (tok/s), when the plan makes one.
    predicted_tok_s: float | None = None
    predicted_kind: str | None = None
    #: The measured rate (per request p50, or the level's throughput for an aggregate
    #: prediction) divided by `predicted_tok_s`.
    ratio_to_plan: float | None = None


@dataclass(frozen=True)
class BenchSettings:
    concurrency: tuple[int, ...]
    prompt_tokens: int
    output_tokens: int
    duration_s: float
    timeout_s: float
    ignore_eos: bool = True
    #: Prompt length the server reported for the calibrated prompt.
    measured_prompt_tokens: int | None = None
    words_per_prompt: int | None = None
    notes: tuple[str, ...] = ()


@dataclass
class BenchResult:
    target: dict[str, Any]
    settings: BenchSettings
    levels: list[LevelResult]
    created: str
    engine: str | None = None
    engine_version: str | None = None
    model_key: str | None = None
    hardware_key: str | None = None
    plan: dict[str, Any] | None = None
    hardware: dict[str, Any] | None = None
    path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Measured decode ÷ the plan's estimate: concurrency 1 per request when benchmarked,
    #: else the first level the plan predicts.
    ratio_to_plan: float | None = None
    #: How busy the machine was (toolkit.calibration.busy.MachineLoad.to_dict()).
    machine_load: dict[str, Any] | None = None
    #: Why these figures may not describe the server (busy machine, far below the plan).
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------ prompts


def make_prompt(words: int, seed: int) -> str:
    """A prompt of about `words` tokens whose first token differs between seeds."""
    rng = random.Random(seed)
    body = " ".join(rng.choice(_WORDS) for _ in range(max(0, words - 1)))
    return f"{seed} {body}"


def _payload(target: Target, prompt: str, max_tokens: int, ignore_eos: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": target.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True
    return body


def _headers(target: Target) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    return headers


# ----------------------------------------------------------------------------- requests


async def one_request(
    client: httpx.AsyncClient,
    target: Target,
    prompt: str,
    max_tokens: int,
    *,
    ignore_eos: bool,
    timeout_s: float,
) -> RequestResult:
    """One streaming chat completion, timed. Never raises for server or network faults."""
    started = time.perf_counter()
    try:
        return await asyncio.wait_for(
            _stream(client, target, prompt, max_tokens, ignore_eos, started), timeout=timeout_s
        )
    except asyncio.TimeoutError:
        return RequestResult(False, started, error=f"timed out after {timeout_s:g} s")
    except Exception as exc:  # httpx errors, broken streams, bad JSON: a failed request
        return RequestResult(False, started, error=f"{type(exc).__name__}: {exc}"[:300])


async def _stream(
    client: httpx.AsyncClient,
    target: Target,
    prompt: str,
    max_tokens: int,
    ignore_eos: bool,
    started: float,
) -> RequestResult:
    url = target.base_url.rstrip("/") + "/chat/completions"
    first: float | None = None
    last: float | None = None
    chunks = 0
    usage: dict[str, Any] | None = None
    body = _payload(target, prompt, max_tokens, ignore_eos)
    async with client.stream("POST", url, json=body, headers=_headers(target)) as resp:
        if resp.status_code != 200:
            text = (await resp.aread()).decode(errors="replace")
            return RequestResult(
                False, started, error=f"HTTP {resp.status_code}: {text.strip()[:200]}"
            )
        async for line in resp.aiter_lines():
            event = sse.event(line)
            if event is None:
                continue
            if event is sse.DONE:
                break
            if event.get("error"):
                return RequestResult(False, started, error=f"stream error: {event['error']}")
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("reasoning_content"):
                    now = time.perf_counter()
                    first = now if first is None else first
                    last = now
                    chunks += 1
    end = time.perf_counter()
    if first is None or last is None:
        return RequestResult(False, started, error="the stream ended without a token")
    out = int(usage["completion_tokens"]) if usage and usage.get("completion_tokens") else chunks
    prompt_tokens = int(usage["prompt_tokens"]) if usage and usage.get("prompt_tokens") else None
    decode = (out - 1) / (last - first) if out > 1 and last > first else None
    return RequestResult(
        True,
        started,
        ttft_s=first - started,
        latency_s=end - started,
        prompt_tokens=prompt_tokens,
        output_tokens=out,
        decode_tok_s=decode,
    )


# ------------------------------------------------------------------------------ levels


def summarize(concurrency: int, results: Sequence[RequestResult], wall_s: float) -> LevelResult:
    ok = [r for r in results if r.ok]
    errors = [r.error or "error" for r in results if not r.ok]
    samples = tuple(dict.fromkeys(errors))[:5]
    out_tokens = sum(r.output_tokens for r in ok)
    return LevelResult(
        concurrency=concurrency,
        requests=len(results),
        errors=len(errors),
        wall_s=wall_s,
        output_tokens=out_tokens,
        prompt_tokens=sum(r.prompt_tokens or 0 for r in ok),
        throughput_tok_s=out_tokens / wall_s if wall_s > 0 else 0.0,
        ttft_s=Percentiles.of([r.ttft_s for r in ok if r.ttft_s is not None]),
        latency_s=Percentiles.of([r.latency_s for r in ok if r.latency_s is not None]),
        decode_tok_s=Percentiles.of([r.decode_tok_s for r in ok if r.decode_tok_s is not None]),
        error_samples=samples,
    )


async def run_level(
    client: httpx.AsyncClient,
    target: Target,
    *,
    concurrency: int,
    words: int,
    output_tokens: int,
    duration_s: float,
    timeout_s: float,
    ignore_eos: bool,
    seed_base: int,
) -> tuple[list[RequestResult], float]:
    """`concurrency` clients, each sending requests back to back until `duration_s` has
    passed (each sends at least one). Requests in flight at the deadline finish and count."""
    start = time.perf_counter()
    deadline = start + duration_s
    results: list[RequestResult] = []
    counter = iter(range(seed_base, seed_base + 10**9))

    async def client_loop() -> None:
        while True:
            seed = next(counter)
            results.append(
                await one_request(
                    client,
                    target,
                    make_prompt(words, seed),
                    output_tokens,
                    ignore_eos=ignore_eos,
                    timeout_s=timeout_s,
                )
            )
            if time.perf_counter() >= deadline:
                return

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return results, time.perf_counter() - start


def _client(concurrency: int, timeout_s: float) -> httpx.AsyncClient:
    import httpx

    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(timeout_s, connect=CONNECT_TIMEOUT_S)
    return httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)


async def _calibrate_prompt(
    target: Target, prompt_tokens: int, ignore_eos: bool, timeout_s: float
) -> tuple[int, int | None, bool, list[str]]:
    """Warm the server up and size the prompt: returns (words, measured tokens, ignore_eos,
    notes). A server that refuses `ignore_eos` is asked again without it."""
    notes: list[str] = []
    words = max(1, prompt_tokens)
    async with _client(1, timeout_s) as client:
        probe = await one_request(
            client, target, make_prompt(words, 1), 2, ignore_eos=ignore_eos, timeout_s=timeout_s
        )
        if not probe.ok and ignore_eos and (probe.error or "").startswith("HTTP 4"):
            ignore_eos = False
            notes.append("the server refused ignore_eos; output lengths may be shorter")
            probe = await one_request(
                client, target, make_prompt(words, 1), 2, ignore_eos=False, timeout_s=timeout_s
            )
        if not probe.ok:
            raise EngineError(
                f"{target.label or target.base_url} did not answer a test request: {probe.error}",
                hint="deploy ps   (is the server ready?)",
            )
        measured = probe.prompt_tokens
        if measured and measured != prompt_tokens:
            # Fixed overhead (chat template) + about one token per word: one correction.
            overhead = max(0, measured - words)
            words = max(1, prompt_tokens - overhead)
            check = await one_request(
                client, target, make_prompt(words, 2), 2, ignore_eos=ignore_eos, timeout_s=timeout_s
            )
            if check.ok and check.prompt_tokens:
                measured = check.prompt_tokens
        if not measured:
            notes.append("the server reports no usage; prompt length is approximate")
    return words, measured, ignore_eos, notes


LogReader = Callable[[], str]


def run_bench(
    target: Target,
    *,
    concurrency: Sequence[int],
    prompt_tokens: int,
    output_tokens: int,
    duration_s: float,
    timeout_s: float,
    ignore_eos: bool = True,
    log_reader: LogReader | None = None,
) -> tuple[BenchSettings, list[LevelResult]]:
    """Run every concurrency level in turn. `log_reader`, when given, returns the server
    log's new text since the last call; llama-server's per-request timings found there are
    summarised beside the client's own figures."""
    if not concurrency or any(c < 1 for c in concurrency):
        raise UsageError("concurrency levels must be positive integers, e.g. 1,4,16")
    if prompt_tokens < 1 or output_tokens < 2:
        raise UsageError("--prompt-tokens must be >= 1 and --output-tokens >= 2")
    if duration_s <= 0 or timeout_s <= 0:
        raise UsageError("--duration and --timeout must be positive")

    async def main() -> tuple[BenchSettings, list[LevelResult]]:
        words, measured, eos, notes = await _calibrate_prompt(
            target, prompt_tokens, ignore_eos, timeout_s
        )
        settings = BenchSettings(
            concurrency=tuple(concurrency),
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            duration_s=duration_s,
            timeout_s=timeout_s,
            ignore_eos=eos,
            measured_prompt_tokens=measured,
            words_per_prompt=words,
            notes=tuple(notes),
        )
        levels: list[LevelResult] = []
        for i, level in enumerate(concurrency):
            if log_reader is not None:
                log_reader()  # skip what came before this level
            async with _client(level, timeout_s) as client:
                results, wall = await run_level(
                    client,
                    target,
                    concurrency=level,
                    words=words,
                    output_tokens=output_tokens,
                    duration_s=duration_s,
                    timeout_s=timeout_s,
                    ignore_eos=eos,
                    seed_base=1000 + i * 10**6,
                )
            summary = summarize(level, results, wall)
            if log_reader is not None:
                await asyncio.sleep(0.3)  # the server logs a request's timings as it ends
                timings = engine_timings(parse_llamacpp_timings(log_reader()))
                if timings is not None:
                    summary = _with(summary, engine=timings)
            levels.append(summary)
        return settings, levels

    return asyncio.run(main())


def _with(level: LevelResult, **changes: Any) -> LevelResult:
    from dataclasses import replace

    return replace(level, **changes)


# ---------------------------------------------------------------- the engine's own timing

_PROMPT_EVAL = re.compile(
    r"prompt eval time\s*=\s*([\d.]+)\s*ms\s*/\s*(\d+)\s*tokens.*?([\d.]+)\s*tokens per second"
)
_EVAL = re.compile(
    r"(?:^|\|)\s*eval time\s*=\s*([\d.]+)\s*ms\s*/\s*(\d+)\s*tokens.*?([\d.]+)\s*tokens per second"
)


@dataclass(frozen=True)
class RequestTiming:
    prompt_ms: float
    prompt_tokens: int
    eval_ms: float
    eval_tokens: int


def parse_llamacpp_timings(text: str) -> list[RequestTiming]:
    """llama-server's per-request `print_timing` lines: prompt eval then eval."""
    out: list[RequestTiming] = []
    pending: tuple[float, int] | None = None
    for line in text.splitlines():
        if m := _PROMPT_EVAL.search(line):
            pending = (float(m.group(1)), int(m.group(2)))
        elif (m := _EVAL.search(line)) and pending is not None:
            out.append(RequestTiming(pending[0], pending[1], float(m.group(1)), int(m.group(2))))
            pending = None
    return out


def engine_timings(timings: Sequence[RequestTiming]) -> EngineTimings | None:
    """Mean per-request rates as the engine measured them (tokens over each request's own
    time, averaged over requests, as the client side does)."""
    if not timings:
        return None
    prompt = [t.prompt_tokens / t.prompt_ms * 1000 for t in timings if t.prompt_ms > 0]
    decode = [t.eval_tokens / t.eval_ms * 1000 for t in timings if t.eval_ms > 0]
    return EngineTimings(
        requests=len(timings),
        prompt_tok_s=sum(prompt) / len(prompt) if prompt else None,
        decode_tok_s=sum(decode) / len(decode) if decode else None,
        decode_tokens=sum(t.eval_tokens for t in timings),
    )


class LogTail:
    """Reads what a log file gained since the previous call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def __call__(self) -> str:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return ""
        self.offset += len(data)
        return data.decode(errors="replace")
