#!/usr/bin/env python3
"""sha256 throughput of deploy's verifier against coreutils `sha256sum` on a 1 GB file.

Usage: .venv/bin/python scripts/bench/sha256_bench.py [--size-mb 1024] [--runs 3] [--file F]

Writes a random file (unless --file is given), reads it once so both tools hash from the
page cache (disk speed is not what we compare), then times each tool `--runs` times,
alternating them. Prints a table and writes JSON to scripts/bench/results/. The target
is ratio >= 0.9 (deploy's best MB/s over sha256sum's best MB/s).
"""

from __future__ import annotations

import argparse
import datetime as dt
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import cpu_model  # noqa: E402

from toolkit.store.hashing import BUFFER, sha256_file  # noqa: E402


def make_file(path: Path, size: int) -> None:
    chunk = os.urandom(16 << 20)
    with path.open("wb") as f:
        left = size
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n


def time_sha256sum(path: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, out.stdout.split()[0]


def time_deploy(path: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    digest = sha256_file(path)
    return time.perf_counter() - t0, digest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="file size in MiB (default 1024)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--file", type=Path, help="hash this file instead of a random one")
    ap.add_argument("--out", type=Path, default=ROOT / "scripts" / "bench" / "results")
    args = ap.parse_args()
    if shutil.which("sha256sum") is None:
        print("sha256sum (coreutils) is not on PATH", file=sys.stderr)
        return 2
    tmpdir = None
    path = args.file
    if path is None:
        tmpdir = tempfile.mkdtemp(prefix="sha256-bench-")
        path = Path(tmpdir) / "random.bin"
        make_file(path, args.size_mb << 20)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:  # warm the page cache
            while f.read(16 << 20):
                pass
        times: dict[str, list[float]] = {"sha256sum": [], "deploy": []}
        digests: set[str] = set()
        for _ in range(args.runs):
            for name, fn in (("sha256sum", time_sha256sum), ("deploy", time_deploy)):
                seconds, digest = fn(path)
                times[name].append(seconds)
                digests.add(digest)
        if len(digests) != 1:
            print(f"digests differ: {digests}", file=sys.stderr)
            return 1
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def mbps(s: float) -> float:
        return size / s / 1e6

    rows = {
        name: {
            "best_s": round(min(ts), 4),
            "median_s": round(statistics.median(ts), 4),
            "best_MBps": round(mbps(min(ts)), 1),
            "median_MBps": round(mbps(statistics.median(ts)), 1),
            "runs_s": [round(t, 4) for t in ts],
        }
        for name, ts in times.items()
    }
    ratio = rows["deploy"]["best_MBps"] / rows["sha256sum"]["best_MBps"]
    ratio_median = rows["deploy"]["median_MBps"] / rows["sha256sum"]["median_MBps"]
    coreutils = subprocess.run(["sha256sum", "--version"], capture_output=True, text=True)
    import ssl

    result = {
        "benchmark": "sha256 throughput, file in page cache",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "bytes": size,
        "runs": args.runs,
        "buffer_bytes": BUFFER,
        "tools": rows,
        "ratio_best": round(ratio, 3),
        "ratio_median": round(ratio_median, 3),
        "target": 0.9,
        "meets_target": ratio >= 0.9,
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "openssl": ssl.OPENSSL_VERSION,
            "sha256sum": coreutils.stdout.splitlines()[0] if coreutils.stdout else None,
        },
        "command": "python scripts/bench/sha256_bench.py " + " ".join(sys.argv[1:]),
    }
    print(f"sha256 of {size / 1e9:.2f} GB from the page cache, {args.runs} runs each")
    print(f"{'tool':<10} {'best MB/s':>10} {'median MB/s':>12} {'best s':>8}")
    for name, r in rows.items():
        print(f"{name:<10} {r['best_MBps']:>10} {r['median_MBps']:>12} {r['best_s']:>8}")
    print(f"ratio deploy/sha256sum: {ratio:.3f} best, {ratio_median:.3f} median (target >= 0.9)")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out / f"sha256-{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
