"""llama.cpp process memory beyond its logged buffers: the CPU_REPACK copy, the process
itself, ggml's CPU work buffer, and llama-server's RAM caches (prompt cache, context
checkpoints) as the plan caps them. The figures are checked against the real server by
scripts/bench/planner_accuracy.py and, for the caps, by tests/test_up_llamacpp.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.fabricate import write_gguf
from tests.test_engines import LLAMA, opt
from tests.test_planner import GEMMA3_270M, SMOL, gpu, machine
from toolkit.catalog.schema import Architecture
from toolkit.engines.llamacpp import native_launch
from toolkit.engines.serving import RecipeServing
from toolkit.inspect.gguf import read_gguf
from toolkit.inspect.layout import estimate_layout
from toolkit.planner import memory as mem
from toolkit.planner import placement
from toolkit.planner.types import DeviceMemory, Plan, PlanRequest

MiB = 2**20
GiB = 2**30

GEMMA = GEMMA3_270M


def _cpu(
    arch: Architecture, layout_bits: float = 4.5, *, ram_gib: float = 24, **kw: object
) -> tuple[placement.Evaluated, DeviceMemory]:
    layout = estimate_layout(arch, layout_bits)
    args: dict[str, object] = dict(
        ngl=0, n_cpu_moe=0, ctx=4096, slots=1, ubatch=512, kv_dtype="f16", flash_attn=True
    )
    args.update(kw)
    e = placement.llamacpp(
        arch,
        layout,
        machine(ram_gib=ram_gib),
        [],
        kv_read_ctx=2048,
        **args,  # type: ignore[arg-type]
    )
    return e, next(d for d in e.devices if d.id == "cpu")


def test_checkpoint_is_the_window_of_the_sliding_layers() -> None:
    # Gemma 3 270M at n_ctx 1024: llama-server logged checkpoints of 7.330 MiB (500 tokens)
    # and 7.506 MiB (1012 tokens): 15 sliding layers × 512 cells × 1 KiB.
    one = mem.llamacpp_checkpoint_bytes(GEMMA, n_ctx=1024, slots=1, kv_dtype="f16")
    assert one == 15 * 512 * 1024
    assert mem.llamacpp_checkpoint_bytes(SMOL, n_ctx=1024, slots=1, kv_dtype="f16") == 0


def test_caches_cover_one_saved_state_per_slot_and_shrink_to_the_room() -> None:
    kv = 39 * MiB
    one = mem.llamacpp_checkpoint_bytes(GEMMA, n_ctx=8192, slots=1, kv_dtype="f16")
    roomy = placement.llamacpp_host_caches(
        GEMMA, room=10 * GiB, kv_total=kv, n_ctx=8192, slots=1, kv_dtype="f16"
    )
    assert roomy.checkpoints == mem.LLAMACPP_CHECKPOINTS
    # the saved state (KV + its checkpoints) plus a header margin, whole MiB
    k = mem.LLAMACPP_CHECKPOINTS
    assert roomy.cache_ram_mib == (kv + k * one + MiB) // MiB
    assert roomy.bytes == k * one + roomy.cache_ram_mib * MiB
    tight = placement.llamacpp_host_caches(
        GEMMA, room=one + one // 2, kv_total=kv, n_ctx=8192, slots=1, kv_dtype="f16"
    )
    # one checkpoint fits; the rest cannot hold one state, so the prompt cache is off
    assert (tight.checkpoints, tight.cache_ram_mib) == (1, 0)
    assert tight.bytes == one
    none = placement.llamacpp_host_caches(
        SMOL, room=-5, kv_total=kv, n_ctx=8192, slots=1, kv_dtype="f16"
    )
    assert (none.checkpoints, none.cache_ram_mib, none.bytes) == (None, 0, 0)


def test_caches_never_make_a_plan_fail() -> None:
    _, cpu = _cpu(SMOL, ram_gib=1.2)
    assert cpu.cache_bytes <= max(0, cpu.capacity_bytes - (cpu.needed_bytes - cpu.cache_bytes))
    e_big, cpu_big = _cpu(SMOL, ram_gib=64)
    assert cpu_big.cache_bytes > cpu.cache_bytes
    assert e_big.cache_ram_mib is not None and e_big.cache_ram_mib > 0


def test_process_and_work_buffer_in_overhead() -> None:
    _, with_fa = _cpu(SMOL, flash_attn=True)
    _, without = _cpu(SMOL, flash_attn=False)
    base = mem.llamacpp_process_bytes(SMOL, n_ctx=4096)
    assert with_fa.overhead_bytes == base
    # f16 copy of the attention scores: n_kv × ubatch × heads × 2 bytes
    assert without.overhead_bytes - base == 4096 * 512 * 9 * 2
    assert with_fa.total_bytes == (
        with_fa.weights_bytes
        + with_fa.kv_cache_bytes
        + with_fa.compute_bytes
        + with_fa.overhead_bytes
        + with_fa.cache_bytes
    )


def test_repacked_tensors_count_twice_in_rss_once_against_ram(tmp_path: Path) -> None:
    arch = Architecture(
        model_type="llama",
        layers=4,
        hidden_size=256,
        intermediate_size=768,
        heads=8,
        kv_heads=2,
        head_dim=32,
        vocab_size=4096,
    )
    (q40,) = write_gguf(tmp_path / "q4_0.gguf", arch, ftype="Q4_0", tokenizer="llama")
    (q80,) = write_gguf(tmp_path / "q8_0.gguf", arch, ftype="Q8_0", tokenizer="llama")
    hw = machine(ram_gib=24)
    common = dict(
        ngl=0, n_cpu_moe=0, ctx=1024, slots=1, ubatch=512, kv_dtype="f16", flash_attn=True
    )
    lay4 = read_gguf(q40).layout
    e4 = placement.llamacpp(arch, lay4, hw, [], kv_read_ctx=512, **common)  # type: ignore[arg-type]
    cpu4 = e4.devices[-1]
    assert lay4.repack_bytes > 0
    assert cpu4.weights_bytes == lay4.total_bytes + lay4.repack_bytes
    assert cpu4.reclaimable_bytes == lay4.repack_bytes
    assert cpu4.needed_bytes == cpu4.total_bytes - lay4.repack_bytes
    lay8 = read_gguf(q80).layout
    e8 = placement.llamacpp(arch, lay8, hw, [], kv_read_ctx=512, **common)  # type: ignore[arg-type]
    assert lay8.repack_bytes == 0 and e8.devices[-1].reclaimable_bytes == 0
    # layers on a GPU are not repacked: only what stays on the CPU is
    g = placement.llamacpp(
        arch,
        lay4,
        hw,
        [gpu("RTX 4090", "8.9", 24)],
        kv_read_ctx=512,
        **{**common, "ngl": arch.layers + 1},  # type: ignore[arg-type]
    )
    assert g.devices[-1].reclaimable_bytes == 0


def _launch(plan: Plan, flags: frozenset[str]) -> tuple[str, ...]:
    """native_launch itself (build_launch would also refuse flags the engine lacks)."""
    la = native_launch(
        plan,
        replace(LLAMA, flags=flags),
        model_path=Path("/m.gguf"),
        served_model_name="m",
        host="127.0.0.1",
        port=8080,
        api_key_file=Path("/k"),
        online=False,
        tls=None,
        serving=RecipeServing(),
    )
    return la.argv


def test_launch_passes_the_caps_when_the_engine_has_the_flags() -> None:
    from toolkit.api.plan import best_plan

    plan = best_plan("gemma-3-4b", PlanRequest(engine="llamacpp", ctx=8192), hw="cpu,ram=24G")
    s = plan.llamacpp
    assert s is not None and s.cache_ram_mib and s.ctx_checkpoints == mem.LLAMACPP_CHECKPOINTS
    argv = _launch(plan, frozenset({"--cache-ram", "--ctx-checkpoints", "--model"}))
    assert opt(argv, "--cache-ram") == str(s.cache_ram_mib)
    assert opt(argv, "--ctx-checkpoints") == str(s.ctx_checkpoints)
    # an older llama-server without these caches gets neither flag
    old = _launch(plan, frozenset({"--model", "--ctx-size"}))
    assert "--cache-ram" not in old and "--ctx-checkpoints" not in old


def test_plans_written_before_the_cache_settings_still_load() -> None:
    from toolkit.api.plan import best_plan

    doc = best_plan("smollm2-135m", PlanRequest(engine="llamacpp"), hw="cpu,ram=24G").to_dict()
    for dev in doc["memory"]:
        del dev["cache_bytes"], dev["reclaimable_bytes"]
    del doc["llamacpp"]["cache_ram_mib"], doc["llamacpp"]["ctx_checkpoints"]
    old = Plan.from_dict(doc)
    assert old.llamacpp is not None and old.llamacpp.cache_ram_mib is None
    assert "--cache-ram" not in _launch(old, frozenset({"--cache-ram"}))
    assert all(d.cache_bytes == 0 and d.needed_bytes == d.total_bytes for d in old.memory)
