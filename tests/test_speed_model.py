"""The fitted speed model: its data, its fit, and what plans show.

The accuracy goals are checked by scripts/bench/speed_accuracy.py (leave-one-source-out),
not here; these tests keep the data honest and the shipped coefficients reproducible.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.benchscripts import load_bench
from toolkit.api.plan import make_plans
from toolkit.planner import speedfit
from toolkit.planner.speedmodel import DEFAULTS, Place, SpeedCase, decode_tok_s, fitted
from toolkit.planner.types import PlanRequest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "speed"


def _bench() -> Any:
    return load_bench("speed_accuracy")


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(DATA.glob("*.yaml")):
        rows += yaml.safe_load(path.read_text())["measurements"]
    return rows


def test_every_row_is_sourced_and_quotes_its_number() -> None:
    rows = _rows()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) and len(rows) >= 40
    for r in rows:
        assert r["url"] and r["source"] and r["quote"], r["id"]
        number = r.get("value_tok_s", r.get("tpot_ms", r.get("ttft_ms")))
        assert number is not None, r["id"]
        text = f"{number}"
        # The figure as the source printed it (YAML may drop a trailing zero, 80.60 → 80.6;
        # sources may group thousands, 1,384.2).
        quote = re.sub(r"(?<=\d),(?=\d{3})", "", r["quote"])
        assert text in quote or text.rstrip("0").rstrip(".") in quote, r["id"]
    assert len({r["source"] for r in rows}) >= 10


def test_shipped_coefficients_are_the_fit_of_the_shipped_data() -> None:
    ms, _ = _bench().load()
    stored = json.loads((ROOT / "toolkit" / "planner" / "speed_params.json").read_text())
    assert stored["cases"] == len(ms)
    refit = speedfit.fit(ms, rounds=6)
    for k, v in stored["params"].items():
        assert math.isclose(refit[k], v, rel_tol=1e-4), k
    assert fitted().params == {**DEFAULTS, **stored["params"]}


def test_rows_the_model_cannot_use_say_why() -> None:
    _, skipped = _bench().load()
    assert skipped and all(isinstance(why, str) and why for why in skipped.values())
    row = {"id": "x", "exclude": "a bug report", "test": "tg"}
    assert speedfit.to_measurement(row, lambda g: (None, None, None)) == "excluded: a bug report"


def _gpu(gpu_id: str) -> tuple[float, float, float]:
    """A 1 TB/s GPU with 100 TFLOP/s fp16 and 200 TOP/s int8, whatever the id."""
    return 1e12, 100e12, 200e12


def _row(**kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "t",
        "source": "s",
        "engine": "llamacpp",
        "backend": "cuda",
        "hardware": {"gpu": "x", "gpus": 1},
        "model": {"params_b": 8.0, "active_b": 8.0, "layers": 32, "hidden": 4096},
        "quant": "q8_0",
        "test": "tg",
        "placement": "gpu",
        "value_tok_s": 50.0,
    }
    row.update(kw)
    return row


def test_a_decode_figure_above_the_roofline_is_not_used() -> None:
    # 8B at Q8_0 is 8.5 GB; 1 TB/s reads it at most ~118 times a second.
    assert isinstance(speedfit.to_measurement(_row(value_tok_s=100.0), _gpu), speedfit.Measurement)
    assert "roofline" in str(speedfit.to_measurement(_row(value_tok_s=130.0), _gpu))


def test_expert_offload_puts_the_routed_experts_share_in_ram() -> None:
    row = _row(
        placement="expert_offload",
        n_cpu_moe=16,
        model={
            "params_b": 30.0,
            "active_b": 3.0,
            "layers": 32,
            "moe": True,
            "expert_active_share": 0.5,
            "experts": 128,
            "experts_per_token": 8,
        },
        hardware={"gpu": "x", "gpus": 1, "ram_bw_gb_s": 80},
    )
    m = speedfit.to_measurement(row, _gpu)
    assert isinstance(m, speedfit.Measurement)
    gpu, cpu = m.case.places
    # Half of the layers' routed experts (half of the active bytes) → a quarter in RAM.
    assert math.isclose(cpu.bytes_per_token / (gpu.bytes_per_token + cpu.bytes_per_token), 0.25)
    assert cpu.bandwidth == 80e9 and m.case.handoff_layers == 16


def _case(**fields: Any) -> SpeedCase:
    """One GPU on vLLM reading 2 GB a token over 48 layers, with `fields` changed."""
    base: dict[str, Any] = {
        "engine": "vllm",
        "backend": "cuda",
        "places": (Place("gpu", 2e9, 3e12, 1, 1.0),),
        "layers": 48,
    }
    return SpeedCase(**{**base, **fields})


def test_moe_batches_read_more_experts() -> None:
    def case(n: int) -> SpeedCase:
        moe = {"experts": 128, "experts_per_token": 8, "expert_share": 0.6}
        return _case(moe_layers=48, concurrency=n, **moe)

    one = decode_tok_s(case(1), dict(DEFAULTS))
    many = decode_tok_s(case(32), dict(DEFAULTS))
    assert one is not None and many is not None
    # Aggregate grows with streams, but each stream is slower: 32 tokens touch ~113 of
    # 128 experts, not 8.
    assert many[1] > one[1] and many[0] < one[0] / 3


def test_plans_carry_a_fitted_estimate_with_a_range() -> None:
    plan = make_plans("qwen3-coder-30b-a3b:q4_k_m", hw="1xrtx4090,ram=64G").plans[0]
    s = plan.speed
    assert s.decode_tok_s and s.decode_low and s.decode_high
    assert s.decode_low < s.decode_tok_s < s.decode_high
    assert s.basis.startswith("fitted estimate") and not s.measured
    assert s.prefill_tok_s  # the 4090 has an int8 rate in the table


def test_concurrency_raises_aggregate_decode_on_vllm() -> None:
    one = make_plans("qwen3-8b:bf16", hw="1xh100,ram=256G").plans[0].speed
    eight = make_plans("qwen3-8b:bf16", PlanRequest(concurrency=8), hw="1xh100,ram=256G")
    agg = eight.plans[0].speed
    assert one.decode_tok_s and agg.decode_tok_s and agg.decode_tok_s_aggregate
    assert agg.decode_tok_s_aggregate > 4 * one.decode_tok_s
    assert agg.decode_tok_s <= one.decode_tok_s


@pytest.mark.parametrize("hw", ["cpu,ram=24G,cores=2", "cpu,ram=24G,cores=32"])
def test_small_models_on_few_cores_are_bound_by_arithmetic(hw: str) -> None:
    plan = make_plans("smollm2-135m:q4_1", hw=hw).plans[0]
    assert plan.speed.decode_tok_s
    if hw.endswith("cores=2"):
        few = plan.speed.decode_tok_s
        many = make_plans("smollm2-135m:q4_1", hw="cpu,ram=24G,cores=32").plans[0]
        assert many.speed.decode_tok_s and many.speed.decode_tok_s > few


def test_tensor_parallel_over_a_gpu_fabric_costs_less_than_over_pcie() -> None:
    params = fitted().params
    assert params["allreduce_fabric_s"] < params["allreduce_s"]

    def case(fabric: bool) -> SpeedCase:
        return SpeedCase(
            engine="vllm",
            backend="cuda",
            places=(Place("gpu", 140e9, 3.35e12, 4, 1.0),),
            layers=80,
            tp=4,
            fabric=fabric,
        )

    pcie, nvlink = decode_tok_s(case(False), params), decode_tok_s(case(True), params)
    assert pcie and nvlink and nvlink[0] > pcie[0]
    # The planner takes the link from the spec table: SXM boards have NVLink, PCIe cards not.
    from toolkit.hardware.specstring import parse_spec

    assert {g.fabric for g in parse_spec("4xh100,ram=1T").gpus} == {"nvlink"}
    assert {g.fabric for g in parse_spec("4xh100-pcie,ram=1T").gpus} == {None}
    assert {g.fabric for g in parse_spec("2xmi300x,ram=1T").gpus} == {"xgmi"}


def test_llamacpp_prefill_on_amd_cdna_has_its_own_efficiency() -> None:
    """llama.cpp's HIP kernels reach a different share of an MI300X's (CDNA) tensor peak than
    of an RX 7900 XTX's (RDNA); the planner takes the family from the spec table."""
    from toolkit.planner.speedmodel import prefill_tok_s

    params = fitted().params
    assert params["pp_llamacpp_rocm_cdna"] != params["pp_llamacpp_rocm"]

    def case(arch: str) -> SpeedCase:
        rocm = {"engine": "llamacpp", "backend": "rocm", "gpu_arch": arch}
        return _case(flops_per_token=16e9, gpu_flops=1.3e15, **rocm)

    cdna, rdna = prefill_tok_s(case("cdna3"), params), prefill_tok_s(case("rdna3"), params)
    assert cdna and rdna
    ratio = params["pp_llamacpp_rocm_cdna"] / params["pp_llamacpp_rocm"]
    assert cdna / rdna == pytest.approx(ratio)
    from toolkit.hardware.specstring import parse_spec

    assert parse_spec("1xmi300x,ram=1T").gpus[0].arch == "cdna3"
    assert parse_spec("1xrx7900xtx,ram=64G").gpus[0].arch == "rdna3"


