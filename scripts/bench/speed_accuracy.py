#!/usr/bin/env python3
"""How well the fitted speed model predicts published measurements it was not fitted on.

Usage: .venv/bin/python scripts/bench/speed_accuracy.py [--write-params] [--rounds N]

Reads tests/data/speed/*.yaml (every row sourced: URL + verbatim quote), turns each into
the speed model's inputs, and scores leave-one-source-out: for each source, fit the
coefficients on all other sources, predict that source's rows. Prints one row per
measurement and the summary against the goals (decode: median |log2(est/measured)| <= 0.2
and >= 75 % within ±25 %; prefill: >= 60 % within ±25 %), and writes JSON to
scripts/bench/results/. --write-params refits on everything and stores the coefficients
with the leave-one-source-out range in toolkit/planner/speed_params.json (what
`deploy plan` uses).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from toolkit.planner import speedfit  # noqa: E402

DATA = ROOT / "tests" / "data" / "speed"
PARAMS = ROOT / "toolkit" / "planner" / "speed_params.json"
DECODE = ("tg", "tg_total")
PREFILL = ("pp",)


def load(data_dir: Path = DATA) -> tuple[list[speedfit.Measurement], dict[str, str]]:
    """Every usable measurement, and the ids skipped with why."""
    import yaml

    from toolkit.hardware.specs import table

    specs = table()

    def gpu_spec(name: str) -> tuple[float | None, float | None, float | None]:
        s = specs.get(name)
        if s is None:
            return None, None, None
        return s.bandwidth_bytes_s, s.fp16_flops or s.fp32_flops, s.int8_ops

    def fabric_of(name: str) -> str | None:
        s = specs.get(name)
        return s.fabric if s else None

    def arch_of(name: str) -> str | None:
        s = specs.get(name)
        return s.arch if s else None

    out: list[speedfit.Measurement] = []
    skipped: dict[str, str] = {}
    for path in sorted(data_dir.glob("*.yaml")):
        for row in yaml.safe_load(path.read_text())["measurements"]:
            m = speedfit.to_measurement(row, gpu_spec, fabric_of, arch_of)
            if isinstance(m, str):
                skipped[str(row.get("id"))] = m
            else:
                out.append(m)
    return out, skipped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-params", action="store_true")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    ms, skipped = load()
    scored = speedfit.leave_one_source_out(ms, rounds=args.rounds)
    print(f"{'id':<62} {'test':<8} {'measured':>9} {'estimate':>9} {'ratio':>6}")
    for s in sorted(scored, key=lambda s: (s.test, s.id)):
        ratio = s.estimated / s.measured
        print(f"{s.id[:62]:<62} {s.test:<8} {s.measured:>9.1f} {s.estimated:>9.1f} {ratio:>6.2f}")
    dec = speedfit.summary(scored, DECODE)
    pre = speedfit.summary(scored, PREFILL)
    sources = len({m.source for m in ms})
    print(f"\n{len(ms)} measurements from {sources} sources; {len(skipped)} rows not used:")
    for why in sorted(set(skipped.values())):
        n = sum(1 for w in skipped.values() if w == why)
        print(f"  {n:>3}  {why[:100]}")
    print("leave-one-source-out        cases  median|log2|  within±25%   goal")
    print(
        f"decode (tg, tg_total)       {dec.get('cases', 0):>5}  {dec.get('median_abs_log2', 0):>12}"
        f"  {dec.get('within_25pct', 0):>10}   median<=0.2, >=0.75"
    )
    print(
        f"prefill (pp)                {pre.get('cases', 0):>5}  {pre.get('median_abs_log2', 0):>12}"
        f"  {pre.get('within_25pct', 0):>10}   >=0.60"
    )
    doc: dict[str, Any] = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "measurements": len(ms),
        "sources": sources,
        "skipped": skipped,
        "decode": dec,
        "prefill": pre,
        "rows": [s.__dict__ for s in scored],
    }
    if args.write_params:
        params = speedfit.fit(ms, rounds=args.rounds)
        stored = {
            "note": "written by scripts/bench/speed_accuracy.py --write-params; do not edit",
            "cases": len(ms),
            "sources": sources,
            "params": {k: float(f"{v:.6g}") for k, v in sorted(params.items())},
            "range": {
                "decode_low": dec.get("ratio_p10", 0.5),
                "decode_high": dec.get("ratio_p90", 1.5),
                "prefill_low": pre.get("ratio_p10", 0.5),
                "prefill_high": pre.get("ratio_p90", 1.5),
            },
            "loso": {"decode": dec, "prefill": pre},
        }
        tmp = PARAMS.with_suffix(".tmp")
        tmp.write_text(json.dumps(stored, indent=1) + "\n")
        os.replace(tmp, PARAMS)
        doc["params"] = stored["params"]
        print(f"wrote {PARAMS.relative_to(ROOT)}")
    results = ROOT / "scripts" / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = results / f"speed_accuracy-{stamp}.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
