#!/usr/bin/env python3
"""How well the planner's vLLM memory model reproduces published startup logs.

Usage: .venv/bin/python scripts/bench/vllm_accuracy.py [--write-params]

Reads tests/data/vllm_logs.yaml (every log with its URL, vLLM version and the figures
the engine printed) and scores, leave-one-source-out (the fitted constants refitted
without each source, then that source predicted):
  weights       the planner's weights per rank vs "Model loading took" (the architecture
                scaled to the recipe's published parameter count, as `deploy plan` does)
  overheads     activation + non-torch + graphs as charged (budget − logged weights −
                logged KV) vs the model's terms
  available_kv  "Available KV cache memory", end to end with the predicted weights
  kv_tokens     "GPU KV cache size" from the logged pool, the version's blocks and groups
  activation    the logged activation peak, where a log prints it
Prints one row per figure and per version, the summary against the goals (available KV
median ≤ 3 %, p90 ≤ 15 %; weights max ≤ 3 %), and writes JSON to scripts/bench/results/.
--write-params refits on every log and stores the constants in
toolkit/planner/vllm_params.json (what `deploy plan` uses).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from toolkit.planner import vllm_fit  # noqa: E402
from toolkit.planner import vllm_memory as vm  # noqa: E402

DATA = ROOT / "tests" / "data" / "vllm_logs.yaml"
PARAMS = ROOT / "toolkit" / "planner" / "vllm_params.json"
FIGURES = ("weights", "overheads", "available_kv", "kv_tokens", "activation")
GOALS = {"available_kv": {"median": 0.03, "p90": 0.15}, "weights": {"max": 0.03}}


def load(path: Path = DATA) -> tuple[list[vllm_fit.Case], dict[str, str]]:
    """Every usable log, and the ids skipped with why."""
    import yaml

    from toolkit.api.recipes import catalog

    archs = {}
    params: dict[str, float] = {}
    positions: dict[str, int] = {}
    for mid, entry in catalog().models.items():
        if entry.model.params.total:
            params[mid] = float(entry.model.params.total)
        positions[mid] = entry.model.context.native
        arch = entry.model.architecture
        if arch is None and entry.model.same_architecture_as:
            arch = catalog().models[entry.model.same_architecture_as].model.architecture
        if arch is not None:
            archs[mid] = arch
    cases: list[vllm_fit.Case] = []
    skipped: dict[str, str] = {}
    for row in yaml.safe_load(path.read_text(encoding="utf-8"))["logs"]:
        c = vllm_fit.to_case(row, archs, params, positions)
        if isinstance(c, str):
            skipped[row["id"]] = c
        else:
            cases.append(c)
    return cases, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-params", action="store_true")
    args = ap.parse_args(argv)
    cases, skipped = load()
    scored = vllm_fit.leave_one_source_out(cases)
    sources = len({c.source for c in cases})
    print(f"{len(cases)} logs from {sources} sources; skipped {skipped or 'none'}")
    print(f"{'log':34} {'vLLM':8} {'figure':13} {'logged':>12} {'predicted':>12} {'error':>8}")
    for s in sorted(scored, key=lambda s: (s.figure, s.version, s.id)):
        unit = 1 if s.figure == "kv_tokens" else 2**30
        print(
            f"{s.id:34} {s.version:8} {s.figure:13} {s.logged / unit:12.2f} "
            f"{s.predicted / unit:12.2f} {s.rel_error:+8.1%}"
        )
    summaries = {f: vllm_fit.summary(scored, f) for f in FIGURES}
    by_version: dict[str, dict[str, Any]] = {}
    for ver in sorted({s.version for s in scored}, key=lambda v: vm.parse_version(v) or (0, 0, 0)):
        by_version[ver] = {
            f: vllm_fit.summary([s for s in scored if s.version == ver], f) for f in FIGURES
        }
    print("\nleave-one-source-out |relative error|:")
    for f, summ in summaries.items():
        goal = GOALS.get(f, {})
        met = all(summ.get(k, 1e9) <= v for k, v in goal.items()) if summ["cases"] else False
        tag = "" if not goal else ("  goal met" if met else f"  goal {goal} NOT met")
        print(f"  {f:13} {summ}{tag}")
    print("\nby version (available_kv / overheads):")
    for ver, figs in by_version.items():
        print(f"  {ver:8} {figs['available_kv']}  {figs['overheads']}")
    fitted = vllm_fit.fit(cases)
    print("\nconstants fitted on every log:", {k: round(v, 3) for k, v in fitted.items()})
    out = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "logs": len(cases),
        "sources": len({c.source for c in cases}),
        "skipped": skipped,
        "summary": summaries,
        "by_version": by_version,
        "goals": GOALS,
        "fitted": fitted,
        "rows": [
            {
                "id": s.id,
                "version": s.version,
                "figure": s.figure,
                "logged": s.logged,
                "predicted": s.predicted,
                "rel_error": s.rel_error,
            }
            for s in scored
        ],
    }
    results = ROOT / "scripts" / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (results / f"vllm_accuracy-{stamp}.json").write_text(json.dumps(out, indent=2))
    if args.write_params:
        doc = {
            "about": "vLLM memory constants fitted by scripts/bench/vllm_accuracy.py on "
            "tests/data/vllm_logs.yaml",
            "params": {k: round(v, 4) for k, v in fitted.items()},
            "loso": {f: summaries[f] for f in ("available_kv", "overheads", "activation")},
        }
        tmp = PARAMS.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(PARAMS)
        print(f"wrote {PARAMS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
