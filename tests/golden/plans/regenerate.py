"""Regenerate the golden plans: `.venv/bin/python tests/golden/plans/regenerate.py`.

One JSON file per hardware spec: the ranked plans for `qwen3-coder` (the whole family)
with their placement, settings and memory per device, and every rejected option with its
reason. Review the diff like code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SPECS = {
    "cpu-ram24g": "cpu,ram=24G",
    "1xrtx4090-ram64g": "1xrtx4090,ram=64G",
    "2xrtx3090-ram64g": "2xrtx3090,ram=64G",
    "1xh100-ram256g": "1xh100,ram=256G",
    "8xh100-ram2t": "8xh100,ram=2T",
}
GiB = 1024**3


def summary(spec: str) -> dict[str, Any]:
    from toolkit.api.plan import make_plans

    result = make_plans("qwen3-coder", hw=spec, calibration=[])
    plans = []
    for p in result.plans:
        row: dict[str, Any] = {
            "variant": p.variant_id,
            "engine": p.engine,
            "placement": p.placement,
            "kernel": p.kernel,
            "ctx": p.ctx,
            "max_ctx": p.max_ctx,
            # [needed (total less reclaimable file pages), capacity, of it caches]
            "memory_gib": {
                d.id: [
                    round(d.needed_bytes / GiB, 2),
                    round(d.capacity_bytes / GiB, 2),
                    round(d.cache_bytes / GiB, 2),
                ]
                for d in p.memory
            },
            "decode_tok_s": p.speed.decode_tok_s,
            "notes": list(p.notes),
        }
        if p.llamacpp is not None:
            row["llamacpp"] = {
                "n_gpu_layers": p.llamacpp.n_gpu_layers,
                "n_cpu_moe": p.llamacpp.n_cpu_moe,
                "tensor_split": list(p.llamacpp.tensor_split),
                "cache_ram_mib": p.llamacpp.cache_ram_mib,
                "ctx_checkpoints": p.llamacpp.ctx_checkpoints,
            }
        if p.vllm is not None:
            row["vllm"] = {
                "tensor_parallel": p.vllm.tensor_parallel,
                "expert_parallel": p.vllm.expert_parallel,
                "kv_tokens_capacity": p.kv_tokens_capacity,
                "max_concurrency": p.max_concurrency,
            }
        plans.append(row)
    return {
        "hw": spec,
        "plans": plans,
        "rejected": [
            {"variant": r.variant_id, "engine": r.engine, "reason": r.reason}
            for r in result.rejections
        ],
    }


def render(spec: str) -> str:
    return json.dumps(summary(spec), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    for name, spec in SPECS.items():
        (HERE / f"qwen3-coder--{name}.json").write_text(render(spec), encoding="utf-8")
        print(f"wrote qwen3-coder--{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