def test_the_spec_table_refuses_an_unknown_fabric() -> None:
    from toolkit.hardware.specs import parse_table

    text = """
sources: {v: https://example.invalid}
gpus:
  x: {full_name: X, vendor: nvidia, memory: 80GiB, fabric: infiniband, sources: [v]}
"""
    with pytest.raises(ValueError, match="fabric must be nvlink or xgmi"):
        parse_table(text)


def test_mla_layers_and_fp8_moe_have_their_own_terms() -> None:
    """DeepSeek's latent attention costs vLLM more per layer than its bytes say, and FP8 in
    MoE layers runs other kernels than dense FP8: one DeepSeek FP8 run no longer sets the
    FP8 speed of every dense model."""
    params = fitted().params
    base = SpeedCase(engine="vllm", backend="cuda", places=(Place("gpu", 8e9, 1.0e12),), layers=32)
    mla = SpeedCase(
        engine="vllm", backend="cuda", places=(Place("gpu", 8e9, 1.0e12),), layers=32, mla_layers=32
    )
    plain, latent = decode_tok_s(base, params), decode_tok_s(mla, params)
    assert plain and latent and latent[0] < plain[0]
    # llama.cpp runs its own MLA path: no vLLM term there.
    lcpp = decode_tok_s(SpeedCase(**{**base.__dict__, "engine": "llamacpp"}), params)
    lcpp_mla = decode_tok_s(SpeedCase(**{**mla.__dict__, "engine": "llamacpp"}), params)
    assert lcpp == lcpp_mla
    dense = SpeedCase(**{**base.__dict__, "kernel": "fp8"})
    moe = SpeedCase(**{**base.__dict__, "kernel": "fp8", "moe_layers": 32})
    changed = {**params, "k_vllm_fp8_moe": params["k_vllm_fp8_moe"] / 2}
    assert decode_tok_s(dense, changed) == decode_tok_s(dense, params)
    assert decode_tok_s(moe, changed) != decode_tok_s(moe, params)
    # In plans, a dense FP8 variant decodes faster than its BF16 twin (half the bytes).
    best = {
        p.variant_id: p.speed.decode_tok_s
        for p in make_plans("qwen3-8b", PlanRequest(engine="vllm"), hw="1xrtx4090,ram=64G").plans
    }
    assert best["qwen3-8b:fp8"] > best["qwen3-8b:bf16"]
