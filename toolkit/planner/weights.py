"""Weight bytes from the architecture when no file has been read (`WeightLayout.exact=False`).

Parameters are counted per layer (attention or MLA or linear attention, dense FFN or MoE
experts + shared experts + router), then the repeating layers are scaled so the total
matches the published parameter count when the recipe gives one. Linear layers are stored
at the format's bits per weight; embeddings and the output head at 16 bit in safetensors
checkpoints (FP8/AWQ/GPTQ/MXFP4/NVFP4 keep them unquantised) and at the quant's bits in
GGUF estimates. When the variant's download size is known, the layout is scaled to it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from toolkit.catalog.schema import Architecture
from toolkit.inspect.layout import WeightLayout
from toolkit.planner.quant import QuantInfo


@dataclass(frozen=True)
class LayerParams:
    """Parameters of one repeating layer."""

    shared: int  # attention, norms, router, shared experts, dense FFN
    experts: int  # routed experts (all of them)
    active_experts: int  # the experts_per_token read per token


def _attention_params(arch: Architecture, linear: bool) -> int:
    h = arch.hidden_size
    if linear and arch.local_attention is not None and arch.local_attention.linear is not None:
        lin = arch.local_attention.linear
        qkvz = h * (2 * lin.key_heads * lin.key_head_dim + 2 * lin.value_heads * lin.value_head_dim)
        ba = h * 2 * lin.value_heads
        out = lin.value_heads * lin.value_head_dim * h
        conv = lin.conv_kernel * (
            2 * lin.key_heads * lin.key_head_dim + lin.value_heads * lin.value_head_dim
        )
        return qkvz + ba + out + conv
    if arch.mla is not None:
        m = arch.mla
        qk_head = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:
            q = h * m.q_lora_rank + m.q_lora_rank * arch.heads * qk_head
        else:
            q = h * arch.heads * qk_head
        kv = h * (m.kv_lora_rank + m.qk_rope_head_dim)
        kv += m.kv_lora_rank * arch.heads * (m.qk_nope_head_dim + m.v_head_dim)
        o = arch.heads * m.v_head_dim * h
        return q + kv + o
    q = h * arch.heads * arch.head_dim
    # Qwen3-Next's full-attention layers gate the output: q projection is doubled.
    if arch.model_type == "qwen3_next":
        q *= 2
    kv = 2 * h * arch.kv_heads * arch.head_dim
    o = arch.heads * arch.head_dim * h
    return q + kv + o


def layer_params(arch: Architecture) -> list[LayerParams]:
    h = arch.hidden_size
    global_layers = set(arch.global_layer_indices())
    linear_kind = arch.local_attention is not None and arch.local_attention.kind == "linear"
    out: list[LayerParams] = []
    for i in range(arch.layers):
        attn = _attention_params(arch, linear_kind and i not in global_layers)
        norms = 2 * h
        moe = arch.moe
        is_moe = (
            moe is not None
            and i >= moe.first_dense_layers
            and (i - moe.first_dense_layers) % moe.layer_step == 0
        )
        if moe is not None and is_moe:
            per_expert = 3 * h * moe.expert_intermediate_size
            shared_inter = moe.shared_expert_intermediate_size or (
                moe.expert_intermediate_size * moe.shared_experts
            )
            shared = 3 * h * shared_inter if moe.shared_experts else 0
            router = h * moe.experts
            out.append(
                LayerParams(
                    shared=attn + norms + shared + router,
                    experts=moe.experts * per_expert,
                    active_experts=moe.experts_per_token * per_expert,
                )
            )
        else:
            ffn = 3 * h * (arch.intermediate_size or 4 * h)
            out.append(LayerParams(shared=attn + norms + ffn, experts=0, active_experts=0))
    return out


def param_counts(arch: Architecture) -> tuple[int, int]:
    """(total, active) parameters from the architecture alone (MTP layers excluded)."""
    layers = layer_params(arch)
    emb = arch.vocab_size * arch.hidden_size
    head = 0 if arch.tied_embeddings else emb
    total = sum(lp.shared + lp.experts for lp in layers) + emb + head + arch.hidden_size
    active = sum(lp.shared + lp.active_experts for lp in layers) + emb + head
    return total, active


def estimate_layout(
    arch: Architecture,
    info: QuantInfo,
    *,
    params_total: float | None = None,
    size_bytes: int | None = None,
) -> WeightLayout:
    """A WeightLayout from the architecture at the quant's bits per weight.

    `params_total` (published) rescales the repeating layers; `size_bytes` (the real
    download size) rescales everything so the total matches the files.
    """
    layers = layer_params(arch)
    emb_params = arch.vocab_size * arch.hidden_size
    head_params = 0 if arch.tied_embeddings else emb_params
    layer_total = sum(lp.shared + lp.experts for lp in layers)
    scale = 1.0
    if params_total:
        target_layers = params_total - emb_params - head_params
        if target_layers > 0 and layer_total > 0:
            scale = target_layers / layer_total
    lbits = info.layer_bpw
    ebits = info.embed_bpw
    sbits = ebits if info.experts_only else lbits
    per_layer = [(lp.shared * sbits + lp.experts * lbits) * scale / 8 for lp in layers]
    experts = [lp.experts * scale * lbits / 8 for lp in layers]
    active = [(lp.shared * sbits + lp.active_experts * lbits) * scale / 8 for lp in layers]
    emb = emb_params * ebits / 8
    head = head_params * ebits / 8
    total = sum(per_layer) + emb + head
    fix = size_bytes / total if size_bytes else 1.0
    per_layer_b = tuple(int(b * fix) for b in per_layer)
    expert_b = tuple(int(b * fix) for b in experts)
    emb_b, head_b = int(emb * fix), int(head * fix)
    # Decode reads the output head (or tied embedding) fully, one embedding row only.
    active_b = int((sum(active) + (head or emb)) * fix)
    total_b = sum(per_layer_b) + emb_b + head_b
    return WeightLayout(
        total_bytes=total_b,
        per_layer_bytes=per_layer_b,
        expert_bytes_per_layer=expert_b,
        embedding_bytes=emb_b,
        output_bytes=head_b,
        exact=False,
        dtype_bytes={info.key: total_b},
        active_bytes=active_b,
    )


def vllm_padded(arch: Architecture, layout: WeightLayout, info: QuantInfo) -> WeightLayout:
    """The layout vLLM holds in GPU memory. MXFP4 MoE kernels (Marlin / Triton) pad the
    expert intermediate size to a multiple of 256 (gpt-oss: 2880 → 3072), inferred from
    vLLM 0.14.1 logging 64.38 GiB for gpt-oss-120b (this formula: 64.4 GiB)."""
    if info.key != "mxfp4" or arch.moe is None:
        return layout
    inter = arch.moe.expert_intermediate_size
    factor = (-(-inter // 256) * 256) / inter
    if factor == 1.0:
        return layout
    extra = [int(e * (factor - 1)) for e in layout.expert_bytes_per_layer]
    per_layer = tuple(b + x for b, x in zip(layout.per_layer_bytes, extra, strict=True))
    experts = tuple(e + x for e, x in zip(layout.expert_bytes_per_layer, extra, strict=True))
    return replace(
        layout,
        total_bytes=layout.total_bytes + sum(extra),
        per_layer_bytes=per_layer,
        expert_bytes_per_layer=experts,
    )
