#!/usr/bin/env python3
"""Benchmarks against the real native llama-server (SmolLM2-135M), started with `deploy up`.

Two measurements (they report; they never gate CI):

  load       N concurrent streaming clients for S seconds (default 32 for 60 s) against
             a server with 4 slots; every request must succeed (explicit client timeouts).
  agreement  `deploy bench` at concurrency 1 and 4, its client-side decode tok/s set
             beside llama-server's own per-request timing log ("eval time = … tokens per
             second"); they should agree within 10 %.

Usage (from the repository root, after scripts/setup test):
  .venv/bin/python scripts/bench/load_test.py load [--clients 32] [--duration 60]
  .venv/bin/python scripts/bench/load_test.py agreement [--duration 20]
  add --json-out FILE to keep the figures; --url URL --model M --api-key-env VAR drives
  any running OpenAI-compatible server instead of starting one (load mode only).

The engine comes from .cache/engines (built by the test fixtures or `deploy engines
install llamacpp` with DEPLOY_ENGINES_DIR=.cache/engines) and the model from
.cache/models (the `smollm2_gguf` test fixture). DEPLOY_HOME is a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from toolkit import bench  # noqa: E402

GGUF = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
ENGINES = ROOT / ".cache" / "engines"


def _llama_server() -> Path:
    found = sorted(ENGINES.glob("llamacpp*/bin/llama-server")) + sorted(
        ENGINES.glob("**/llama-server")
    )
    for path in found:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise SystemExit(
        f"no llama-server under {ENGINES}: build it first, e.g.\n"
        "  DEPLOY_ENGINES_DIR=.cache/engines .venv/bin/deploy engines install llamacpp"
    )


@contextmanager
def launched(slots: int, ctx: int, name: str = "bench") -> Iterator[Any]:
    """`deploy up` the SmolLM2 GGUF on the native llama-server; stop it afterwards."""
    if not GGUF.exists():
        raise SystemExit(f"missing {GGUF}: run the tests once (fixture smollm2_gguf)")
    home = Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    os.environ["DEPLOY_HOME"] = str(home)
    os.environ["HF_HOME"] = str(home / "hf")
    os.environ["DEPLOY_ENGINES_DIR"] = str(ENGINES)
    from toolkit.api import runs

    result = runs.up(
        str(GGUF),
        runs.UpOptions(ctx=ctx, concurrency=slots, name=name, llama_server=_llama_server()),
    )
    assert isinstance(result, runs.UpResult)
    try:
        yield result.record
    finally:
        runs.stop(name)


def _key(record: Any) -> str | None:
    return Path(record.key_file).read_text().strip() if record.key_file else None


def _level_doc(level: bench.LevelResult) -> dict[str, Any]:
    return asdict(level)


def run_load(args: argparse.Namespace) -> dict[str, Any]:
    def go(target: bench.Target, server: dict[str, Any]) -> dict[str, Any]:
        async def main() -> tuple[list[bench.RequestResult], float]:
            # Size the prompt with the server's own token count, as `deploy bench` does.
            words, _, _, _ = await bench._calibrate_prompt(
                target, args.prompt_tokens, True, args.timeout
            )
            async with bench._client(args.clients, args.timeout) as client:
                return await bench.run_level(
                    client,
                    target,
                    concurrency=args.clients,
                    words=words,
                    output_tokens=args.output_tokens,
                    duration_s=args.duration,
                    timeout_s=args.timeout,
                    ignore_eos=True,
                    seed_base=1,
                )

        results, wall = asyncio.run(main())
        level = bench.summarize(args.clients, results, wall)
        return {"mode": "load", "server": server, "level": _level_doc(level)}

    if args.url:
        key = os.environ.get(args.api_key_env) if args.api_key_env else None
        target = bench.Target(args.url, args.model, api_key=key, label=args.url)
        return go(target, {"url": args.url})
    with launched(args.slots, args.ctx) as record:
        target = bench.Target(record.base_url, record.served_model_name, _key(record), "bench")
        server = {
            "engine": record.engine,
            "engine_version": record.engine_version,
            "slots": args.slots,
            "ctx_per_slot": args.ctx,
            "argv": list(record.argv),
        }
        return go(target, server)


def run_agreement(args: argparse.Namespace) -> dict[str, Any]:
    with launched(args.slots, args.ctx) as record:
        target = bench.Target(record.base_url, record.served_model_name, _key(record), "bench")
        settings, levels = bench.run_bench(
            target,
            concurrency=[1, args.slots],
            prompt_tokens=args.prompt_tokens,
            output_tokens=args.output_tokens,
            duration_s=args.duration,
            timeout_s=args.timeout,
            log_reader=bench.LogTail(Path(record.log_file)),
        )
        rows = []
        for lv in levels:
            client = lv.decode_tok_s.mean
            engine = lv.engine.decode_tok_s if lv.engine else None
            diff = (client - engine) / engine * 100 if client and engine else None
            rows.append(
                {
                    "concurrency": lv.concurrency,
                    "requests": lv.requests,
                    "errors": lv.errors,
                    "client_decode_tok_s_mean": client,
                    "engine_decode_tok_s_mean": engine,
                    "engine_requests": lv.engine.requests if lv.engine else 0,
                    "difference_pct": diff,
                    "within_10pct": diff is not None and abs(diff) <= 10,
                    "throughput_tok_s": lv.throughput_tok_s,
                    "ttft_p50_s": lv.ttft_s.p50,
                    "engine_prompt_tok_s_mean": lv.engine.prompt_tok_s if lv.engine else None,
                }
            )
        return {
            "mode": "agreement",
            "server": {
                "engine": record.engine,
                "engine_version": record.engine_version,
                "slots": args.slots,
                "ctx_per_slot": args.ctx,
            },
            "settings": asdict(settings),
            "rows": rows,
            "levels": [_level_doc(lv) for lv in levels],
        }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["load", "agreement"])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=None, help="seconds (load 60, agreement 20)")
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--ctx", type=int, default=2048, help="context per slot")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--url")
    p.add_argument("--model", default="default")
    p.add_argument("--api-key-env")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    if args.duration is None:
        args.duration = 60.0 if args.mode == "load" else 20.0
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc = run_load(args) if args.mode == "load" else run_agreement(args)
    doc["started"] = started
    doc["command"] = " ".join([".venv/bin/python", "scripts/bench/load_test.py", *sys.argv[1:]])
    text = json.dumps(doc, indent=2, default=str)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(text)
    if args.mode == "load":
        return 0 if doc["level"]["errors"] == 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
