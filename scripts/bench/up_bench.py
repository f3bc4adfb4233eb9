#!/usr/bin/env python3
"""Benchmark `deploy up` on this machine with the real llama-server and SmolLM2 GGUF.

1. Time to ready: `deploy up` (plan, key, spawn, wait until a 1-token completion answers)
   against the bare engine command (the same argv, started by hand, polled the same way).
2. Decode speed: tok/s with the plan's llama.cpp flags against a small sweep of
   --threads × --batch-size/--ubatch-size, as llama-server itself times it
   (`timings.predicted_per_second` of a 128-token completion; median of 3).

Prints a table and writes JSON to scripts/bench/results/up_bench-<UTC time>.json.

Usage: .venv/bin/python scripts/bench/up_bench.py [--model GGUF] [--repeat 3]
Needs: an installed llama-server (deploy engines install llamacpp; by default the one the
tests build in .cache/engines) and the SmolLM2 GGUF (.cache/models, made by the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODEL = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEPLOY = [sys.executable, "-m", "toolkit"]
PROMPT = "Write a short story about a robot who learns to paint."


def deploy(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEPLOY, *args], env=env, capture_output=True, text=True, check=False, cwd=ROOT
    )


def probe_ready(base: str, model: str, key: str, proc: subprocess.Popen[bytes]) -> float:
    from toolkit.runs.ready import NotReady, Probe, probe_once

    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"engine exited with {proc.returncode}")
        try:
            probe_once(Probe(base, model, key), timeout=60)
            return time.monotonic() - t0
        except NotReady:
            time.sleep(0.05)


def start_bare(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    import signal

    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)


def with_flag(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


def decode_tok_s(base: str, model: str, key: str, repeat: int) -> float:
    import httpx

    speeds = []
    for _ in range(repeat):
        r = httpx.post(
            f"{base}/v1/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": model, "prompt": PROMPT, "max_tokens": 128, "temperature": 0,
                  "ignore_eos": True},
            timeout=300,
        )  # fmt: skip
        r.raise_for_status()
        speeds.append(float(r.json()["timings"]["predicted_per_second"]))
    return statistics.median(speeds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ctx", type=int, default=2048)
    args = ap.parse_args()
    if not args.model.exists():
        print(f"no model at {args.model}: run the tests once (they fetch it)", file=sys.stderr)
        return 4
    load_before = os.getloadavg()
    home = Path(tempfile.mkdtemp(prefix="up-bench-"))
    env = dict(os.environ, DEPLOY_HOME=str(home))
    env.setdefault("DEPLOY_ENGINES_DIR", str(ROOT / ".cache" / "engines"))
    from toolkit.engines.base import find_engine

    os.environ.update(env)
    installed = find_engine("llamacpp")
    up_args = [str(args.model), "--ctx", str(args.ctx), "--name", "bench", "--json"]

    # -- 1. time to ready
    dry = deploy("up", *up_args, "--dry-run", env=env)
    if dry.returncode:
        print(dry.stderr, file=sys.stderr)
        return dry.returncode
    launch = json.loads(dry.stdout)
    plan = launch["plan"]
    key_file = home / "keys" / "bench.key"
    deploy_s, bare_s = [], []
    for _ in range(args.repeat):
        t0 = time.monotonic()
        res = deploy("up", *up_args, env=env)
        deploy_s.append(time.monotonic() - t0)
        if res.returncode:
            print(res.stderr, file=sys.stderr)
            return res.returncode
        doc = json.loads(res.stdout)
        deploy("stop", "bench", env=env)
    key = key_file.read_text().strip()
    model = doc["served_model_name"]
    bare_argv = with_flag(launch["argv"], "--port", str(doc["port"]))
    bare_env = dict(env, **launch["env"])
    base = f"http://127.0.0.1:{doc['port']}"
    for _ in range(args.repeat):
        t0 = time.monotonic()
        proc = start_bare(bare_argv, bare_env, home / "bare.log")
        probe_ready(base, model, key, proc)
        bare_s.append(time.monotonic() - t0)
        stop(proc)

    # -- 2. decode tok/s: the plan's flags vs a sweep
    cores = os.cpu_count() or 1
    sweep: list[dict[str, Any]] = [{"label": "plan", "argv": bare_argv}]
    for threads in sorted({1, max(1, cores // 2), cores}):
        for batch, ubatch in ((512, 128), (2048, 512)):
            argv = with_flag(bare_argv, "--threads", str(threads))
            argv = with_flag(argv, "--batch-size", str(batch))
            argv = with_flag(argv, "--ubatch-size", str(ubatch))
            sweep.append({"label": f"t{threads} b{batch}/{ubatch}", "argv": argv})
    rows = []
    for cfg in sweep:
        proc = start_bare(cfg["argv"], bare_env, home / "sweep.log")
        try:
            probe_ready(base, model, key, proc)
            tok_s = decode_tok_s(base, model, key, args.repeat)
        finally:
            stop(proc)
        argv = cfg["argv"]
        rows.append({
            "config": cfg["label"],
            "threads": argv[argv.index("--threads") + 1] if "--threads" in argv else "default",
            "batch": argv[argv.index("--batch-size") + 1],
            "ubatch": argv[argv.index("--ubatch-size") + 1],
            "decode_tok_s": round(tok_s, 2),
        })  # fmt: skip
    plan_tok_s = rows[0]["decode_tok_s"]
    best = max(rows[1:], key=lambda r: r["decode_tok_s"])
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu_count": cores, "platform": platform.platform(),
                    "loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": os.getloadavg()},
        "engine": {"name": installed.name, "version": installed.version,
                   "path": str(installed.path)},
        "model": str(args.model),
        "ctx": args.ctx,
        "plan": {"variant_id": plan["variant_id"], "llamacpp": plan["llamacpp"]},
        "time_to_ready_s": {"deploy_up": deploy_s, "bare_engine": bare_s},
        "time_to_ready_ratio": statistics.median(deploy_s) / statistics.median(bare_s),
        "decode": rows,
        "decode_ratio_plan_vs_best_sweep": plan_tok_s / best["decode_tok_s"],
        "best_sweep": best["config"],
        "command": " ".join([".venv/bin/python", "scripts/bench/up_bench.py", *sys.argv[1:]]),
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"up_bench-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"engine {installed.name} {installed.version}; model {args.model.name}; ctx {args.ctx}")
    print("\ntime to ready (s)      median   runs")
    for label, xs in (("deploy up", deploy_s), ("bare engine", bare_s)):
        print(f"  {label:<20} {statistics.median(xs):6.2f}   {', '.join(f'{x:.2f}' for x in xs)}")
    print(f"  ratio deploy/bare    {result['time_to_ready_ratio']:6.2f}")
    print(f"\ndecode tok/s (128 tokens, median of {args.repeat})")
    print(f"  {'config':<18} {'threads':>7} {'batch':>6} {'ubatch':>6} {'tok/s':>8}")
    for r in rows:
        print(f"  {r['config']:<18} {r['threads']:>7} {r['batch']:>6} {r['ubatch']:>6} "
              f"{r['decode_tok_s']:>8.1f}")  # fmt: skip
    print(f"  ratio plan/best sweep ({best['config']}): "
          f"{result['decode_ratio_plan_vs_best_sweep']:.2f}")  # fmt: skip
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
