"""Predictions against real, published vLLM startup logs (tests/data/published_measurements.yaml).

Targets (issue 4): weights median error ≤ 1 %. vLLM's KV pool, version by version, is
checked against tests/data/vllm_logs.yaml in tests/test_vllm_memory.py.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml

from toolkit.api.recipes import catalog
from toolkit.catalog.schema import Architecture
from toolkit.planner import memory as mem
from toolkit.planner.quant import quant_info
from toolkit.planner.weights import estimate_layout, vllm_padded

GiB = 1024**3
DATA = yaml.safe_load(
    (Path(__file__).parent / "data" / "published_measurements.yaml").read_text(encoding="utf-8")
)


def _arch(model_id: str) -> Architecture:
    arch = catalog().models[model_id].model.architecture
    assert arch is not None
    return arch


def predicted_weights(entry: dict[str, Any]) -> int:
    arch = _arch(entry["arch_of"])
    info = quant_info(entry["quant"], entry["quant"])
    assert info is not None
    layout = vllm_padded(arch, estimate_layout(arch, info), info)
    return layout.total_bytes // entry["tp"]


def _rel(pred: float, logged: float) -> float:
    return abs(pred - logged) / abs(logged)


def test_every_entry_has_source_and_version() -> None:
    for section in ("weights", "llamacpp_weights", "llamacpp_kv"):
        for e in DATA[section]:
            assert e["source"].startswith("https://github.com/"), e["id"]
            assert "vllm" in e["engine"] or "llama.cpp" in e["engine"], e["id"]


def test_weights_median_error_within_1_percent() -> None:
    errors = {e["id"]: _rel(predicted_weights(e), e["logged_gib"] * GiB) for e in DATA["weights"]}
    print({k: f"{v:.2%}" for k, v in errors.items()})
    assert statistics.median(errors.values()) <= 0.01


def test_llamacpp_model_size_median_within_1_percent() -> None:
    errors = []
    for e in DATA["llamacpp_weights"]:
        arch = _arch(e["arch_of"])
        info = quant_info(e["quant"], "gguf")
        assert info is not None
        errors.append(_rel(estimate_layout(arch, info).total_bytes, e["logged_gib"] * GiB))
    assert statistics.median(errors) <= 0.01
    assert max(errors) <= 0.01


@pytest.mark.parametrize("entry", DATA["llamacpp_kv"], ids=lambda e: e["id"])
def test_llamacpp_kv_buffers_exact(entry: dict[str, Any]) -> None:
    arch = _arch(entry["arch_of"])
    per_layer = mem.llamacpp_kv_per_layer(
        arch,
        n_ctx=entry["n_ctx"],
        slots=entry["slots"],
        ubatch=entry["ubatch"],
        kv_dtype="f16",
        unified=entry["unified"],
    )
    kinds = mem.layer_kinds(arch)
    glob = sum(b for b, k in zip(per_layer, kinds, strict=True) if k == "global")
    swa = sum(b for b, k in zip(per_layer, kinds, strict=True) if k != "global")
    assert glob == entry["logged_global_mib"] * 1024**2
    assert swa == entry["logged_swa_mib"] * 1024**2
