#!/usr/bin/env python3
"""Cold wall time of `deploy plan qwen3-coder` against llmfit's `llmfit info` (same job:
one model, ranked fit on a machine), median of --runs fresh processes each.

Usage: .venv/bin/python scripts/bench/plan_startup.py [--runs 10] [--keep-env]

Pairs, each timed as a new process per run (nothing stays in memory between runs):
  deploy plan qwen3-coder --hw 1xrtx4090,ram=64G   vs  llmfit --profile nvidia-rtx-4090 info M
  deploy plan qwen3-coder   (detected hardware)     vs  llmfit info M
where M is Qwen/Qwen3-Coder-30B-A3B-Instruct (`qwen3-coder` matches several entries in
llmfit's database; `info` wants one) and llmfit's bundled nvidia-rtx-4090 profile is the
same box as the spec string (one RTX 4090, 64 GB RAM). Also timed: `python -c pass` (the
floor), `deploy --help`, and `deploy plan` with an empty catalog cache (the first run
after a recipe changed).

"Cold" means a fresh process, not a cold disk: every command runs once first, untimed,
so the OS page cache, Python's bytecode cache and deploy's catalog cache are what an
installed deploy has after its first run. PYTHONDONTWRITEBYTECODE is dropped from the
children's environment for that reason (a pip-installed package ships its .pyc files;
without them every run recompiles deploy's sources, ~40 ms here); --keep-env keeps it.
Runs are interleaved (a, b, c, a, b, c ...) so a busy machine slows every row alike, and
the load average is printed and recorded.

llmfit is on PyPI (a Rust binary in a wheel): `pip install -e '.[bench]'`. Without it the
llmfit rows say so and are recorded as null.

Prints a table and writes JSON to scripts/bench/results/plan_startup-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import cpu_model

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
MODEL = "qwen3-coder"
LLMFIT_MODEL = "Qwen/Qwen3-Coder-30B-A3B-Instruct"
HW = "1xrtx4090,ram=64G"
LLMFIT_PROFILE = "nvidia-rtx-4090"


def find_tool(name: str) -> str | None:
    """The tool beside this interpreter (the project's venv), else on PATH."""
    local = BIN / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def tool_version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[-1] if text else None


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    return wall, out.returncode, out.stderr.decode(errors="replace")[-400:]


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="timed runs per command (default 10)")
    ap.add_argument(
        "--keep-env",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE (time deploy recompiling its sources every run)",
    )
    args = ap.parse_args()

    deploy = find_tool("deploy")
    if deploy is None:
        print("deploy is not installed: pip install -e '.[test]'", file=sys.stderr)
        return 2
    llmfit = find_tool("llmfit")
    if llmfit is None:
        print(
            "llmfit is MISSING: its rows are skipped. Install it with: "
            ".venv/bin/pip install -e '.[bench]'",
            file=sys.stderr,
        )

    env = dict(os.environ)
    if not args.keep_env:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    home = Path(tempfile.mkdtemp(prefix="plan-startup-"))
    # A fresh deploy state (no calibration records, no user recipes); the catalog cache
    # lives in it too and is written by the untimed first run.
    env["DEPLOY_HOME"] = str(home)
    env.pop("DEPLOY_RECIPES_PATH", None)
    env.pop("DEPLOY_CACHE_DIR", None)
    env.pop("DEPLOY_HW", None)

    # (key, label, argv, needs a fresh catalog cache dir each run)
    cases: list[tuple[str, str, list[str] | None, bool]] = [
        ("python", "python -c pass", [sys.executable, "-c", "pass"], False),
        ("deploy_help", "deploy --help", [deploy, "--help"], False),
        (
            "deploy_plan_hw",
            f"deploy plan {MODEL} --hw {HW}",
            [deploy, "plan", MODEL, "--hw", HW],
            False,
        ),
        (
            "llmfit_info_profile",
            f"llmfit --profile {LLMFIT_PROFILE} info {LLMFIT_MODEL}",
            [llmfit, "--profile", LLMFIT_PROFILE, "info", LLMFIT_MODEL] if llmfit else None,
            False,
        ),
        ("deploy_plan_detected", f"deploy plan {MODEL}", [deploy, "plan", MODEL], False),
        (
            "llmfit_info_detected",
            f"llmfit info {LLMFIT_MODEL}",
            [llmfit, "info", LLMFIT_MODEL] if llmfit else None,
            False,
        ),
        (
            "deploy_plan_hw_nocache",
            f"deploy plan {MODEL} --hw {HW}  (empty catalog cache)",
            [deploy, "plan", MODEL, "--hw", HW],
            True,
        ),
    ]

    load_before = os.getloadavg()
    times: dict[str, list[float]] = {key: [] for key, _, cmd, _ in cases if cmd}
    codes: dict[str, int] = {}
    errors: dict[str, str] = {}
    for key, _, cmd, _ in cases:  # warm-up: page cache, .pyc files, catalog cache
        if cmd:
            _, codes[key], errors[key] = run_once(cmd, env)
    time.sleep(2.1)  # recipe files touched <2 s ago are not cached (racy timestamps)
    for key, _, cmd, _ in cases:
        if cmd and key == "deploy_plan_hw":
            run_once(cmd, env)
    for i in range(args.runs):
        for key, _, cmd, fresh_cache in cases:
            if not cmd:
                continue
            run_env = env
            if fresh_cache:
                run_env = dict(env, DEPLOY_CACHE_DIR=str(home / f"cache-{i}"))
            wall, code, err = run_once(cmd, run_env)
            times[key].append(wall)
            if code != 0:
                codes[key], errors[key] = code, err
    load_after = os.getloadavg()
    shutil.rmtree(home, ignore_errors=True)

    def med(key: str) -> float | None:
        xs = times.get(key)
        return statistics.median(xs) if xs else None

    rows: list[dict[str, Any]] = []
    for key, label, cmd, _ in cases:
        xs = times.get(key, [])
        rows.append(
            {
                "key": key,
                "command": label,
                "median_s": med(key),
                "min_s": min(xs) if xs else None,
                "max_s": max(xs) if xs else None,
                "runs_s": [round(x, 4) for x in xs],
                "exit_code": codes.get(key) if cmd else None,
                "missing": cmd is None,
            }
        )
    pairs = [
        (
            "--hw 1xrtx4090,ram=64G / --profile nvidia-rtx-4090",
            "deploy_plan_hw",
            "llmfit_info_profile",
        ),
        ("detected hardware", "deploy_plan_detected", "llmfit_info_detected"),
    ]
    side_by_side: list[dict[str, Any]] = []
    for label, d, lf in pairs:
        dm, lm = med(d), med(lf)
        side_by_side.append(
            {
                "case": label,
                "deploy_median_s": dm,
                "llmfit_median_s": lm,
                "ratio_deploy_over_llmfit": (dm / lm) if dm and lm else None,
                "target_met": (dm <= lm) if dm and lm else None,
            }
        )

    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": args.runs,
        "host": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
        },
        "bytecode_cache": not (args.keep_env and "PYTHONDONTWRITEBYTECODE" in os.environ),
        "deploy": tool_version([deploy, "--version"]),
        "llmfit": tool_version([llmfit, "--version"]) if llmfit else None,
        "commands": rows,
        "side_by_side": side_by_side,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"plan_startup-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")

    def ms(x: float | None) -> str:
        return "     -" if x is None else f"{x * 1000:6.0f}"

    print(
        f"{cpu_model()}, {os.cpu_count()} cores; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after; median of {args.runs} fresh processes (ms)"
    )
    print(f"\n  {'command':<72} {'median':>6} {'min':>6} {'max':>6}")
    for r in rows:
        if r["missing"]:
            print(f"  {r['command']:<72}  llmfit MISSING (pip install -e '.[bench]')")
            continue
        flag = "" if r["exit_code"] == 0 else f"  exit {r['exit_code']}!"
        print(f"  {r['command']:<72} {ms(r['median_s'])} {ms(r['min_s'])} {ms(r['max_s'])}{flag}")
    print(f"\n  {'side by side':<52} {'deploy':>7} {'llmfit':>7} {'ratio':>6}")
    for s in side_by_side:
        ratio = s["ratio_deploy_over_llmfit"]
        print(
            f"  {s['case']:<52} {ms(s['deploy_median_s']):>7} {ms(s['llmfit_median_s']):>7} "
            f"{'-' if ratio is None else f'{ratio:.2f}':>6}"
        )
    for key, err in errors.items():
        if codes.get(key):
            print(f"\n{key} exited {codes[key]}: {err.strip()}", file=sys.stderr)
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
