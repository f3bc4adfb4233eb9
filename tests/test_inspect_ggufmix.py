"""GGUF sizes simulated from the architecture (llama-quantize's rules) vs published files."""

from __future__ import annotations

import pytest
from test_inspect_params import GPT_OSS_20B, GPT_OSS_120B, LLAMA31_8B, QWEN3_CODER_30B

from toolkit.catalog.schema import Architecture, Moe
from toolkit.errors import UsageError
from toolkit.inspect.ggufmix import estimate_gguf_layout, gguf_quant_tensors
from toolkit.inspect.quant import bits_per_weight

QWEN3_235B = Architecture(
    model_type="qwen3_moe",
    layers=94,
    hidden_size=4096,
    intermediate_size=12288,
    heads=64,
    kv_heads=4,
    head_dim=128,
    vocab_size=151936,
    moe=Moe(experts=128, experts_per_token=8, expert_intermediate_size=1536),
)
DEVSTRAL_SMALL_2 = Architecture(
    model_type="mistral",
    layers=40,
    hidden_size=5120,
    intermediate_size=32768,
    heads=32,
    kv_heads=8,
    head_dim=128,
    vocab_size=131072,
)

GIB = 2**30
# (architecture, file type, published bytes, tolerance, source). The files also hold
# the tokenizer metadata (a few MB), which the weight layout leaves out.
PUBLISHED = {
    "qwen3-coder-30b q4_k_m": (
        QWEN3_CODER_30B,
        "Q4_K_M",
        18_556_689_568,
        0.0005,
        "LlamaBarn catalog (unsloth)",
    ),
    "qwen3-coder-30b q8_0": (
        QWEN3_CODER_30B,
        "Q8_0",
        32_483_935_392,
        0.0005,
        "LlamaBarn catalog (unsloth)",
    ),
    "qwen3-235b q4_k_m": (QWEN3_235B, "Q4_K_M", 142_154_074_880, 0.0005, "unsloth, 3 parts"),
    "qwen3-235b q8_0": (QWEN3_235B, "Q8_0", 249_940_106_336, 0.0005, "unsloth, 6 parts"),
    "devstral-small-2 q8_0": (
        DEVSTRAL_SMALL_2,
        "Q8_0",
        25_055_308_352,
        0.001,
        "llama.pages catalog (ggml-org)",
    ),
    "devstral-small-2 q4_k_m": (
        DEVSTRAL_SMALL_2,
        "Q4_K_M",
        14_334_446_752,
        0.001,
        "llama.pages catalog (unsloth)",
    ),
    "gpt-oss-20b mxfp4": (GPT_OSS_20B, "MXFP4_MOE", 12_109_566_560, 0.002, "ggml-org"),
    "gpt-oss-120b mxfp4": (GPT_OSS_120B, "MXFP4_MOE", 63_387_346_464, 0.001, "ggml-org"),
    # llama-quantize's own table, Llama-3-8B, sizes rounded to 0.01 GiB
    "llama-3-8b q4_k_m": (LLAMA31_8B, "Q4_K_M", 4.58 * GIB, 0.003, "quantize.cpp table"),
    "llama-3-8b q5_k_m": (LLAMA31_8B, "Q5_K_M", 5.33 * GIB, 0.003, "quantize.cpp table"),
    "llama-3-8b q6_k": (LLAMA31_8B, "Q6_K", 6.14 * GIB, 0.003, "quantize.cpp table"),
    "llama-3-8b q3_k_m": (LLAMA31_8B, "Q3_K_M", 3.74 * GIB, 0.003, "quantize.cpp table"),
    "llama-3-8b q2_k": (LLAMA31_8B, "Q2_K", 2.96 * GIB, 0.003, "quantize.cpp table"),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_simulated_gguf_matches_published_size(name: str) -> None:
    arch, ftype, size, tol, source = PUBLISHED[name]
    got = estimate_gguf_layout(arch, ftype).total_bytes
    if "llama-3-8b" not in name:  # that table rounds to 0.01 GiB
        assert got <= size, "weights alone cannot exceed the file"
    assert abs(got / size - 1) < tol, f"{name}: {got:,} vs {size:,.0f} ({source})"


def test_q4_k_m_mixture_follows_llama_quantize() -> None:
    types = {spec.name: t for spec, t, _ in gguf_quant_tensors(QWEN3_CODER_30B, "Q4_K_M")}
    assert types["output.weight"] == "Q6_K"
    assert types["token_embd.weight"] == "Q4_K"
    assert types["blk.0.ffn_gate_inp.weight"] == "F32"
    assert types["blk.0.attn_norm.weight"] == "F32"
    # use_more_bits: first/last eighth of the layers and every third in between
    assert types["blk.0.attn_v.weight"] == "Q6_K"
    assert types["blk.6.attn_v.weight"] == "Q4_K"
    assert types["blk.8.ffn_down_exps.weight"] == "Q6_K"
    assert types["blk.47.ffn_down_exps.weight"] == "Q6_K"
    assert types["blk.10.ffn_down_exps.weight"] == "Q4_K"
    assert types["blk.10.ffn_gate_exps.weight"] == "Q4_K"


def test_gguf_estimate_beats_the_average_bits_per_weight() -> None:
    # The mixture depends on the model: 4.86 bits for Qwen3-Coder-30B's Q4_K_M.
    layout = estimate_gguf_layout(QWEN3_CODER_30B, "Q4_K_M")
    from toolkit.inspect.params import param_breakdown

    bits = layout.total_bytes * 8 / param_breakdown(QWEN3_CODER_30B).total
    assert 4.8 < bits < 4.9
    assert abs(bits_per_weight("q4_k_m") / bits - 1) < 0.02


def test_unknown_file_type_names_the_known_ones() -> None:
    with pytest.raises(UsageError) as err:
        estimate_gguf_layout(QWEN3_CODER_30B, "Q9_Z")
    assert err.value.hint is not None and "Q4_K_M" in err.value.hint


def test_moe_layout_separates_experts() -> None:
    layout = estimate_gguf_layout(QWEN3_CODER_30B, "Q4_K_M")
    assert all(e > 0 for e in layout.expert_bytes_per_layer)
    experts = sum(layout.expert_bytes_per_layer)
    assert experts / layout.total_bytes > 0.9
    assert layout.active_bytes is not None and layout.active_bytes < layout.total_bytes / 5


def test_block_table_agrees_with_the_gguf_package() -> None:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    from toolkit.inspect.ggufmix import GGML_BLOCKS

    for name, block in GGML_BLOCKS.items():
        assert GGML_QUANT_SIZES[GGMLQuantizationType[name]] == block, name


def test_estimating_a_gguf_does_not_import_numpy() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from toolkit.inspect.ggufmix import estimate_gguf_layout\n"
        "from toolkit.catalog.schema import Architecture\n"
        "a = Architecture(model_type='llama', layers=2, hidden_size=256, heads=4, kv_heads=4,"
        " head_dim=64, vocab_size=1000, intermediate_size=512)\n"
        "estimate_gguf_layout(a, 'Q4_K_M')\n"
        "assert 'numpy' not in sys.modules, 'numpy imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cpu_repack_bytes_match_llama_cpp_s_repack_buffer() -> None:
    """Measured with scripts/bench/planner_accuracy.py (llama.cpp 0c1e570, x86-64 AVX2):
    CPU_REPACK model buffer 46.12 MiB for the MoE Q4_K_M case, 19.41 MiB (40.29 logged
    in all, 20.88 mapped) for the 48-layer Q4_0 case, none for Q8_0."""
    moe = Architecture(
        model_type="qwen3_moe",
        layers=8,
        hidden_size=512,
        intermediate_size=1024,
        heads=8,
        kv_heads=2,
        head_dim=64,
        vocab_size=8192,
        moe=Moe(experts=8, experts_per_token=2, expert_intermediate_size=1024),
    )
    dense = Architecture(
        model_type="llama",
        layers=48,
        hidden_size=256,
        intermediate_size=768,
        heads=8,
        kv_heads=2,
        head_dim=32,
        vocab_size=4096,
    )
    mib = 2**20
    assert round(estimate_gguf_layout(moe, "Q4_K_M").repack_bytes / mib, 2) == 46.12
    q4 = estimate_gguf_layout(dense, "Q4_0")
    assert round(q4.repack_bytes / mib, 2) == 19.41
    assert round(q4.total_bytes / mib, 2) == 20.88
    assert estimate_gguf_layout(dense, "Q8_0").repack_bytes == 0
    # the token embedding is read by row, never repacked
    assert len(q4.repack_bytes_per_layer) == 48 and q4.repack_bytes_other == 0
