"""Calibration records parsed from real startup logs change the next plan, marked measured.

The planner is pure and takes records as an explicit input (`make_plans(...,
calibration=[...])`); these tests build records from the log fixtures with
toolkit.calibration and hand them to the real planner.

The GPU logs were recorded by others on other models, so here they are keyed to the plan
being made (hardware fingerprint, variant, ctx, concurrency, KV dtype): the tests check the
mechanism (measured terms replace modelled ones, the plan names the record), not that those
numbers fit this model. The CPU log was recorded here for the very model planned.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit import calibration as cal
from toolkit.api.plan import make_plans
from toolkit.hardware.profile import load_hardware
from toolkit.planner.types import CalibrationRecord, Plan, PlanRequest

LOGS = Path(__file__).parent / "fixtures" / "logs"
GiB = 1024**3
MiB = 1024**2


def _keyed(log: str, engine: str, hw: str, plan: Plan, **kw: object) -> CalibrationRecord:
    mem = cal.parse_log((LOGS / log).read_text(), engine)  # type: ignore[arg-type]
    return cal.build_record(
        mem,
        hardware_key=load_hardware(hw).fingerprint(),
        engine_version="recorded",
        model_key=plan.variant_id,
        ctx=plan.ctx,
        concurrency=plan.concurrency,
        kv_dtype=plan.kv_dtype,
        source=log,
        **kw,  # type: ignore[arg-type]
    )


def test_vllm_gpu_log_replaces_modelled_terms_on_both_gpus() -> None:
    hw = "2xrtx3090,ram=128G"
    request = PlanRequest(engine="vllm")
    modelled = make_plans("qwen3-coder-30b", request, hw=hw, calibration=[]).plans[0]
    assert modelled.devices == ("cuda:0", "cuda:1") and modelled.calibration == ()
    rec = _keyed("vllm-gpu-v1-3090-tp2-summary.log", "vllm", hw, modelled)
    plan = make_plans("qwen3-coder-30b", request, hw=hw, calibration=[rec]).plans[0]
    assert plan.calibration == (rec.id,)
    for dev in plan.memory:
        assert set(dev.measured) == {"weights_bytes", "kv_cache_bytes", "compute_bytes"}
        assert dev.weights_bytes == round(15.25 * GiB)
        assert dev.kv_cache_bytes == round(4.76 * GiB)
        assert dev.compute_bytes == round(1.66 * GiB) + round(0.14 * GiB)
        before = next(m for m in modelled.memory if m.id == dev.id)
        assert dev.total_bytes != before.total_bytes


def test_llamacpp_gpu_log_replaces_kv_and_compute() -> None:
    hw = "1xrtx4080-super,ram=64G"
    request = PlanRequest(engine="llamacpp")
    modelled = make_plans("smollm2", request, hw=hw, calibration=[]).plans[0]
    rec = _keyed("llamacpp-gpu-rtx4080s.log", "llamacpp", hw, modelled)
    plan = make_plans("smollm2", request, hw=hw, calibration=[rec]).plans[0]
    assert plan.calibration == (rec.id,)
    gpu = next(m for m in plan.memory if m.id == "cuda:0")
    assert gpu.kv_cache_bytes == 144 * MiB and gpu.compute_bytes == round(300.75 * MiB)
    assert {"kv_cache_bytes", "compute_bytes"} <= set(gpu.measured)
    # The log excerpt has no model buffer line: weights stay modelled.
    assert "weights_bytes" not in gpu.measured


def test_records_of_other_machines_or_shapes_are_not_used() -> None:
    hw = "2xrtx3090,ram=128G"
    request = PlanRequest(engine="vllm")
    modelled = make_plans("qwen3-coder-30b", request, hw=hw, calibration=[]).plans[0]
    elsewhere = _keyed("vllm-gpu-v1-3090-tp2-summary.log", "vllm", "2xrtx4090,ram=128G", modelled)
    plan = make_plans("qwen3-coder-30b", request, hw=hw, calibration=[elsewhere]).plans[0]
    assert plan.calibration == ()
    other_ctx = _keyed("vllm-gpu-v1-3090-tp2-summary.log", "vllm", hw, modelled)
    other_ctx = CalibrationRecord(**{**other_ctx.__dict__, "ctx": modelled.ctx // 2})
    plan = make_plans("qwen3-coder-30b", request, hw=hw, calibration=[other_ctx]).plans[0]
    # Weights do not depend on ctx and are still taken; KV and compute are not.
    dev = plan.memory[0]
    assert dev.measured == ("weights_bytes",)


def test_real_llamacpp_cpu_record_and_measured_speed(smollm2_gguf: Path) -> None:
    """The llama-server log recorded here for SmolLM2 (ctx 2048 per slot, 4 slots), keyed to
    this machine, plus a measured decode rate, as `deploy bench` stores it."""
    from toolkit.hardware.detect import detect

    logs = sorted(LOGS.glob("llamacpp-cpu-smollm2-ctx2048x4*.log"))
    assert logs, "the real llama-server log fixture is missing"
    mem = cal.parse_llamacpp_log(logs[0].read_text())
    assert mem.ctx == 2048 * 4 and mem.slots == 4
    request = PlanRequest(ctx=2048, concurrency=4, engine="llamacpp")
    modelled = make_plans(str(smollm2_gguf), request, calibration=[]).plans[0]
    rec = cal.build_record(
        mem,
        hardware_key=detect().fingerprint(),
        engine_version=mem.engine_version or "?",
        model_key=modelled.variant_id,
        ctx=2048,
        concurrency=4,
        kv_dtype=mem.kv_dtype or "f16",
        decode_tok_s=42.0,
        source=logs[0].name,
    )
    plan = make_plans(str(smollm2_gguf), request, calibration=[rec]).plans[0]
    assert plan.calibration == (rec.id,)
    cpu = next(m for m in plan.memory if m.id == "cpu")
    assert cpu.kv_cache_bytes == 23_040 * 2048 * 4
    assert {"weights_bytes", "kv_cache_bytes", "compute_bytes"} <= set(cpu.measured)
    assert plan.speed.measured and plan.speed.decode_tok_s == pytest.approx(42.0)
    assert "measured" in plan.speed.basis and rec.id in plan.speed.basis
    assert not modelled.speed.measured
