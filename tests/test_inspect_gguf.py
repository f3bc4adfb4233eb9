"""GGUF headers: the real SmolLM2 file and fabricated full-size files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fabricate import write_gguf
from gguf import GGUFValueType

from toolkit.catalog.loader import load_catalog
from toolkit.catalog.schema import Architecture, LinearAttention, LocalAttention, Mla, Moe
from toolkit.errors import NotFound, UsageError
from toolkit.inspect import load_model_source
from toolkit.inspect.gguf import read_gguf
from toolkit.inspect.ggufmix import estimate_gguf_layout
from toolkit.inspect.params import param_breakdown


def _recipe_arch(model_id: str):  # type: ignore[no-untyped-def]
    return load_catalog().models[model_id].model.architecture


def test_smollm2_architecture_equals_the_recipe(smollm2_gguf: Path) -> None:
    g = read_gguf(smollm2_gguf)
    recipe = _recipe_arch("smollm2-135m")
    assert recipe is not None
    assert g.architecture.model_copy(update={"source": None}) == recipe.model_copy(
        update={"source": None}
    )
    assert g.context_length == 8192
    assert g.file_type == "Q4_1"
    assert g.quant == "q4_1"


def test_smollm2_layout_is_the_model_buffer_llama_cpp_logs(smollm2_gguf: Path) -> None:
    g = read_gguf(smollm2_gguf)
    # llama.cpp logs "CPU_Mapped model buffer size = 92.10 MiB" for this file
    # (shared/reference/engines-on-cpu.md).
    assert round(g.layout.total_bytes / 2**20, 2) == 92.10
    assert g.layout.exact
    assert len(g.layout.per_layer_bytes) == 30
    assert g.layout.output_bytes == 576 * 4  # tied: only output_norm (f32)
    assert sum(g.layout.dtype_bytes.values()) == g.layout.total_bytes
    # element count equals the analytic breakdown of the same architecture
    n = sum(t.n_elements for t in g.tensors)
    assert n == param_breakdown(g.architecture).total == 134_515_008
    # the data section ends where the file ends
    last = max(g.tensors, key=lambda t: t.offset)
    assert g.file_bytes is not None and g.file_bytes >= last.offset + last.nbytes


def test_load_model_source_turns_a_gguf_into_a_catalog_variant(smollm2_gguf: Path) -> None:
    src = load_model_source(str(smollm2_gguf))
    assert src.kind == "gguf"
    assert src.model.id == "smollm2-135m-instruct"
    assert src.variant.format == "gguf"
    assert src.variant.quant == "q4_1"
    assert src.variant.total_size() == 98_362_432
    assert src.model.context.native == 8192
    assert src.layout is not None and src.layout.exact


# -- fabricated full-size files (real headers, sparse data) --------------------------------


def _disk_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_blocks * 512 for p in paths)


def test_qwen3_coder_30b_q4_k_m_matches_the_published_file(tmp_path: Path) -> None:
    arch = _recipe_arch("qwen3-coder-30b-a3b")
    assert arch is not None
    paths = write_gguf(
        tmp_path / "Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf", arch, context_length=262144
    )
    assert _disk_bytes(paths) < 64 * 2**20
    g = read_gguf(paths[0])
    # unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF Q4_K_M: 18,556,689,568 bytes (LlamaBarn)
    assert g.file_bytes is not None
    assert abs(g.file_bytes / 18_556_689_568 - 1) < 0.0005
    assert g.architecture.model_copy(update={"source": None}) == arch.model_copy(
        update={"source": None}
    )
    assert g.context_length == 262144
    assert g.file_type == "Q4_K_M" and g.quant == "q4_k_m"
    layout = g.layout
    assert layout.exact and len(layout.per_layer_bytes) == 48
    assert set(layout.dtype_bytes) == {"F32", "Q4_K", "Q6_K"}
    assert layout.output_bytes > 0 and layout.embedding_bytes > 0
    assert sum(layout.expert_bytes_per_layer) > 0.9 * layout.total_bytes
    assert layout.active_bytes is not None and layout.active_bytes < 0.2 * layout.total_bytes


def test_qwen3_coder_480b_split_gguf_reads_fast_from_any_part(tmp_path: Path) -> None:
    arch = _recipe_arch("qwen3-coder-480b-a35b")
    assert arch is not None
    paths = write_gguf(
        tmp_path / "Qwen3-Coder-480B-A35B-Instruct-Q4_K_M.gguf",
        arch,
        split_max_bytes=50 * 10**9,
        context_length=262144,
    )
    assert len(paths) == 6
    assert paths[0].name == "Qwen3-Coder-480B-A35B-Instruct-Q4_K_M-00001-of-00006.gguf"
    assert _disk_bytes(paths) < 64 * 2**20
    started = time.perf_counter()
    g = read_gguf(paths[3])
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"header read took {elapsed:.1f}s"
    assert g.file_bytes is not None and 280e9 < g.file_bytes < 300e9
    assert len(g.paths) == 6
    assert g.architecture.model_copy(update={"source": None}) == arch.model_copy(
        update={"source": None}
    )
    assert len(g.tensors) == len({t.name for t in g.tensors})
    assert g.layout.total_bytes == sum(t.nbytes for t in g.tensors)
    assert g.quant == "q4_k_m"


def test_a_missing_split_part_is_named(tmp_path: Path) -> None:
    paths = write_gguf(tmp_path / "m.gguf", SMALL_MOE, ftype="Q8_0", split_max_bytes=2 * 10**6)
    assert len(paths) > 1
    paths[-1].unlink()
    with pytest.raises(NotFound) as err:
        read_gguf(paths[0])
    assert paths[-1].name in str(err.value)


def test_a_truncated_header_is_a_usage_error(tmp_path: Path) -> None:
    (path,) = write_gguf(tmp_path / "m.gguf", SMALL_MOE, ftype="Q8_0")
    data = path.read_bytes()[:5000]
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data)
    with pytest.raises(UsageError):
        read_gguf(cut)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + data[4:])
    with pytest.raises(UsageError, match="magic"):
        read_gguf(bad)


SMALL_MOE = Architecture(
    model_type="qwen3_moe",
    layers=4,
    hidden_size=256,
    intermediate_size=512,
    heads=8,
    kv_heads=2,
    head_dim=32,
    vocab_size=1000,
    moe=Moe(experts=8, experts_per_token=2, expert_intermediate_size=256),
)
DEEPSEEK_SMALL = Architecture(
    model_type="deepseek_v3",
    layers=5,
    hidden_size=512,
    intermediate_size=1024,
    heads=8,
    kv_heads=8,
    head_dim=192,
    vocab_size=2000,
    moe=Moe(
        experts=16,
        experts_per_token=4,
        expert_intermediate_size=256,
        shared_experts=1,
        first_dense_layers=2,
    ),
    mla=Mla(
        kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128, q_lora_rank=256
    ),
)
GEMMA3_SMALL = Architecture(
    model_type="gemma3",
    layers=12,
    hidden_size=256,
    intermediate_size=1024,
    heads=4,
    kv_heads=1,
    head_dim=256,
    vocab_size=1024,
    tied_embeddings=True,
    local_attention=LocalAttention(kind="sliding", window=512, global_every=6, global_first=5),
)
GPT_OSS_SMALL = Architecture(
    model_type="gpt_oss",
    layers=4,
    hidden_size=512,
    intermediate_size=512,
    heads=8,
    kv_heads=2,
    head_dim=64,
    vocab_size=1000,
    moe=Moe(experts=8, experts_per_token=4, expert_intermediate_size=512),
    local_attention=LocalAttention(kind="sliding", window=128, global_every=2, global_first=1),
)
QWEN3_NEXT_SMALL = Architecture(
    model_type="qwen3_next",
    layers=8,
    hidden_size=256,
    intermediate_size=512,
    heads=4,
    kv_heads=2,
    head_dim=64,
    vocab_size=1000,
    moe=Moe(
        experts=16,
        experts_per_token=2,
        expert_intermediate_size=256,
        shared_experts=1,
        shared_expert_intermediate_size=256,
    ),
    local_attention=LocalAttention(
        kind="linear",
        global_every=4,
        global_first=3,
        linear=LinearAttention(
            key_heads=2, value_heads=4, key_head_dim=64, value_head_dim=64, conv_kernel=4
        ),
    ),
)


@pytest.mark.parametrize(
    ("arch", "ftype"),
    [
        (SMALL_MOE, "Q4_K_M"),
        (DEEPSEEK_SMALL, "Q4_K_M"),
        (GEMMA3_SMALL, "Q8_0"),
        (GPT_OSS_SMALL, "MXFP4_MOE"),
        (QWEN3_NEXT_SMALL, "Q4_K_M"),
    ],
    ids=lambda x: x if isinstance(x, str) else x.model_type,
)
def test_architecture_survives_a_gguf_round_trip(
    tmp_path: Path, arch: Architecture, ftype: str
) -> None:
    (path,) = write_gguf(tmp_path / f"m-{ftype}.gguf", arch, ftype=ftype)
    g = read_gguf(path)
    assert g.architecture.model_copy(update={"source": None}) == arch
    assert g.layout.total_bytes == estimate_gguf_layout(arch, ftype).total_bytes
    assert g.architecture.global_layer_indices() == arch.global_layer_indices()


def test_gemma3_without_a_pattern_key_uses_llama_cpp_s_period_of_6(tmp_path: Path) -> None:
    # Older Gemma 3 GGUFs carry only the window; llama.cpp hard-codes 5 local : 1 global.
    arch = GEMMA3_SMALL.model_copy(update={"local_attention": None})
    (path,) = write_gguf(
        tmp_path / "g.gguf",
        arch,
        extra={"gemma3.attention.sliding_window": (512, GGUFValueType.UINT32)},
    )
    g = read_gguf(path)
    assert g.architecture.global_layer_indices() == (5, 11)
    local = g.architecture.local_attention
    assert local is not None and local.window == 512


def test_mamba2_hybrid_layers_read_from_the_header(tmp_path: Path) -> None:
    """granitehybrid: per-layer head_count_kv 0 marks the Mamba2 layers; the ssm.* keys size
    them. Read back, the GGUF plans as the recipe it was written from."""
    from toolkit.api.recipes import catalog
    from toolkit.planner.kv import linear_state_bytes

    arch = catalog().models["granite-4.0-h-tiny"].model.architecture
    assert arch is not None
    (path,) = write_gguf(tmp_path / "g.gguf", arch, ftype="Q4_K_M")
    read = read_gguf(path).architecture
    local = read.local_attention
    assert local is not None and local.mamba == arch.local_attention.mamba  # type: ignore[union-attr]
    assert read.global_layer_indices() == (5, 15, 25, 35)
    assert linear_state_bytes(read) == linear_state_bytes(arch) == 36 * 1_612_800
