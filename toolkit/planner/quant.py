"""Weight formats as the planner sees them: bits per weight, what stays at 16 bit, and
which GGUF file types llama-quantize's per-tensor choice can be replayed for.

The bits come from `toolkit.inspect` (one table for the whole toolkit): ggml block
types from ggml's type table (`ggufmix.GGML_BLOCKS`: Q4_K 144 bytes / 256 weights = 4.5
bpw, Q8_0 34/32 = 8.5 …), safetensors formats from how their checkpoints store scales
(`FORMAT_BITS`), GGUF mixes from llama-quantize's option table (`GGUF_MIX_BITS`).
What this module adds is planner-specific: a safetensors checkpoint keeps embeddings and
the output head at 16 bit, MXFP4 checkpoints (gpt-oss) quantise only the routed experts,
and a GGUF mix (Q4_K_M keeps some tensors at Q6_K) is estimated, when no file has been
read, by replaying llama-quantize per tensor (`toolkit.inspect.ggufmix`, `gguf_ftype`).
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.inspect.ggufmix import FTYPE_DEFAULT, GGML_BLOCKS
from toolkit.inspect.quant import FORMAT_BITS, GGUF_IQ_BITS, GGUF_MIX_BITS


@dataclass(frozen=True)
class QuantInfo:
    #: Canonical quant key (bf16, fp8, awq, q4_k_m …).
    key: str
    #: Checkpoint family: gguf or a safetensors format.
    format: str
    #: Bits per weight of the quantised linear layers.
    layer_bpw: float
    #: Bits per weight of embeddings / output head (16 in safetensors checkpoints).
    embed_bpw: float
    #: True when layer_bpw is a stated estimate, not storage arithmetic.
    estimate: bool = False
    basis: str = ""
    #: Only the routed experts are quantised; attention, router, embeddings stay 16-bit
    #: (MXFP4 checkpoints such as gpt-oss).
    experts_only: bool = False
    #: The llama-quantize file type ("Q4_K_M") whose per-tensor choice
    #: `toolkit.inspect.ggufmix.estimate_gguf_layout` replays; None when there is no rule
    #: (safetensors, unsloth's UD recipes).
    gguf_ftype: str | None = None


def _gguf_bits(quant: str) -> float | None:
    """Bits per weight of a ggml block type llama-quantize picks (GGML_BLOCKS: the same
    numbers as `toolkit.inspect.quant.gguf_type_bits`, without importing numpy)."""
    block = GGML_BLOCKS.get(quant.upper())
    return block[1] * 8 / block[0] if block else None


def _gguf_base(quant: str) -> str | None:
    """'ud-q4_k_xl' → 'q4_k'; 'q4_k_m' → 'q4_k'; 'q8_0' → 'q8_0'."""
    q = quant.lower().removeprefix("ud-")
    if _gguf_bits(q) is not None:
        return q
    for suffix in ("_xxs", "_xs", "_xl", "_s", "_m", "_l"):
        if q.endswith(suffix) and _gguf_bits(q[: -len(suffix)]) is not None:
            return q[: -len(suffix)]
    return None


#: How each safetensors format stores its scales (the bits are FORMAT_BITS').
SAFETENSORS_BASIS: dict[str, str] = {
    "bf16": "bf16",
    "fp16": "fp16",
    "fp32": "fp32",
    "fp8": "fp8 e4m3, one fp32 scale per 128×128 block",
    "int8": "int8, per-channel scales",
    "awq": "int4, group 128: fp16 scale + 4-bit zero per group",
    "gptq": "int4, group 128: fp16 scale + 4-bit zero per group",
    "int4": "int4, group 128",
    "mxfp4": "fp4 e2m1 + one e8m0 scale per 32",
    "nvfp4": "fp4 e2m1 + one fp8 scale per 16",
}


def _gguf_info(q: str, base: str) -> QuantInfo:
    bits = _gguf_bits(base)
    assert bits is not None
    ftype = q.upper() if q.upper() in FTYPE_DEFAULT else None
    if q == "mxfp4":
        # MXFP4 GGUFs (gpt-oss) are llama-quantize's MXFP4_MOE: experts MXFP4, rest Q8_0
        ftype = "MXFP4_MOE"
    if base == q:
        basis = f"GGUF {base.upper()} blocks"
        return QuantInfo(q, "gguf", bits, bits, basis=basis, gguf_ftype=ftype)
    if ftype is not None:
        # Bits of the whole mix (llama-quantize's table) where known, else its base type.
        bpw = GGUF_MIX_BITS.get(q, bits)
        basis = f"llama-quantize's per-tensor {ftype} choice replayed on the architecture"
        return QuantInfo(q, "gguf", bpw, bpw, estimate=True, basis=basis, gguf_ftype=ftype)
    stated = _stated_mix(q)
    if stated is not None:
        return stated
    basis = f"GGUF {base.upper()} blocks (mix: estimate)"
    return QuantInfo(q, "gguf", bits, bits, estimate=True, basis=basis)


def _stated_mix(q: str) -> QuantInfo | None:
    """A mix without a replayable rule (unsloth's UD-IQ1_M …): the average bits
    llama-quantize states for the plain mix of that name, as an estimate."""
    plain = q.removeprefix("ud-")
    bits = GGUF_MIX_BITS.get(plain) or GGUF_IQ_BITS.get(plain)
    if bits is None:
        return None
    basis = f"llama-quantize's stated {plain.upper()} average ({bits:.2f} bpw; mix: estimate)"
    return QuantInfo(q, "gguf", bits, bits, estimate=True, basis=basis)


def quant_info(quant: str, fmt: str | None = None) -> QuantInfo | None:
    """What a quant key means for weight bytes; None when unknown.

    Without `fmt`, a safetensors format name (bf16, mxfp4, nvfp4 …) means that format.
    """
    q = quant.lower()
    if fmt == "gguf" or (fmt is None and q not in FORMAT_BITS):
        base = _gguf_base(q)
        if base is None:
            return _stated_mix(q)
        return _gguf_info(q, base)
    key = fmt if fmt is not None else q
    if key in FORMAT_BITS:
        embed = 32.0 if key == "fp32" else 16.0
        basis = SAFETENSORS_BASIS.get(key, key)
        return QuantInfo(
            key, key, FORMAT_BITS[key], embed, basis=basis, experts_only=key == "mxfp4"
        )
    return None


def is_gguf_quant(quant: str) -> bool:
    q = quant.lower()
    return q not in FORMAT_BITS and _gguf_base(q) is not None


#: Order used by --prefer quality when bits per weight tie.
def quality_bits(info: QuantInfo) -> float:
    return info.layer_bpw
