"""GGUF metadata → catalog Architecture, with llama.cpp's own conventions.

Key names are the `gguf` package's (`{arch}.block_count`, `{arch}.attention.head_count_kv`
…). Where llama.cpp hard-codes a fact instead of reading it from the file, this module
does the same and says so:

- sliding-window pattern: `set_swa_pattern(n)` marks layer i sliding when i % n < n - 1
  (src/llama-hparams.cpp); Gemma 2 and gpt-oss use n = 2, Gemma 3 n = 6, Cohere 2 n = 4,
  unless the file has `{arch}.attention.sliding_window_pattern` (an int, or one bool per
  layer, true = sliding). Llama 4 uses chunked attention of 8192 tokens with n = 4.
- Qwen3-Next: layer i keeps a KV cache when (i + 1) % full_attention_interval == 0, the
  others are Gated DeltaNet layers sized by the `{arch}.ssm.*` keys.
- Granite 4.0 H (granitehybrid): a layer is a Mamba2 layer when its per-layer
  `attention.head_count_kv` is 0 (`hparams.is_recr`), sized by the `{arch}.ssm.*` keys
  (time_step_rank = SSM heads, inner_size = heads × head_dim).
- DeepSeek 2/3 (MLA): `key_length_mla` / `value_length_mla` hold the per-head dims when
  the file stores the absorbed form (key_length 576); older files only have key_length.
- next-token-prediction blocks (`{arch}.nextn_predict_layers`) are counted in block_count
  but not run; they are reported apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from toolkit.catalog.schema import (
    Architecture,
    LinearAttention,
    LocalAttention,
    Mamba,
    Mla,
    Moe,
)
from toolkit.errors import UsageError

if TYPE_CHECKING:
    from toolkit.inspect.gguf import GgufTensor

#: general.architecture → HF model_type (the catalog's names).
_MODEL_TYPE = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "qwen3next": "qwen3_next",
    "gpt-oss": "gpt_oss",
    "glm4moe": "glm4_moe",
    "minimax-m2": "minimax_m2",
    "granitehybrid": "granitemoehybrid",
}
#: llama.cpp's hard-coded sliding-window period per architecture.
_SWA_PERIOD = {"gemma2": 2, "gemma3": 6, "gpt-oss": 2, "cohere2": 4}


def _scalar(value: Any) -> Any:
    """Per-layer arrays → their largest value (the schema has one number per model)."""
    if isinstance(value, list):
        nums = [v for v in value if isinstance(v, (int, float)) and v]
        return max(nums) if nums else None
    return value


def _get(meta: dict[str, Any], arch: str, key: str) -> Any:
    return _scalar(meta.get(f"{arch}.{key}"))


def _int(meta: dict[str, Any], arch: str, key: str) -> int | None:
    v = _get(meta, arch, key)
    return int(v) if isinstance(v, (int, float)) and v else None


def _mamba2(arch: str, meta: dict[str, Any], layers: int) -> LocalAttention | None:
    """Mamba2 hybrids (granitehybrid and the like): a layer is recurrent when its entry in
    the per-layer `attention.head_count_kv` array is 0 (llama.cpp's is_recr rule)."""
    kv = meta.get(f"{arch}.attention.head_count_kv")
    if not isinstance(kv, list) or 0 not in kv[:layers]:
        return None
    heads = _int(meta, arch, "ssm.time_step_rank")
    inner = _int(meta, arch, "ssm.inner_size")
    state = _int(meta, arch, "ssm.state_size")
    kernel = _int(meta, arch, "ssm.conv_kernel")
    groups = _int(meta, arch, "ssm.group_count") or 1
    if not (heads and inner and state and kernel):
        raise UsageError(f"{arch} GGUF marks recurrent layers but lacks its ssm.* keys")
    attn = tuple(i for i, n in enumerate(kv[:layers]) if n)
    m = Mamba(
        heads=heads, head_dim=inner // heads, state_size=state, groups=groups, conv_kernel=kernel
    )
    return LocalAttention(kind="linear", global_layers=attn, mamba=m)


def _local_attention(arch: str, meta: dict[str, Any], layers: int) -> LocalAttention | None:
    if arch == "granitehybrid":
        return _mamba2(arch, meta, layers)
    if arch == "qwen3next":
        n = _int(meta, arch, "full_attention_interval") or 4
        inner = _int(meta, arch, "ssm.inner_size")
        v_heads = _int(meta, arch, "ssm.time_step_rank")
        k_heads = _int(meta, arch, "ssm.group_count")
        k_dim = _int(meta, arch, "ssm.state_size")
        kernel = _int(meta, arch, "ssm.conv_kernel")
        if not (inner and v_heads and k_heads and k_dim and kernel):
            raise UsageError("qwen3next GGUF lacks its ssm.* keys")
        lin = LinearAttention(
            key_heads=k_heads,
            value_heads=v_heads,
            key_head_dim=k_dim,
            value_head_dim=inner // v_heads,
            conv_kernel=kernel,
        )
        return LocalAttention(kind="linear", global_every=n, global_first=n - 1, linear=lin)
    if arch == "llama4":
        window = meta.get(f"{arch}.attention.sliding_window")
        if window == 0:
            return None
        return LocalAttention(kind="chunked", window=8192, global_every=4, global_first=3)
    window = _int(meta, arch, "attention.sliding_window")
    if not window:
        return None
    pattern = meta.get(f"{arch}.attention.sliding_window_pattern", _SWA_PERIOD.get(arch))
    if pattern is None:
        # Mistral-style: every layer slides.
        return LocalAttention(kind="sliding", window=window, global_layers=())
    if isinstance(pattern, Sequence) and not isinstance(pattern, str):
        globals_ = tuple(i for i, sliding in enumerate(pattern) if not sliding and i < layers)
        return LocalAttention(kind="sliding", window=window, global_layers=globals_)
    n = int(pattern)
    if n == 0:
        return LocalAttention(kind="sliding", window=window, global_layers=())
    if n == 1:
        return None
    return LocalAttention(kind="sliding", window=window, global_every=n, global_first=n - 1)


def architecture_from_gguf(
    arch: str, meta: dict[str, Any], tensors: Sequence[GgufTensor]
) -> tuple[Architecture, int]:
    """(Architecture, next-token-prediction layers) from a GGUF header."""
    names = {t.name: t for t in tensors}
    blocks = _int(meta, arch, "block_count")
    hidden = _int(meta, arch, "embedding_length")
    heads = _int(meta, arch, "attention.head_count")
    if not (blocks and hidden and heads):
        raise UsageError(
            f"GGUF ({arch}) lacks block_count / embedding_length / head_count",
            hint="the file's metadata is incomplete",
        )
    mtp = _int(meta, arch, "nextn_predict_layers") or 0
    layers = blocks - mtp
    kv_heads = _int(meta, arch, "attention.head_count_kv") or heads
    head_dim = _int(meta, arch, "attention.key_length") or hidden // heads
    embd = names.get("token_embd.weight")
    vocab = embd.shape[1] if embd is not None and len(embd.shape) == 2 else None
    if vocab is None:
        vocab = _int(meta, arch, "vocab_size")
    if vocab is None:
        toks = meta.get("tokenizer.ggml.tokens")
        vocab = getattr(toks, "length", None) or (len(toks) if isinstance(toks, list) else None)
    if not vocab:
        raise UsageError("GGUF has no token_embd tensor and no vocabulary size")
    model_type = _MODEL_TYPE.get(arch, arch.replace("-", "_"))

    mla = None
    kv_lora = _int(meta, arch, "attention.kv_lora_rank")
    if kv_lora:
        rope = _int(meta, arch, "rope.dimension_count") or 64
        k_len = _int(meta, arch, "attention.key_length_mla") or head_dim
        v_len = _int(meta, arch, "attention.value_length_mla") or _int(
            meta, arch, "attention.value_length"
        )
        mla = Mla(
            kv_lora_rank=kv_lora,
            qk_rope_head_dim=rope,
            qk_nope_head_dim=k_len - rope,
            v_head_dim=v_len or k_len - rope,
            q_lora_rank=_int(meta, arch, "attention.q_lora_rank"),
        )
        kv_heads = heads
        head_dim = k_len
        if arch == "deepseek2":
            gating = _int(meta, arch, "expert_gating_func")
            model_type = "deepseek_v3" if gating == 2 else "deepseek_v2"

    moe = None
    experts = _int(meta, arch, "expert_count")
    if experts:
        used = _int(meta, arch, "expert_used_count") or 1
        exp_ff = _int(meta, arch, "expert_feed_forward_length")
        if exp_ff is None:
            gate = next((t for t in tensors if t.name.endswith("ffn_gate_exps.weight")), None)
            exp_ff = gate.shape[1] if gate is not None else _int(meta, arch, "feed_forward_length")
        if not exp_ff:
            raise UsageError("MoE GGUF without an expert FFN size")
        shared = _int(meta, arch, "expert_shared_count") or 0
        shared_ff = _int(meta, arch, "expert_shared_feed_forward_length")
        if not shared and any("_shexp." in t.name for t in tensors):
            shared = 1
        moe = Moe(
            experts=experts,
            experts_per_token=used,
            expert_intermediate_size=exp_ff,
            shared_experts=shared,
            shared_expert_intermediate_size=shared_ff if shared else None,
            first_dense_layers=_int(meta, arch, "leading_dense_block_count") or 0,
            layer_step=_int(meta, arch, "interleave_moe_layer_step") or 1,
        )
        if arch == "llama" and model_type == "llama":
            model_type = "mixtral"

    return (
        Architecture(
            model_type=model_type,
            layers=layers,
            hidden_size=hidden,
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            vocab_size=vocab,
            tied_embeddings="output.weight" not in names,
            intermediate_size=_int(meta, arch, "feed_forward_length"),
            moe=moe,
            mla=mla,
            local_attention=_local_attention(arch, meta, layers),
            mtp_layers=mtp,
            source="GGUF header",
        ),
        mtp,
    )


def context_from_gguf(arch: str, meta: dict[str, Any]) -> int | None:
    v = meta.get(f"{arch}.context_length")
    return int(v) if isinstance(v, int) and v > 0 else None
