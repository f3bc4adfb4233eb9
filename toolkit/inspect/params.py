"""Parameter counts from a catalog Architecture, analytically (no weight files needed).

Counts follow the Hugging Face implementations of each model type (the tensors a
checkpoint holds), so totals land within a fraction of a percent of published figures:

- embeddings `vocab × hidden`; output head the same unless tied;
- attention per layer: GQA/MHA `q, k, v, o` projections (+ q/k bias for qwen2, q/k RMS
  norms for qwen3/gemma3/qwen3_next, a doubled `q_proj` for Qwen3-Next's gated attention,
  sinks and biases for gpt-oss); MLA (DeepSeek V3, Kimi K2) `q_a/q_b` (or `q_proj` when
  there is no `q_lora_rank`), `kv_a_proj_with_mqa`, `kv_b_proj`, `o_proj` and their norms;
- linear-attention (Gated DeltaNet) layers: `in_proj_qkvz`, `in_proj_ba`, `conv1d`,
  `A_log`, `dt_bias`, gated norm, `out_proj`; Mamba2 layers: `in_proj` (z, x, B, C, dt),
  `conv1d` with bias, `dt_bias`, `A_log`, `D`, gated norm, `out_proj`;
- FFN: gated (gate, up, down) `3 × hidden × intermediate`; MoE layers: router,
  `experts × 3 × hidden × expert_intermediate`, shared experts (+ Qwen's shared-expert
  gate); dense-first layers (`first_dense_layers`) and `layer_step` (layer i is MoE when
  (i + 1) % layer_step == 0, as Llama 4 interleaves them);
- norms: two per layer (four for Gemma 3) and the final norm.

Multi-token-prediction layers are counted apart (`mtp`): published totals leave them out
(DeepSeek V3: 671B, or 685B with the 14B MTP module) and engines do not load them unless
speculative decoding uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.catalog.schema import Architecture

#: model types whose attention has q/k/v biases (Qwen2 family).
_QKV_BIAS = frozenset({"qwen2", "qwen2_moe"})
#: model types with per-head RMS norms on q and k.
_QK_NORM = frozenset(
    {"qwen3", "qwen3_moe", "qwen3_next", "gemma3", "gemma3_text", "olmo2", "glm4_moe"}
)
#: model types with four norms per layer (pre/post attention and pre/post FFN).
_FOUR_NORMS = frozenset({"gemma2", "gemma3", "gemma3_text"})
#: model types whose full-attention q_proj also produces an output gate (Qwen3-Next).
_GATED_Q = frozenset({"qwen3_next"})
#: model types whose attention and experts carry biases (gpt-oss).
_GPT_OSS = frozenset({"gpt_oss"})
#: model types with a per-expert-set router bias (DeepSeek V3 `e_score_correction_bias`).
_ROUTER_BIAS = frozenset({"deepseek_v3", "deepseek_v32", "kimi_k2", "glm4_moe"})
#: model types with a sigmoid gate on the shared expert (`shared_expert_gate`).
_SHARED_GATE = frozenset({"qwen2_moe", "qwen3_next"})


@dataclass(frozen=True)
class ParamBreakdown:
    """Parameters by part of the model. `total` and `active` exclude `mtp`."""

    embedding: int
    #: 0 when tied to the embeddings.
    output: int
    #: Attention (all kinds) summed over layers, with the attention norms.
    attention: int
    #: Dense FFN layers (every layer of a dense model; the dense-first layers of a MoE).
    dense_ffn: int
    #: Routed-expert weights over all MoE layers.
    routed_experts: int
    #: Shared-expert weights (and their gates) over all MoE layers.
    shared_experts: int
    #: Routers (gate matrices and biases) over all MoE layers.
    routers: int
    #: Layer norms outside attention plus the final norm.
    norms: int
    #: The final norm before the output head.
    final_norm: int
    #: Multi-token-prediction layers (not in total).
    mtp: int
    #: Parameters in each repeating layer, in order (attention + FFN + its norms).
    per_layer: tuple[int, ...]
    #: Routed-expert parameters in each layer (0 for dense layers).
    experts_per_layer: tuple[int, ...]
    #: Routed experts read per token (experts_per_token of them), over all layers.
    active_routed_experts: int

    @property
    def total(self) -> int:
        return self.embedding + self.output + sum(self.per_layer) + self.final_norm

    @property
    def active(self) -> int:
        """Parameters used per token: everything but the routed experts not chosen."""
        return self.total - self.routed_experts + self.active_routed_experts

    @property
    def active_non_embedding(self) -> int:
        """Active parameters without the embedding table (OpenAI's gpt-oss convention)."""
        return self.active - self.embedding

    @property
    def active_transformer(self) -> int:
        """Active parameters without embedding and output head (GLM's and Qwen3-Next's)."""
        return self.active - self.embedding - self.output

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding

    @property
    def total_with_mtp(self) -> int:
        return self.total + self.mtp


def _attention_params(arch: Architecture, *, linear: bool) -> int:
    h = arch.hidden_size
    mt = arch.model_type
    if linear:
        local = arch.local_attention
        assert local is not None
        if local.mamba is not None:
            # Mamba2 mixer (transformers Mamba2Mixer / GraniteMoeHybridMambaLayer): in_proj
            # to z, x, B, C and dt; a depthwise conv1d with bias over x, B, C; dt_bias,
            # A_log and D per head; a gated RMS norm; out_proj.
            m = local.mamba
            inner = m.heads * m.head_dim
            conv_dim = inner + 2 * m.groups * m.state_size
            return (
                h * (inner + conv_dim + m.heads)  # in_proj
                + conv_dim * (m.conv_kernel + 1)  # conv1d weight and bias
                + 3 * m.heads  # dt_bias, A_log, D
                + inner  # norm
                + inner * h  # out_proj
            )
        assert local.linear is not None
        lin = local.linear
        key_dim = lin.key_heads * lin.key_head_dim
        value_dim = lin.value_heads * lin.value_head_dim
        conv_dim = 2 * key_dim + value_dim
        return (
            h * (2 * key_dim + 2 * value_dim)  # in_proj_qkvz
            + h * 2 * lin.value_heads  # in_proj_ba
            + conv_dim * lin.conv_kernel  # conv1d (no bias)
            + 2 * lin.value_heads  # A_log, dt_bias
            + lin.value_head_dim  # gated RMS norm
            + value_dim * h  # out_proj
        )
    if arch.mla is not None:
        mla = arch.mla
        qk_head = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        if mla.q_lora_rank is not None:
            q = h * mla.q_lora_rank + mla.q_lora_rank + mla.q_lora_rank * arch.heads * qk_head
        else:
            q = h * arch.heads * qk_head
        kv = (
            h * (mla.kv_lora_rank + mla.qk_rope_head_dim)
            + mla.kv_lora_rank
            + mla.kv_lora_rank * arch.heads * (mla.qk_nope_head_dim + mla.v_head_dim)
        )
        o = arch.heads * mla.v_head_dim * h
        return q + kv + o
    q_out = arch.heads * arch.head_dim
    kv_out = arch.kv_heads * arch.head_dim
    q_proj = h * q_out * (2 if mt in _GATED_Q else 1)
    params = q_proj + 2 * h * kv_out + q_out * h
    if mt in _QKV_BIAS:
        params += q_out + 2 * kv_out
    if mt in _QK_NORM:
        params += 2 * arch.head_dim
    if mt in _GPT_OSS:
        params += q_out + 2 * kv_out + h + arch.heads  # q/k/v/o biases and attention sinks
    return params


def _ffn_params(hidden: int, intermediate: int) -> int:
    return 3 * hidden * intermediate


def is_moe_layer(arch: Architecture, layer: int) -> bool:
    moe = arch.moe
    if moe is None:
        return False
    return layer >= moe.first_dense_layers and (layer + 1) % moe.layer_step == 0


def param_breakdown(arch: Architecture) -> ParamBreakdown:
    h = arch.hidden_size
    mt = arch.model_type
    embedding = arch.vocab_size * h
    output = 0 if arch.tied_embeddings else arch.vocab_size * h
    norms_per_layer = (4 if mt in _FOUR_NORMS else 2) * h
    linear_layers: set[int] = set()
    local = arch.local_attention
    if local is not None and local.kind == "linear":
        linear_layers = set(range(arch.layers)) - set(arch.global_layer_indices())
    full_attn = _attention_params(arch, linear=False)
    lin_attn = _attention_params(arch, linear=True) if linear_layers else 0
    moe = arch.moe
    expert_one = 0
    shared = 0
    router = 0
    if moe is not None:
        expert_one = _ffn_params(h, moe.expert_intermediate_size)
        if mt in _GPT_OSS:
            expert_one += 2 * moe.expert_intermediate_size + h  # gate_up and down biases
        shared_size = moe.shared_expert_intermediate_size
        if shared_size is None:
            shared_size = moe.expert_intermediate_size * moe.shared_experts
        if moe.shared_experts or moe.shared_expert_intermediate_size:
            shared = _ffn_params(h, shared_size) + (h if mt in _SHARED_GATE else 0)
        router = h * moe.experts
        if mt in _ROUTER_BIAS or mt in _GPT_OSS:
            router += moe.experts
    dense = _ffn_params(h, arch.intermediate_size) if arch.intermediate_size else 0

    attention = dense_ffn = routed = shared_total = routers = 0
    per_layer: list[int] = []
    experts_per_layer: list[int] = []
    active_routed = 0
    for i in range(arch.layers):
        attn = lin_attn if i in linear_layers else full_attn
        if is_moe_layer(arch, i):
            assert moe is not None
            experts = moe.experts * expert_one
            ffn = experts + shared + router
            routed += experts
            shared_total += shared
            routers += router
            active_routed += moe.experts_per_token * expert_one
        else:
            experts = 0
            ffn = dense
            dense_ffn += dense
        attention += attn
        experts_per_layer.append(experts)
        per_layer.append(attn + ffn + norms_per_layer)
    norms = arch.layers * norms_per_layer + h
    mtp = 0
    if arch.mtp_layers:
        # DeepSeek-style MTP block as its checkpoint stores it: a full decoder layer (MoE
        # when the model is MoE), enorm, hnorm, eh_proj (2h → h), a shared-head norm, and
        # its own copies of the embedding and output head.
        last = per_layer[-1] if per_layer else 0
        mtp = arch.mtp_layers * (last + 3 * h + 2 * h * h + 2 * arch.vocab_size * h)
    return ParamBreakdown(
        embedding=embedding,
        output=output,
        attention=attention,
        dense_ffn=dense_ffn,
        routed_experts=routed,
        shared_experts=shared_total,
        routers=routers,
        norms=norms,
        final_norm=h,
        mtp=mtp,
        per_layer=tuple(per_layer),
        experts_per_layer=tuple(experts_per_layer),
        active_routed_experts=active_routed,
    )
