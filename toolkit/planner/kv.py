"""KV-cache size by attention type. Pure arithmetic on the recipe's architecture.

- full attention (MHA/GQA): 2 (K and V) × kv_heads × head_dim × bytes, per cached layer
- MLA (DeepSeek V3 family, Kimi K2): (kv_lora_rank + qk_rope_head_dim) × bytes per layer,
  plus the sparse-attention indexer key (DeepSeek V3.2) when the model has one
- sliding-window / chunked layers: like full attention but at most `window` tokens
- linear-attention layers (Gated DeltaNet): no per-token cache, a fixed state per sequence
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.catalog.schema import Architecture

#: Bytes per element of each KV dtype. q8_0 / q4_0 are llama.cpp block types:
#: 34 bytes per 32 values and 18 bytes per 32 values.
KV_DTYPE_BYTES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
}


def _dtype_bytes(kv_dtype: str) -> float:
    try:
        return KV_DTYPE_BYTES[kv_dtype]
    except KeyError:
        raise ValueError(f"unknown KV dtype {kv_dtype!r}") from None


def _per_layer_token_elems(arch: Architecture) -> int:
    """Cached elements per token in one attention layer."""
    if arch.mla is not None:
        return arch.mla.kv_lora_rank + arch.mla.qk_rope_head_dim + (arch.index_head_dim or 0)
    return 2 * arch.kv_heads * arch.head_dim


def global_kv_bytes_per_token(arch: Architecture, kv_dtype: str = "f16") -> float:
    """Bytes per token of the layers that keep a full-context cache (the recipe `derived`)."""
    n_global = len(arch.global_layer_indices())
    return n_global * _per_layer_token_elems(arch) * _dtype_bytes(kv_dtype)


def local_kv_bytes(arch: Architecture, ctx: int, kv_dtype: str = "f16") -> float:
    """Bytes per sequence held by sliding-window/chunked layers at context `ctx`."""
    local = arch.local_attention
    if local is None or local.kind == "linear":
        return 0.0
    n_local = arch.layers - len(arch.global_layer_indices())
    assert local.window is not None
    tokens = min(ctx, local.window)
    return n_local * tokens * _per_layer_token_elems(arch) * _dtype_bytes(kv_dtype)


def linear_layer_state_bytes(arch: Architecture, dtype_bytes: float = 4.0) -> float:
    """Fixed state per sequence of ONE linear layer (0 for models without them).

    Gated DeltaNet: a (value_heads × key_head_dim × value_head_dim) recurrent state and a
    (conv_kernel − 1) window of the q/k/v projections. Mamba2: a (heads × head_dim ×
    state_size) SSM state and a (conv_kernel − 1) window of heads·head_dim +
    2·groups·state_size channels (llama.cpp: n_embd_s and n_embd_r, src/llama-hparams.cpp).
    """
    local = arch.local_attention
    if local is None or local.kind != "linear":
        return 0.0
    if local.mamba is not None:
        m = local.mamba
        inner = m.heads * m.head_dim
        return (
            inner * m.state_size + (m.conv_kernel - 1) * (inner + 2 * m.groups * m.state_size)
        ) * dtype_bytes
    lin = local.linear
    assert lin is not None
    recurrent = lin.value_heads * lin.key_head_dim * lin.value_head_dim
    conv_dim = 2 * lin.key_heads * lin.key_head_dim + lin.value_heads * lin.value_head_dim
    conv = (lin.conv_kernel - 1) * conv_dim
    return (recurrent + conv) * dtype_bytes


def linear_state_bytes(arch: Architecture, state_dtype_bytes: float = 4.0) -> float:
    """Fixed state per sequence of all the linear layers (f32 in llama.cpp)."""
    n_linear = arch.layers - len(arch.global_layer_indices())
    return n_linear * linear_layer_state_bytes(arch, state_dtype_bytes)


def kv_bytes(arch: Architecture, ctx: int, sequences: int = 1, kv_dtype: str = "f16") -> int:
    """Total KV cache (and fixed state) for `sequences` sequences of `ctx` tokens."""
    per_seq = global_kv_bytes_per_token(arch, kv_dtype) * ctx + local_kv_bytes(arch, ctx, kv_dtype)
    per_seq += linear_state_bytes(arch)
    return int(per_seq * sequences)
