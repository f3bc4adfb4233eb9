"""Regenerate the golden plans: `.venv/bin/python tests/golden/plans/regenerate.py`.

One JSON file per (model, hardware spec): the ranked plans (`qwen3-coder` is the whole
family) with their placement, settings, memory per device, ranking facts and the reason
each ranks above the next, and every rejected option with its reason. Review the diff
like code: the first plan of each file is what `deploy plan` recommends.
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
    "8xh200-ram2t": "8xh200,ram=2T",
    "16xh100-ram2t": "16xh100,ram=2T",
    "cpu-ram24g-cores2": "cpu,ram=24G,cores=2",
    "m3-max-128g": "m3-max:128G",
    # clusters (deploy plan --cluster): TP inside a node, pipeline stages / RPC across nodes
    "c2x8xh100-ib400": "cluster:2x[8xh100,ram=2T],net=ib400",
    "c4x1xrtx4090-eth10": "cluster:4x[1xrtx4090,ram=64G],net=eth10",
    "c2x1xrtx4090-eth10": "cluster:2x[1xrtx4090,ram=64G],net=eth10",
}
#: File-name-safe names for variant ids.
MODELS = {"qwen3-coder-480b-bf16": "qwen3-coder-480b-a35b:bf16"}
#: (model, spec name) pairs, beyond qwen3-coder on every spec above the ones in CASES.
CASES = [
    *[("qwen3-coder", name) for name in list(SPECS)[:5]],
    ("smollm2-135m", "cpu-ram24g-cores2"),
    ("deepseek", "8xh200-ram2t"),
    ("gpt-oss", "8xh100-ram2t"),
    ("kimi", "16xh100-ram2t"),
    ("qwen3", "m3-max-128g"),
    ("qwen3-coder-480b-bf16", "c2x8xh100-ib400"),
    ("deepseek-r1", "c2x8xh100-ib400"),
    ("llama-3.3-70b", "c4x1xrtx4090-eth10"),
    ("deepseek-r1", "c2x1xrtx4090-eth10"),  # too small: no plan, every reason
]
GiB = 1024**3


def summary(spec: str, model: str = "qwen3-coder") -> dict[str, Any]:
    from toolkit.api.plan import make_plans

    model = MODELS.get(model, model)
    if spec.startswith("cluster:"):
        result = make_plans(model, cluster=spec.removeprefix("cluster:"))
    else:
        result = make_plans(model, hw=spec, calibration=[])
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
            "decode_range": [p.speed.decode_low, p.speed.decode_high],
            "prefill_tok_s": p.speed.prefill_tok_s,
            "download_gib": None if p.download_bytes is None else round(p.download_bytes / GiB, 2),
            "download_estimated": p.download_estimated,
            "quality": p.quality,
            "capability": p.capability,
            "label": p.label,
            "above_next": p.rank_reason,
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
                "pipeline_parallel": p.vllm.pipeline_parallel,
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


def render(spec: str, model: str = "qwen3-coder") -> str:
    return json.dumps(summary(spec, model), indent=2, ensure_ascii=False) + "\n"


def case_of(stem: str) -> tuple[str, str]:
    """File stem → (model, spec)."""
    model, name = stem.split("--", 1)
    return model, SPECS[name]


def main() -> int:
    for model, name in CASES:
        path = HERE / f"{model}--{name}.json"
        path.write_text(render(SPECS[name], model), encoding="utf-8")
        print(f"wrote {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
