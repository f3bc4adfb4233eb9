"""Hugging Face `config.json` → catalog Architecture, context length and weight format.

Handles the nesting of multimodal wrappers (`text_config`: Gemma 3, Llama 4, Mistral 3)
and the key names each family uses:

- experts: `num_experts` (Qwen), `n_routed_experts` (DeepSeek, GLM), `num_local_experts`
  (Mixtral, gpt-oss, Llama 4); expert size `moe_intermediate_size`, or
  `intermediate_size` where the experts use it (Mixtral, gpt-oss, Llama 4, whose dense
  layers use `intermediate_size_mlp`);
- shared experts: `n_shared_experts` (DeepSeek, GLM), `shared_expert_intermediate_size`
  (Qwen2-MoE, Qwen3-Next: one shared expert of that size), `num_shared_experts` (Llama 4);
- dense-first layers `first_k_dense_replace`; MoE every Nth layer
  `interleave_moe_layer_step` (Llama 4) / `decoder_sparse_step` (Qwen);
- attention kinds: `layer_types` (sliding_attention / full_attention /
  linear_attention / chunked_attention) when present, else `sliding_window` with
  `sliding_window_pattern` (Gemma 3), `full_attention_interval` (Qwen3-Next),
  `attention_chunk_size` + `no_rope_layers` (Llama 4);
- MLA: `kv_lora_rank`, `q_lora_rank`, `qk_rope_head_dim`, `qk_nope_head_dim`, `v_head_dim`.
"""

from __future__ import annotations

from typing import Any

from toolkit.catalog.schema import (
    Architecture,
    Format,
    LinearAttention,
    LocalAttention,
    Mla,
    Moe,
)
from toolkit.errors import UsageError

#: Families whose config leaves tie_word_embeddings out because the class default is True.
_TIED_BY_DEFAULT = ("gemma",)


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's config: `text_config` merged over the wrapper when present."""
    inner = config.get("text_config")
    if isinstance(inner, dict):
        merged = {k: v for k, v in config.items() if k != "text_config"}
        merged.update(inner)
        merged.setdefault("quantization_config", config.get("quantization_config"))
        return merged
    return config


def _model_type(cfg: dict[str, Any]) -> str:
    mt = str(cfg.get("model_type") or "")
    if not mt:
        raise UsageError("config.json has no model_type", hint="is this a transformers model?")
    return mt.removesuffix("_text")


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        v = cfg.get(k)
        if v is not None:
            return v
    return None


def _moe(cfg: dict[str, Any], mt: str) -> Moe | None:
    experts = _first(cfg, "num_experts", "n_routed_experts", "num_local_experts")
    if not experts:
        return None
    # Mixtral, gpt-oss and Llama 4 size their experts with intermediate_size.
    size = _first(cfg, "moe_intermediate_size", "intermediate_size")
    shared = int(_first(cfg, "n_shared_experts", "num_shared_experts") or 0)
    shared_size = cfg.get("shared_expert_intermediate_size")
    if shared_size and not shared:
        shared = 1
    step = int(_first(cfg, "interleave_moe_layer_step", "decoder_sparse_step") or 1)
    return Moe(
        experts=int(experts),
        experts_per_token=int(
            _first(cfg, "num_experts_per_tok", "num_experts_per_token", "experts_per_token") or 1
        ),
        expert_intermediate_size=int(size),
        shared_experts=shared,
        shared_expert_intermediate_size=int(shared_size) if shared_size else None,
        first_dense_layers=int(cfg.get("first_k_dense_replace") or 0),
        layer_step=step,
    )


def _local(cfg: dict[str, Any], mt: str, layers: int) -> LocalAttention | None:
    types = cfg.get("layer_types")
    window = cfg.get("sliding_window")
    lin = None
    if "linear_num_value_heads" in cfg:
        lin = LinearAttention(
            key_heads=int(cfg["linear_num_key_heads"]),
            value_heads=int(cfg["linear_num_value_heads"]),
            key_head_dim=int(cfg["linear_key_head_dim"]),
            value_head_dim=int(cfg["linear_value_head_dim"]),
            conv_kernel=int(cfg.get("linear_conv_kernel_dim") or 4),
        )
    if isinstance(types, list) and types:
        globals_ = tuple(i for i, t in enumerate(types[:layers]) if t == "full_attention")
        kinds = {t for t in types if t != "full_attention"}
        if not kinds:
            return None
        if "linear_attention" in kinds and lin is not None:
            return LocalAttention(kind="linear", global_layers=globals_, linear=lin)
        if "chunked_attention" in kinds:
            chunk = int(cfg.get("attention_chunk_size") or 8192)
            return LocalAttention(kind="chunked", window=chunk, global_layers=globals_)
        if window:
            return LocalAttention(kind="sliding", window=int(window), global_layers=globals_)
        return None
    if lin is not None:
        n = int(cfg.get("full_attention_interval") or 4)
        return LocalAttention(kind="linear", global_every=n, global_first=n - 1, linear=lin)
    if mt == "llama4" and cfg.get("attention_chunk_size"):
        nope = cfg.get("no_rope_layers")
        chunk = int(cfg["attention_chunk_size"])
        if isinstance(nope, list) and nope:
            globals_ = tuple(i for i, use_rope in enumerate(nope[:layers]) if not use_rope)
            return LocalAttention(kind="chunked", window=chunk, global_layers=globals_)
        return LocalAttention(kind="chunked", window=chunk, global_every=4, global_first=3)
    if window and (mt.startswith("gemma") or cfg.get("use_sliding_window", True)):
        pattern = cfg.get("sliding_window_pattern")
        if pattern is None and mt == "gemma3":
            pattern = 6
        if pattern is None and mt == "gemma2":
            pattern = 2
        if pattern:
            n = int(pattern)
            return LocalAttention(
                kind="sliding", window=int(window), global_every=n, global_first=n - 1
            )
        # A window on every layer only when the model really uses it.
        uses = cfg.get("use_sliding_window") or mt in ("mistral", "mixtral")
        max_pos = int(cfg.get("max_position_embeddings") or 0)
        if uses and int(window) < max_pos:
            return LocalAttention(kind="sliding", window=int(window), global_layers=())
    return None


