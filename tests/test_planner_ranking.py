"""The ranking policy (docs/planner.md, "Ranking"): what `deploy plan` recommends first."""

from __future__ import annotations

import json
import math

import pytest

from tests.clihelp import run
from toolkit.api.plan import make_plans
from toolkit.catalog.capability import capabilities
from toolkit.catalog.schema import Capability, Model
from toolkit.planner import rank
from toolkit.planner.types import PlanRequest

# --- what an expert runs first (the must-holds) ---------------------------------


def test_small_cpu_box_runs_the_gguf_on_llamacpp_first() -> None:
    best = make_plans("smollm2-135m", hw="cpu,ram=24G,cores=2", calibration=[]).plans[0]
    assert best.engine == "llamacpp" and best.format == "gguf"


def test_24gb_card_runs_a_4bit_30b_a3b_entirely_on_the_gpu() -> None:
    best = make_plans("qwen3-coder", hw="1xrtx4090,ram=64G", calibration=[]).plans[0]
    assert best.model_id == "qwen3-coder-30b-a3b"
    assert best.quality == "4-bit" and best.placement == "gpu"


def test_8xh200_runs_a_full_deepseek_in_fp8_on_vllm() -> None:
    best = make_plans("deepseek", hw="8xh200,ram=2T", calibration=[]).plans[0]
    assert best.engine == "vllm" and best.format == "fp8"
    assert best.model_id.startswith(("deepseek-v3", "deepseek-r1"))
    assert "qwen3-8b" not in best.model_id  # never the distill


def test_release_format_beats_an_upcast() -> None:
    plans = make_plans("gpt-oss-120b", hw="8xh100,ram=2T", calibration=[]).plans
    first_bf16 = next(i for i, p in enumerate(plans) if p.quant == "bf16")
    first_mxfp4 = next(i for i, p in enumerate(plans) if p.format == "mxfp4")
    assert first_mxfp4 < first_bf16
    assert plans[0].engine == "vllm"  # datacenter GPUs: the official checkpoint on vLLM


def test_a_distill_never_outranks_its_parent_when_both_fit() -> None:
    plans = make_plans("deepseek", hw="8xh200,ram=2T", calibration=[]).plans
    ids = [p.model_id for p in plans]
    distill = ids.index("deepseek-r1-0528-qwen3-8b")
    assert all(ids.index(m) < distill for m in ("deepseek-r1-0528", "deepseek-v3.2"))


# --- usable floors ------------------------------------------------------------------------


def test_plans_below_the_speed_floor_come_after_every_usable_plan() -> None:
    plans = make_plans(
        "qwen3-coder", PlanRequest(min_tok_s=100), hw="1xrtx4090,ram=64G", calibration=[]
    ).plans
    usable = [p.usable for p in plans]
    assert usable == sorted(usable, reverse=True) and False in usable
    slow = [p for p in plans if not p.usable]
    assert all(p.label and "slow" in p.label for p in slow)
    assert all((p.speed.decode_tok_s or 0) < 100 for p in slow)


def test_context_floor_labels_short_plans() -> None:
    plans = make_plans("smollm2-135m", PlanRequest(min_ctx=4096, ctx=2048), hw="cpu,ram=24G")
    # The floor never exceeds what was asked for: 2048 asked → not "short".
    assert all(p.usable for p in plans.plans)


def test_coder_recipes_raise_the_context_floor() -> None:
    plans = make_plans("qwen3-coder-30b-a3b", hw="cpu,ram=24G,cores=2", calibration=[]).plans
    # Lowered to fit, the context never goes below the recipe's 32K floor.
    assert all(p.ctx >= 32768 for p in plans)


def test_a_bigger_model_is_offered_at_a_shorter_context_before_it_is_rejected() -> None:
    # Llama 3.1 8B in bf16 on vLLM: 64K of KV (128 KiB a token) does not fit a 24 GB card
    # next to 15 GiB of weights; 32K does.
    req = PlanRequest(engine="vllm", ctx=65536)
    res = make_plans("llama-3.1-8b:bf16", req, hw="1xrtx4090,ram=32G", calibration=[])
    plan = res.plans[0]
    assert plan.engine == "vllm" and plan.ctx_lowered_from == 65536 and plan.ctx == 32768
    assert plan.max_ctx is not None and 32768 <= plan.max_ctx < 65536
    assert any(n.startswith(f"ctx lowered to {plan.ctx:,}") for n in plan.notes)
    assert not any(r.variant_id == "llama-3.1-8b:bf16" for r in res.rejections)


