"""What a GGUF of a given architecture and file type holds, tensor by tensor, without the file.

Two steps, each following llama.cpp's own code:

1. `gguf_tensor_specs(arch)`: the tensors `convert_hf_to_gguf.py` writes (llama.cpp names
   and ggml shapes, innermost dimension first), with the type they have before
   quantization: F32 for 1-D tensors, norms, biases, the MoE router (`ffn_gate_inp`) and
   conv1d; the model's 16-bit type for the rest. Covers dense Llama/Mistral/Qwen2/Qwen3
   and Gemma 3, MoE (Mixtral, Qwen2/3-MoE, DeepSeek 2/3 with MLA, GLM-4.5, gpt-oss) and
   Qwen3-Next's Gated DeltaNet layers.
2. `quantized_types(specs, ftype)`: llama-quantize's per-tensor choice
   (src/llama-quant.cpp `llama_tensor_get_type_impl` @ 8784689): default type of the
   file type; output head (and a tied embedding) Q6_K; `attn_v` / `attn_kv_b` in Q6_K on
   the `use_more_bits` layers for Q4_K_M / Q5_K_M (and Q8_0 for 8-expert models);
   `ffn_down` likewise by layer; 8-expert models' `attn_k` Q8_0 and `attn_output` Q5_K;
   MXFP4_MOE: experts MXFP4, the rest Q8_0; rows not divisible by the block fall back
   (Q4_K→Q5_0, Q5_K→Q5_1, Q6_K→Q8_0, K-quants below→Q4_0, IQ→IQ4_NL).

`estimate_gguf_layout(arch, "Q4_K_M")` is the resulting weight layout (`exact=False`: an
imatrix or an uploader's own recipe, such as unsloth's UD quants, changes choices). It
reproduces unsloth's Qwen3-Coder-30B-A3B Q4_K_M file within 0.05%.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolkit.errors import UsageError
from toolkit.inspect.params import is_moe_layer

if TYPE_CHECKING:
    from toolkit.catalog.schema import Architecture
    from toolkit.inspect.layout import WeightLayout


@dataclass(frozen=True)
class TensorSpec:
    name: str
    #: ggml order: innermost (row length) first.
    shape: tuple[int, ...]
    #: Type before quantization ("F32", "BF16", "F16").
    type_name: str

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _norm(name: str, n: int) -> TensorSpec:
    return TensorSpec(name, (n,), "F32")


def _attention(arch: Architecture, p: str, h: int, wt: str) -> list[TensorSpec]:
    mt = arch.model_type
    out: list[TensorSpec] = []
    if arch.mla is not None:
        m = arch.mla
        heads = arch.heads
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:
            out += [
                TensorSpec(f"{p}.attn_q_a.weight", (h, m.q_lora_rank), wt),
                _norm(f"{p}.attn_q_a_norm.weight", m.q_lora_rank),
                TensorSpec(f"{p}.attn_q_b.weight", (m.q_lora_rank, heads * qk), wt),
            ]
        else:
            out.append(TensorSpec(f"{p}.attn_q.weight", (h, heads * qk), wt))
        out += [
            TensorSpec(f"{p}.attn_kv_a_mqa.weight", (h, m.kv_lora_rank + m.qk_rope_head_dim), wt),
            _norm(f"{p}.attn_kv_a_norm.weight", m.kv_lora_rank),
            TensorSpec(f"{p}.attn_k_b.weight", (m.qk_nope_head_dim, m.kv_lora_rank, heads), wt),
            TensorSpec(f"{p}.attn_v_b.weight", (m.kv_lora_rank, m.v_head_dim, heads), wt),
            TensorSpec(f"{p}.attn_output.weight", (heads * m.v_head_dim, h), wt),
        ]
        return out
    q = arch.heads * arch.head_dim
    kv = arch.kv_heads * arch.head_dim
    q_out = 2 * q if mt == "qwen3_next" else q
    out += [
        TensorSpec(f"{p}.attn_q.weight", (h, q_out), wt),
        TensorSpec(f"{p}.attn_k.weight", (h, kv), wt),
        TensorSpec(f"{p}.attn_v.weight", (h, kv), wt),
        TensorSpec(f"{p}.attn_output.weight", (q, h), wt),
    ]
    if mt in ("qwen2", "qwen2_moe", "gpt_oss"):
        out += [
            TensorSpec(f"{p}.attn_q.bias", (q,), "F32"),
            TensorSpec(f"{p}.attn_k.bias", (kv,), "F32"),
            TensorSpec(f"{p}.attn_v.bias", (kv,), "F32"),
        ]
    if mt == "gpt_oss":
        out += [
            TensorSpec(f"{p}.attn_output.bias", (h,), "F32"),
            TensorSpec(f"{p}.attn_sinks.weight", (arch.heads,), "F32"),
        ]
    if mt in ("qwen3", "qwen3_moe", "qwen3_next", "gemma3", "olmo2", "glm4_moe"):
        out += [
            _norm(f"{p}.attn_q_norm.weight", arch.head_dim),
            _norm(f"{p}.attn_k_norm.weight", arch.head_dim),
        ]
    return out


def _linear_attention(arch: Architecture, p: str, h: int, wt: str) -> list[TensorSpec]:
    local = arch.local_attention
    assert local is not None
    if local.mamba is not None:
        # Mamba2 mixer (src/models/granite-hybrid.cpp load_arch_tensors)
        m = local.mamba
        inner = m.heads * m.head_dim
        conv = inner + 2 * m.groups * m.state_size
        return [
            TensorSpec(f"{p}.ssm_in.weight", (h, inner + conv + m.heads), wt),
            TensorSpec(f"{p}.ssm_conv1d.weight", (m.conv_kernel, conv), "F32"),
            TensorSpec(f"{p}.ssm_conv1d.bias", (conv,), "F32"),
            TensorSpec(f"{p}.ssm_dt.bias", (m.heads,), "F32"),
            TensorSpec(f"{p}.ssm_a", (1, m.heads), "F32"),
            TensorSpec(f"{p}.ssm_d", (1, m.heads), "F32"),
            TensorSpec(f"{p}.ssm_norm.weight", (inner // m.groups, m.groups), "F32"),
            TensorSpec(f"{p}.ssm_out.weight", (inner, h), wt),
        ]
    assert local.linear is not None
    lin = local.linear
    k = lin.key_heads * lin.key_head_dim
    v = lin.value_heads * lin.value_head_dim
    return [
        TensorSpec(f"{p}.attn_qkv.weight", (h, 2 * k + v), wt),
        TensorSpec(f"{p}.attn_gate.weight", (h, v), wt),
        TensorSpec(f"{p}.ssm_ba.weight", (h, 2 * lin.value_heads), wt),
        TensorSpec(f"{p}.ssm_conv1d.weight", (lin.conv_kernel, 2 * k + v), "F32"),
        TensorSpec(f"{p}.ssm_a", (lin.value_heads,), "F32"),
        TensorSpec(f"{p}.ssm_dt.bias", (lin.value_heads,), "F32"),
        _norm(f"{p}.ssm_norm.weight", lin.value_head_dim),
        TensorSpec(f"{p}.ssm_out.weight", (v, h), wt),
    ]


def _ffn(arch: Architecture, i: int, p: str, h: int, wt: str) -> list[TensorSpec]:
    moe = arch.moe
    if moe is None or not is_moe_layer(arch, i):
        ff = arch.intermediate_size or 4 * h
        return [
            TensorSpec(f"{p}.ffn_gate.weight", (h, ff), wt),
            TensorSpec(f"{p}.ffn_up.weight", (h, ff), wt),
            TensorSpec(f"{p}.ffn_down.weight", (ff, h), wt),
        ]
    e, ff = moe.experts, moe.expert_intermediate_size
    out = [TensorSpec(f"{p}.ffn_gate_inp.weight", (h, e), "F32")]
    if arch.model_type == "gpt_oss":
        out.append(TensorSpec(f"{p}.ffn_gate_inp.bias", (e,), "F32"))
    if arch.model_type in ("deepseek_v3", "deepseek_v32", "kimi_k2", "glm4_moe"):
        out.append(TensorSpec(f"{p}.exp_probs_b.bias", (e,), "F32"))
    out += [
        TensorSpec(f"{p}.ffn_gate_exps.weight", (h, ff, e), wt),
        TensorSpec(f"{p}.ffn_up_exps.weight", (h, ff, e), wt),
        TensorSpec(f"{p}.ffn_down_exps.weight", (ff, h, e), wt),
    ]
    if arch.model_type == "gpt_oss":
        out += [
            TensorSpec(f"{p}.ffn_gate_exps.bias", (ff, e), "F32"),
            TensorSpec(f"{p}.ffn_up_exps.bias", (ff, e), "F32"),
            TensorSpec(f"{p}.ffn_down_exps.bias", (h, e), "F32"),
        ]
    if moe.shared_experts:
        sh = (
            moe.shared_expert_intermediate_size or moe.expert_intermediate_size * moe.shared_experts
        )
        out += [
            TensorSpec(f"{p}.ffn_gate_shexp.weight", (h, sh), wt),
            TensorSpec(f"{p}.ffn_up_shexp.weight", (h, sh), wt),
            TensorSpec(f"{p}.ffn_down_shexp.weight", (sh, h), wt),
        ]
        if arch.model_type in ("qwen2_moe", "qwen3_next"):
            out.append(TensorSpec(f"{p}.ffn_gate_inp_shexp.weight", (h,), "F32"))
    return out


def gguf_tensor_specs(arch: Architecture, *, weight_type: str = "BF16") -> list[TensorSpec]:
    """The tensors of a converted (unquantized) GGUF of this architecture, in file order."""
    h = arch.hidden_size
    wt = weight_type
    specs = [TensorSpec("token_embd.weight", (h, arch.vocab_size), wt)]
    linear: set[int] = set()
    if arch.local_attention is not None and arch.local_attention.kind == "linear":
        linear = set(range(arch.layers)) - set(arch.global_layer_indices())
    four_norms = arch.model_type in ("gemma2", "gemma3")
    for i in range(arch.layers):
        p = f"blk.{i}"
        specs.append(_norm(f"{p}.attn_norm.weight", h))
        if i in linear:
            specs += _linear_attention(arch, p, h, wt)
        else:
            specs += _attention(arch, p, h, wt)
        if four_norms:
            specs.append(_norm(f"{p}.post_attention_norm.weight", h))
            specs.append(_norm(f"{p}.ffn_norm.weight", h))
            specs.append(_norm(f"{p}.post_ffw_norm.weight", h))
        elif arch.model_type in ("gpt_oss", "qwen3_next"):
            specs.append(_norm(f"{p}.post_attention_norm.weight", h))
        else:
            specs.append(_norm(f"{p}.ffn_norm.weight", h))
        specs += _ffn(arch, i, p, h, wt)
    specs.append(_norm("output_norm.weight", h))
    if not arch.tied_embeddings:
        specs.append(TensorSpec("output.weight", (h, arch.vocab_size), wt))
    return specs


# -- llama-quantize's type choice ----------------------------------------------------------

#: llama_ftype_get_default_type (src/llama-quant.cpp).
FTYPE_DEFAULT: dict[str, str] = {
    "ALL_F32": "F32",
    "F16": "F16",
    "BF16": "BF16",
    "Q4_0": "Q4_0",
    "Q4_1": "Q4_1",
    "Q5_0": "Q5_0",
    "Q5_1": "Q5_1",
    "Q8_0": "Q8_0",
    "Q2_K": "Q2_K",
    "Q2_K_S": "Q2_K",
    "Q3_K_S": "Q3_K",
    "Q3_K_M": "Q3_K",
    "Q3_K_L": "Q3_K",
    "Q4_K_S": "Q4_K",
    "Q4_K_M": "Q4_K",
    "Q5_K_S": "Q5_K",
    "Q5_K_M": "Q5_K",
    "Q6_K": "Q6_K",
    "IQ4_NL": "IQ4_NL",
    "IQ4_XS": "IQ4_XS",
    "MXFP4_MOE": "MXFP4",
}
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "Q2_K": "Q4_0", "Q3_K": "Q4_0"}
_FALLBACK.update({t: "IQ4_NL" for t in ("IQ4_XS", "IQ3_S", "IQ2_S", "IQ2_XS", "IQ2_XXS")})


#: (weights per block, bytes per block) of the types llama-quantize picks, copied from
#: ggml's type table (the `gguf` package's GGML_QUANT_SIZES; a test checks they agree) so
#: that planning from a recipe does not import numpy.
GGML_BLOCKS: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
    "Q5_0": (32, 22),
    "Q5_1": (32, 24),
    "Q8_0": (32, 34),
    "Q2_K": (256, 84),
    "Q3_K": (256, 110),
    "Q4_K": (256, 144),
    "Q5_K": (256, 176),
    "Q6_K": (256, 210),
    "IQ4_NL": (32, 18),
    "IQ4_XS": (256, 136),
    "MXFP4": (32, 17),
    # ggml's type_traits (ggml/src/ggml.c), llama.cpp 0c1e570
    "IQ1_S": (256, 50),
    "IQ1_M": (256, 56),
    "IQ2_XXS": (256, 66),
    "IQ2_XS": (256, 74),
    "IQ2_S": (256, 82),
    "IQ3_XXS": (256, 98),
    "IQ3_S": (256, 110),
    "TQ1_0": (256, 54),
    "TQ2_0": (256, 66),
}


def _block(type_name: str) -> tuple[int, int]:
    if type_name in GGML_BLOCKS:
        return GGML_BLOCKS[type_name]
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]


def tensor_nbytes(type_name: str, n_elements: int) -> int:
    block, size = _block(type_name)
    return n_elements // block * size


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _quantizable(t: TensorSpec) -> bool:
    n = t.name
    return (
        len(t.shape) >= 2
        and n.endswith("weight")
        and "_norm.weight" not in n
        and "ffn_gate_inp.weight" not in n
        and "ssm_conv1d" not in n
    )


def _layer(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("blk.") else -1


def quantized_types(
    specs: list[TensorSpec], ftype: str, *, n_experts: int = 0, n_gqa: int = 1, n_layers: int = 0
) -> list[str]:
    """llama-quantize's tensor types for `ftype` ("Q4_K_M" …), one per spec."""
    ft = ftype.upper().removeprefix("MOSTLY_")
    if ft not in FTYPE_DEFAULT:
        raise UsageError(
            f"no llama-quantize rule for file type {ftype!r}",
            hint="known: " + ", ".join(sorted(FTYPE_DEFAULT)),
        )
    default = FTYPE_DEFAULT[ft]
    if default in ("F32", "F16", "BF16"):
        return [default if _quantizable(t) else t.type_name for t in specs]
    tied = not any(t.name == "output.weight" for t in specs)
    n_wv = sum(1 for t in specs if _is_attn_v(t.name))
    n_layers = n_layers or 1 + max((_layer(t.name) for t in specs), default=0)
    i_wv = 0
    out: list[str] = []
    # llama.cpp walks tensors sorted by (layer, name): order matters for i_attention_wv.
    order = sorted(range(len(specs)), key=lambda k: (_layer(specs[k].name), specs[k].name))
    chosen: dict[int, str] = {}
    for k in order:
        t = specs[k]
        if not _quantizable(t):
            chosen[k] = t.type_name
            continue
        new = default
        name = t.name
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            if ft == "MXFP4_MOE" or t.shape[0] % _block(default)[0]:
                new = "Q8_0"
            elif new != "Q8_0":
                new = "Q6_K"
        elif ft == "MXFP4_MOE":
            new = "MXFP4" if len(t.shape) > 2 and t.shape[2] > 1 else "Q8_0"
        elif name == "token_embd.weight":
            pass
        elif _is_attn_v(name):
            if ft == "Q2_K":
                new = "Q4_K" if n_gqa >= 4 else "Q3_K"
            elif ft == "Q2_K_S" and n_gqa >= 4:
                new = "Q4_K"
            elif ft == "Q3_K_M":
                new = "Q5_K" if i_wv < 2 else "Q4_K"
            elif ft == "Q3_K_L" or (ft in ("IQ4_NL", "IQ4_XS") and n_gqa >= 4):
                new = "Q5_K"
            elif ft in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i_wv, n_wv):
                new = "Q6_K"
            elif ft == "Q4_K_S" and i_wv < 4:
                new = "Q5_K"
            if n_experts == 8:
                new = "Q8_0"
            i_wv += 1
        elif ".attn_k.weight" in name:
            if n_experts == 8:
                new = "Q8_0"
        elif "ffn_down" in name:
            i = _layer(name)
            if ft == "Q2_K":
                new = "Q3_K"
            elif ft == "Q2_K_S":
                if i < n_layers // 8:
                    new = "Q4_K"
            elif ft == "Q3_K_M":
                new = "Q5_K" if i < n_layers // 16 else "Q4_K"
            elif ft == "Q3_K_L":
                new = "Q5_K"
            elif ft in ("Q4_K_M", "Q5_K_M"):
                if _use_more_bits(i, n_layers):
                    new = "Q6_K"
            elif ft in ("IQ4_NL", "IQ4_XS", "Q4_K_S") and i < n_layers // 8:
                new = "Q5_K"
        elif ".attn_output.weight" in name:
            if n_experts == 8:
                if ft in ("Q2_K", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ4_XS"):
                    new = "Q5_K"
            elif ft == "Q2_K":
                new = "Q3_K"
            elif ft == "Q3_K_M":
                new = "Q4_K"
            elif ft == "Q3_K_L":
                new = "Q5_K"
        elif ".attn_qkv.weight" in name:
            if ft in ("Q3_K_M", "Q3_K_L"):
                new = "Q4_K"
            elif ft == "Q4_K_M":
                new = "Q5_K"
            elif ft == "Q5_K_M":
                new = "Q6_K"
        if t.shape[0] % _block(new)[0]:
            new = _FALLBACK.get(new, "F16")
            if t.shape[0] % _block(new)[0]:
                new = "F16"
        chosen[k] = new
    out = [chosen[k] for k in range(len(specs))]
    return out


def _is_attn_v(name: str) -> bool:
    return any(s in name for s in ("attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight"))


def gguf_quant_tensors(arch: Architecture, ftype: str) -> list[tuple[TensorSpec, str, int]]:
    """(spec, type, bytes) of every tensor of `arch` quantized to `ftype`."""
    specs = gguf_tensor_specs(arch)
    moe = arch.moe
    types = quantized_types(
        specs,
        ftype,
        n_experts=moe.experts if moe else 0,
        n_gqa=arch.heads // arch.kv_heads if arch.mla is None else 1,
        n_layers=arch.layers,
    )
    return [(s, t, tensor_nbytes(t, s.n_elements)) for s, t in zip(specs, types, strict=True)]


def estimate_gguf_layout(arch: Architecture, ftype: str) -> WeightLayout:
    """Weight layout of a GGUF of `arch` made by llama-quantize with `ftype` (simulated)."""
    from toolkit.inspect.gguf import layout_from_entries

    entries = (
        (spec.name, type_name, nbytes, len(spec.shape))
        for spec, type_name, nbytes in gguf_quant_tensors(arch, ftype)
    )
    return layout_from_entries(entries, arch, exact=False)