def architecture_from_config(config: dict[str, Any]) -> Architecture:
    """The Architecture config.json describes. Anything malformed — not an object, a
    count that is not a number, zero heads, sizes beyond the schema's bounds — is one
    UsageError naming config.json, never a traceback."""
    from pydantic import ValidationError

    if not isinstance(config, dict):
        raise UsageError(
            f"config.json is a JSON {type(config).__name__}, not an object",
            hint="point deploy at a Hugging Face model folder (config.json + safetensors)",
        )
    try:
        return _architecture(config)
    except UsageError:
        raise
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "architecture"
        raise UsageError(
            f"config.json: {where}: {err['msg']}", hint="check the model's config.json"
        ) from None
    except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError) as exc:
        raise UsageError(
            f"config.json has a value the planner cannot use ({type(exc).__name__}: {exc})",
            hint="check the model's config.json (layers, hidden size, heads must be numbers > 0)",
        ) from None


def _architecture(config: dict[str, Any]) -> Architecture:
    cfg = text_config(config)
    mt = _model_type(cfg)
    try:
        layers = int(cfg["num_hidden_layers"])
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        vocab = int(cfg["vocab_size"])
    except KeyError as exc:
        raise UsageError(
            f"config.json lacks {exc}", hint="the planner needs layers, hidden size, heads, vocab"
        ) from None
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    mla = None
    if cfg.get("kv_lora_rank"):
        rope = int(cfg.get("qk_rope_head_dim") or 64)
        nope = int(cfg.get("qk_nope_head_dim") or 128)
        mla = Mla(
            kv_lora_rank=int(cfg["kv_lora_rank"]),
            qk_rope_head_dim=rope,
            qk_nope_head_dim=nope,
            v_head_dim=int(cfg.get("v_head_dim") or nope),
            q_lora_rank=int(cfg["q_lora_rank"]) if cfg.get("q_lora_rank") else None,
        )
        kv_heads = heads
        head_dim = rope + nope
    moe = _moe(cfg, mt)
    dense = _first(cfg, "intermediate_size_mlp", "intermediate_size")
    tied = cfg.get("tie_word_embeddings")
    if tied is None:
        tied = config.get("tie_word_embeddings")
    if tied is None:
        tied = mt.startswith(_TIED_BY_DEFAULT)
    mtp = int(_first(cfg, "num_nextn_predict_layers", "mtp_num_hidden_layers") or 0)
    return Architecture(
        model_type=mt,
        layers=layers,
        hidden_size=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        tied_embeddings=bool(tied),
        intermediate_size=int(dense) if dense else None,
        moe=moe,
        mla=mla,
        local_attention=_local(cfg, mt, layers),
        index_head_dim=int(cfg["index_head_dim"]) if cfg.get("index_head_dim") else None,
        mtp_layers=mtp,
        source="config.json",
    )


def context_from_config(config: dict[str, Any]) -> int | None:
    v = text_config(config).get("max_position_embeddings")
    return int(v) if isinstance(v, int) and v > 0 else None


def format_from_config(config: dict[str, Any]) -> Format:
    """The weight format a checkpoint is stored in (quantization_config, else torch_dtype)."""
    q = text_config(config).get("quantization_config") or config.get("quantization_config")
    if isinstance(q, dict):
        method = str(q.get("quant_method") or "").lower()
        if method in ("fp8", "fbgemm_fp8"):
            return "fp8"
        if method in ("awq", "gptq", "mxfp4"):
            return method  # type: ignore[return-value]
        if method == "modelopt":
            algo = str(q.get("quant_algo") or "").upper()
            return "nvfp4" if "FP4" in algo else "fp8"
        if method == "compressed-tensors":
            fmt = str(q.get("format") or "")
            if "nvfp4" in fmt:
                return "nvfp4"
            if "float" in fmt:
                return "fp8"
            if "int" in fmt and "8" in str(q.get("config_groups", "")):
                return "int8"
            return "gptq"
    dtype = str(_first(config, "torch_dtype", "dtype") or "bfloat16")
    return {"float16": "fp16", "float32": "fp32"}.get(dtype, "bf16")  # type: ignore[return-value]