def test_a_shorter_context_keeps_a_slow_spill_on_the_gpu() -> None:
    # Qwen3-32B Q4_K_M (18.4 GiB) on a 24 GB card: at 32K its KV pushes layers into RAM
    # (~9 tok/s, below the 10 tok/s floor); at 16K it stays on the GPU, as guides run it.
    best = make_plans("qwen3", hw="1xrtx4090,ram=64G", calibration=[]).plans[0]
    assert best.variant_id == "qwen3-32b:q4_k_m" and best.placement == "gpu"
    assert best.ctx == 16384 and best.ctx_lowered_from == 32768 and best.usable
    assert best.notes[0].startswith("ctx lowered to 16,384 to stay above 10 tok/s (32,768 runs")
    # An explicit --ctx is kept: the spill is planned, labelled slow.
    req = PlanRequest(ctx=32768)
    kept = make_plans("qwen3-32b:q4_k_m", req, hw="1xrtx4090,ram=64G", calibration=[]).plans[0]
    assert kept.ctx == 32768 and kept.placement == "partial_offload" and not kept.usable
    assert kept.ctx_lowered_from is None


def test_when_nothing_is_usable_the_nearest_miss_comes_first() -> None:
    # A 16-core CPU box at the assumed 51.2 GB/s: no Llama 3 plan reaches 10 tok/s. The 8B
    # at 4-bit (~6 tok/s) is a usable compromise; the 70B at ~1 tok/s is not, however
    # capable.
    plans = make_plans("llama-3", hw="cpu,ram=64G,cores=16", calibration=[]).plans
    assert plans and not any(p.usable for p in plans)
    speeds = [p.speed.decode_tok_s or 0.0 for p in plans]
    assert plans[0].model_id == "llama-3.1-8b" and speeds[0] == max(speeds)
    assert plans[0].rank_reason.startswith("nearer the speed floor")
    seventy = next(p for p in plans if p.model_id == "llama-3.3-70b")
    assert (seventy.speed.decode_tok_s or 0) < 2 and plans.index(seventy) > 0
    assert rank.shortfall(plans[0], 10.0) < rank.shortfall(seventy, 10.0)


def test_unified_memory_is_counted_once_in_the_closest_option() -> None:
    res = make_plans("qwen3-235b-a22b", hw="m3-max:128G", calibration=[])
    assert not res.plans and res.closest is not None
    assert res.closest.have_bytes is not None and res.closest.have_bytes < 128 * 1024**3


# --- explanations, sizes, --task ----------------------------------------------------------


def test_each_plan_says_why_it_ranks_above_the_next() -> None:
    plans = make_plans("qwen3-coder", hw="1xrtx4090,ram=64G", calibration=[]).plans
    assert all(p.rank_reason for p in plans[:-1]) and plans[-1].rank_reason == ""
    assert "everything on GPUs vs experts in RAM" in {p.rank_reason for p in plans}


def test_every_variant_has_a_download_size() -> None:
    for family in ("qwen3-coder", "deepseek", "kimi", "glm", "qwen3"):
        res = make_plans(family, hw="16xh200,ram=4T", calibration=[])
        assert res.plans
        for p in res.plans:
            assert p.download_bytes and p.download_bytes > 0, p.variant_id
    res = make_plans("qwen3-coder-30b-a3b:bf16", hw="1xh200,ram=256G", calibration=[])
    p = res.plans[0]
    # Estimated from the architecture: 30.5B × 2 bytes within 3 %.
    assert p.download_estimated and abs(p.download_bytes / (30.5e9 * 2) - 1) < 0.03


def test_size_known_is_not_a_ranking_key() -> None:
    plans = make_plans("qwen3-coder-30b-a3b", hw="1xrtx4090,ram=64G", calibration=[]).plans
    # The estimated-size UD quant ranks by its speed, not behind known sizes.
    assert plans[0].download_estimated


def test_prefer_speed_puts_the_fastest_usable_plan_first() -> None:
    plans = make_plans(
        "qwen3-coder", PlanRequest(prefer="speed"), hw="1xrtx4090,ram=64G", calibration=[]
    ).plans
    usable = [p for p in plans if p.usable]
    assert plans[0].speed.decode_tok_s == max(p.speed.decode_tok_s or 0 for p in usable)


def test_task_ranks_across_every_recipe_tagged_for_it() -> None:
    res = make_plans(None, hw="1xh100,ram=256G", task="code", calibration=[])
    families = {p.model_id.split("-")[0] for p in res.plans}
    assert len(families) >= 3
    assert res.plans[0].usable


def test_cli_plan_shows_range_reason_label_and_estimated_size() -> None:
    res = run("plan", "qwen3-coder", "--hw", "1xrtx4090,ram=64G", "--min-tok-s", "100")
    assert res.exit_code == 0, res.stderr
    assert "above #2:" in res.stdout and "fits but slow" in res.stdout
    assert " est." in res.stdout and "tok/s (" in res.stdout
    doc = json.loads(run("plan", "smollm2-135m", "--hw", "cpu,ram=24G", "--json").stdout)
    first = doc["plans"][0]
    assert {"usable", "label", "quality", "capability", "rank_reason"} <= set(first)
    assert first["speed"]["decode_low"] < first["speed"]["decode_tok_s"]


