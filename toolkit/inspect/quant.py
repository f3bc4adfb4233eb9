"""Bits per weight of every weight format `--quant` accepts.

Two kinds of entries:

- block types (one storage layout for every quantized tensor): the bits follow from
  the block size and bytes per block. GGUF types come from ggml's type table
  (`GGML_QUANT_SIZES` in the `gguf` package, mirroring `ggml/src/ggml.c`
  `type_traits`): Q4_K stores 256 weights in 144 bytes = 4.5 bits, Q8_0 32 in 34 = 8.5,
  MXFP4 32 in 17 = 4.25, NVFP4 64 in 36 = 4.5. Safetensors formats are derived the same
  way from how their checkpoints store scales:
    fp8 (e4m3, DeepSeek/Qwen 128×128 blocks with one f32 `weight_scale_inv` each):
        8 + 32 / (128 × 128) = 8.002;
    int8 (w8a8, one scale per output channel): 8 + ε = 8.0;
    awq / gptq int4, group 128, an fp16 scale and a packed 4-bit zero point per group:
        4 + 16/128 + 4/128 = 4.156 (gptq's g_idx adds 32 bits per input row: negligible);
    mxfp4 (OCP MX: 32 e2m1 values share one e8m0 scale): 4 + 8/32 = 4.25;
    nvfp4 (16 e2m1 values share one e4m3 scale, plus a per-tensor f32): 4 + 8/16 = 4.5.
- GGUF mixtures (`Q4_K_M`, `Q5_K_M`, …: llama.cpp picks a type per tensor, so the
  average depends on the model). The figure here is the average on Llama-3-8B from
  llama-quantize's option table (tools/quantize/quantize.cpp QUANT_OPTIONS, sizes in GiB,
  8.03e9 parameters): Q4_K_M 4.58 GiB → 4.90 bits. It is a fallback: the planner should
  prefer a real tensor table (`read_gguf`) or a per-tensor simulation
  (`toolkit.inspect.ggufmix.estimate_gguf_layout`) when the architecture is known.
"""

from __future__ import annotations

from toolkit.errors import UsageError

_GIB = 1 << 30
_LLAMA3_8B_PARAMS = 8.03e9


def _from_gib(gib: float) -> float:
    return round(gib * _GIB * 8 / _LLAMA3_8B_PARAMS, 3)


#: Safetensors / engine formats (see the module docstring for the derivations).
FORMAT_BITS: dict[str, float] = {
    "fp32": 32.0,
    "bf16": 16.0,
    "fp16": 16.0,
    "fp8": 8.0 + 32 / (128 * 128),
    "int8": 8.0,
    "int4": 4.0 + 16 / 128 + 4 / 128,
    "awq": 4.0 + 16 / 128 + 4 / 128,
    "gptq": 4.0 + 16 / 128 + 4 / 128,
    "mxfp4": 4.25,
    "nvfp4": 4.5,
}

#: GGUF mixtures: average bits on Llama-3-8B from llama-quantize's QUANT_OPTIONS
#: (ggml-org/llama.cpp tools/quantize/quantize.cpp @ 03161a4).
GGUF_MIX_BITS: dict[str, float] = {
    "q2_k": _from_gib(2.96),
    "q3_k_m": _from_gib(3.74),
    "q4_k_s": _from_gib(4.37),
    "q4_k_m": _from_gib(4.58),
    "q5_k_m": _from_gib(5.33),
}

#: Of the IQ mixtures llama-quantize states bits per weight directly (same source).
GGUF_IQ_BITS: dict[str, float] = {
    "iq1_s": 1.56,
    "iq1_m": 1.75,
    "tq1_0": 1.69,
    "iq2_xxs": 2.06,
    "iq2_xs": 2.31,
    "iq2_m": 2.7,
    "iq3_xxs": 3.06,
    "iq3_m": 3.66,
}


def gguf_type_bits(type_name: str) -> float | None:
    """Bits per weight of one ggml tensor type ("Q4_K", "F16", "MXFP4"), from its block."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        qtype = GGMLQuantizationType[type_name.upper()]
    except KeyError:
        return None
    block, size = GGML_QUANT_SIZES[qtype]
    return size * 8 / block


def bits_per_weight(quant: str) -> float:
    """Bits per weight of a format, a GGUF tensor type or a GGUF mixture (case-insensitive).

    Raises UsageError naming the accepted values for anything else.
    """
    key = quant.strip().lower().replace("-", "_")
    if key in FORMAT_BITS:
        return FORMAT_BITS[key]
    if key in GGUF_MIX_BITS:
        return GGUF_MIX_BITS[key]
    if key in GGUF_IQ_BITS:
        return GGUF_IQ_BITS[key]
    plain = gguf_type_bits(key)
    if plain is not None:
        return plain
    # Single-type GGUF files: Q8_0, Q6_K, Q4_0 … are named like their type.
    if key.endswith(("_k_s", "_k_l")):
        base = gguf_type_bits(key[: -len("_s")])
        if base is not None:
            return base
    known = sorted({*FORMAT_BITS, *GGUF_MIX_BITS, *GGUF_IQ_BITS, "q8_0", "q6_k", "q4_0"})
    raise UsageError(
        f"unknown weight format {quant!r}",
        hint="use one of: " + ", ".join(known) + " (or any GGUF tensor type)",
    )
