"""Weight formats: bits per weight of the quantised linear layers, and what stays at 16 bit.

Block formats are exact arithmetic on their storage layout:
- GGUF block types (ggml): Q4_0 = 18 bytes / 32 weights = 4.5 bpw, Q8_0 = 34/32 → 8.5,
  Q4_K = 144 bytes / 256 → 4.5, Q6_K = 210/256 → 6.5625 …
- FP8 checkpoints (block-quantised, 128×128 blocks with one fp32 scale): 8 + 32/16384 bpw
  on the linear layers; embeddings, output head, norms and the MoE router stay bf16.
- MXFP4: 4 bits + one 8-bit scale per 32 values = 4.25 bpw; NVFP4: 4 bits + one fp8 scale
  per 16 values = 4.5 bpw; AWQ/GPTQ int4 with group 128: 4 + (16-bit scale + 4-bit zero)/128.
GGUF *mixes* (Q4_K_M keeps some tensors at Q6_K) are model dependent: real files are read
when present; otherwise Q4_K_M uses 4.86 bpw, measured on a real file (Qwen3-Coder-30B
Q4_K_M, 18,556,689,568 bytes for 30.5 B parameters), and other mixes the bits of their base
block type (stated as an estimate).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Bits per weight of GGUF block types (ggml type sizes / block sizes).
GGUF_TYPE_BPW: dict[str, float] = {
    "f32": 32.0,
    "f16": 16.0,
    "bf16": 16.0,
    "q8_0": 8.5,
    "q6_k": 6.5625,
    "q5_k": 5.5,
    "q5_0": 5.5,
    "q5_1": 6.0,
    "q4_k": 4.5,
    "q4_0": 4.5,
    "q4_1": 5.0,
    "iq4_xs": 4.25,
    "iq4_nl": 4.5,
    "q3_k": 3.4375,
    "q2_k": 2.625,
    "mxfp4": 4.25,
}

#: GGUF mixes measured on a real file (quant → (bpw over all weights, where from)).
GGUF_MIX_BPW: dict[str, tuple[float, str]] = {
    "q4_k_m": (4.86, "Qwen3-Coder-30B-A3B Q4_K_M file: 18,556,689,568 B / 30.5e9 params"),
}


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


def _gguf_base(quant: str) -> str | None:
    """'ud-q4_k_xl' → 'q4_k'; 'q4_k_m' → 'q4_k'; 'q8_0' → 'q8_0'."""
    q = quant.lower().removeprefix("ud-")
    if q in GGUF_TYPE_BPW:
        return q
    for suffix in ("_xxs", "_xs", "_xl", "_s", "_m", "_l"):
        if q.endswith(suffix) and q[: -len(suffix)] in GGUF_TYPE_BPW:
            return q[: -len(suffix)]
    return None


SAFETENSORS_BPW: dict[str, tuple[float, str]] = {
    "bf16": (16.0, "bf16"),
    "fp16": (16.0, "fp16"),
    "fp32": (32.0, "fp32"),
    "fp8": (8.0 + 32 / 16384, "fp8 e4m3, one fp32 scale per 128×128 block"),
    "int8": (8.0 + 32 / 4096, "int8, per-channel scales"),
    "awq": (4.0 + 20 / 128, "int4, group 128: fp16 scale + 4-bit zero per group"),
    "gptq": (4.0 + 20 / 128, "int4, group 128: fp16 scale + 4-bit zero per group"),
    "int4": (4.0 + 20 / 128, "int4, group 128"),
    "mxfp4": (4.25, "fp4 e2m1 + one e8m0 scale per 32"),
    "nvfp4": (4.5, "fp4 e2m1 + one fp8 scale per 16"),
}


def quant_info(quant: str, fmt: str | None = None) -> QuantInfo | None:
    """What a quant key means for weight bytes; None when unknown."""
    q = quant.lower()
    if fmt in (None, "gguf") and (q in GGUF_MIX_BPW or _gguf_base(q) is not None):
        if q in GGUF_MIX_BPW:
            bpw, basis = GGUF_MIX_BPW[q]
            return QuantInfo(q, "gguf", bpw, bpw, estimate=True, basis=basis)
        base = _gguf_base(q)
        assert base is not None
        bpw = GGUF_TYPE_BPW[base]
        exact = base == q
        basis = f"GGUF {base.upper()} blocks" + ("" if exact else " (mix: estimate)")
        return QuantInfo(q, "gguf", bpw, bpw, estimate=not exact, basis=basis)
    key = fmt if fmt is not None and fmt != "gguf" else q
    if key in SAFETENSORS_BPW:
        bpw, basis = SAFETENSORS_BPW[key]
        embed = 32.0 if key == "fp32" else 16.0
        return QuantInfo(key, key, bpw, embed, basis=basis, experts_only=key == "mxfp4")
    return None


def is_gguf_quant(quant: str) -> bool:
    q = quant.lower()
    return q in GGUF_MIX_BPW or (_gguf_base(q) is not None and q not in SAFETENSORS_BPW)


#: Order used by --prefer quality when bits per weight tie.
def quality_bits(info: QuantInfo) -> float:
    return info.layer_bpw