def test_cli_task_and_model_together_is_a_usage_error() -> None:
    res = run("plan", "qwen3", "--task", "code")
    assert res.exit_code == 2 and "not both" in res.stderr


# --- the pure pieces ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quant", "fmt", "release", "cls"),
    [
        ("bf16", "bf16", ("bf16",), "lossless"),
        ("fp8", "fp8", ("bf16",), "lossless"),
        ("q8_0", "gguf", (), "lossless"),
        ("q6_k", "gguf", (), "5-6-bit"),
        ("q5_k_m", "gguf", (), "5-6-bit"),
        ("q4_k_m", "gguf", (), "4-bit"),
        ("ud-q4_k_xl", "gguf", (), "4-bit"),
        ("iq4_xs", "gguf", (), "4-bit"),
        ("awq", "awq", ("bf16",), "4-bit"),
        ("mxfp4", "mxfp4", ("mxfp4",), "lossless"),
        ("mxfp4", "gguf", ("mxfp4",), "lossless"),
        ("nvfp4", "nvfp4", ("fp8",), "4-bit"),
        ("ud-q3_k_xl", "gguf", (), "3-bit"),
        ("ud-iq1_s", "gguf", (), "1-bit"),
        ("ud-tq1_0", "gguf", (), "1-bit"),
        ("ud-iq2_xxs", "gguf", (), "2-bit"),
        ("q2_k", "gguf", (), "2-bit"),
    ],
)
def test_quality_classes(quant: str, fmt: str, release: tuple[str, ...], cls: str) -> None:
    assert rank.CLASSES[rank.quality_class(quant, fmt, release)] == cls


def test_upcast_of_a_narrow_release() -> None:
    assert rank.is_upcast("bf16", ("mxfp4",)) and rank.is_upcast("bf16", ("fp8",))
    assert not rank.is_upcast("fp8", ("bf16",)) and not rank.is_upcast("mxfp4", ("mxfp4",))


def _model(mid: str, params: float, score: float | None, scale: str = "s") -> Model:
    cap = None if score is None else Capability(score=score, scale=scale, source="t")
    return Model.model_validate(
        {
            "id": mid,
            "name": mid,
            "repo": f"o/{mid}",
            "params": {"total": params},
            "context": {"native": 8192},
            "capability": None if cap is None else cap.model_dump(),
        }
    )


def test_capability_estimates_rank_at_their_lower_bound() -> None:
    ms = [
        _model("a", 1e9, 10),
        _model("b", 10e9, 22),
        _model("c", 100e9, 28),
        _model("d", 100e9, None),
        _model("e", 10e9, 70, scale="other"),
    ]
    caps = capabilities(ms)
    assert caps["a"].score == 10 and not caps["a"].estimated
    # d: the line through (9, 10), (10, 22), (11, 28) is y = 9x − 70: 29 at 100B; the
    # residuals −1, 2, −1 have an RMS of √2 → ranked at 27.6.
    assert caps["d"].estimated and math.isclose(caps["d"].score, 27.6, abs_tol=0.05)
    assert caps["d"].score <= caps["c"].score  # an estimate does not beat a published score
    assert caps["e"].estimated and "published: 70 on other" in caps["e"].basis


def test_capability_without_any_scores_falls_back_to_parameters() -> None:
    caps = capabilities([_model("a", 1e9, None), _model("b", 1e10, None)])
    assert caps["b"].score > caps["a"].score and caps["a"].basis.endswith("total parameters")


def test_recipes_show_gives_every_variant_a_size() -> None:
    doc = json.loads(run("recipes", "show", "qwen3-coder-30b-a3b", "--json").stdout)
    variants = doc[0]["variants"] if isinstance(doc, list) else doc["variants"]
    assert all(v["total_size"] for v in variants)
    known = {v["id"]: v for v in variants}
    assert not known["qwen3-coder-30b-a3b:q4_k_m"].get("size_estimated")
    assert known["qwen3-coder-30b-a3b:bf16"]["size_estimated"]
    text = run("recipes", "show", "qwen3-coder-30b-a3b").stdout
    assert "est." in text


def test_an_option_only_one_engine_has_implies_that_engine() -> None:
    # Llama 3.1 8B has GGUF and safetensors variants: --tp is vLLM's, --ngl llama.cpp's.
    hw = "2xrtx4090,ram=64G"
    tp = make_plans("llama-3.1-8b", PlanRequest(tp=2), hw=hw, calibration=[]).plans
    assert tp and {p.engine for p in tp} == {"vllm"}
    ngl = make_plans("llama-3.1-8b", PlanRequest(ngl=20), hw=hw, calibration=[]).plans
    assert ngl and {p.engine for p in ngl} == {"llamacpp"}
    both = make_plans("llama-3.1-8b", PlanRequest(), hw=hw, calibration=[]).plans
    assert {p.engine for p in both} == {"vllm", "llamacpp"}
