"""The ranking policy: which plan an expert would run first (docs/planner.md, "Ranking").

Keys, most important first (`--prefer quality`, the default):

1. usable: decode ≥ the speed floor and context ≥ the context floor; the rest are listed
   after every usable plan, labelled "fits but slow" / "fits but short", nearest miss
   first (by halvings below the speed floor: 5.8 tok/s before 0.9 against 10);
2. capability of the model (recipe `capability`, mapped onto the catalog's main scale;
   total parameters when unknown), so a distill never outranks its parent;
3. quantization band: ≥ 4-bit, 3-bit, 2-bit, 1-bit (llama.cpp's KL-divergence tables:
   4-bit K-quants and up stay close to the original, 3-bit and below degrade visibly);
4. fit to the box: everything on GPUs, then experts in RAM, then layers in RAM, then CPU;
   the engine that suits the GPUs (vLLM on datacenter GPUs, llama.cpp on consumer cards,
   Apple and CPUs);
5. quantization class inside the band: lossless (the release's own format, ≥ 8-bit),
   5–6-bit, 4-bit; an upcast of a release never beats the release;
6. speed, then context.

`--prefer speed` / `--prefer context` put their own key right after usability.
Pure: plans in, keys and one-line reasons out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from toolkit.hardware.model import Gpu, Hardware
from toolkit.planner.types import Plan

#: Default speed floor (tok/s per stream): interactive chat reads at ~5–10 words/s.
DEFAULT_MIN_TOK_S = 10.0
#: Default context floor (tokens per stream).
DEFAULT_MIN_CTX = 8192

#: Quality classes, best first, with the words shown to users.
CLASSES = ("lossless", "5-6-bit", "4-bit", "3-bit", "2-bit", "1-bit")
_LOSSLESS_FORMATS = {"bf16", "fp16", "fp32", "f16", "f32", "fp8", "int8", "q8_0"}
_GGUF_BITS = re.compile(r"(?:^|[-_])(?:i?q|tq)(\d)")

PLACEMENT_TIER = {
    "gpu": 0,
    "tensor_parallel": 0,
    "pipeline_parallel": 0,
    "data_parallel": 0,
    "layer_split": 0,
    "unified": 0,
    "expert_offload": 1,
    "partial_offload": 2,
    "cpu": 3,
}
_PLACEMENT_WORDS = (
    "everything on GPUs",
    "experts in RAM",
    "layers in RAM",
    "CPU only",
)


def quality_class(quant: str, fmt: str, release_formats: Sequence[str] = ()) -> int:
    """Index into CLASSES for a variant's weights."""
    q = quant.lower()
    if fmt in release_formats or q in release_formats:
        return 0
    if fmt != "gguf":  # safetensors: ≥ 8-bit formats, else the 4-bit ones (AWQ, GPTQ, FP4)
        return 0 if fmt in _LOSSLESS_FORMATS else 2
    if q in _LOSSLESS_FORMATS:
        return 0
    m = _GGUF_BITS.search(q)
    if m is None:
        return 2
    bits = int(m.group(1))
    if bits >= 8:
        return 0
    if bits >= 5:
        return 1
    if bits == 4:
        return 2
    if bits == 3:
        return 3
    return 4 if bits == 2 else 5


def band(cls: int) -> int:
    """≥ 4-bit is one band (0), then 3-bit (1), 2-bit (2), 1-bit (3: IQ1_S/IQ1_M/TQ1_0,
    1.56–1.75 bits per weight in llama-quantize's table, which unsloth itself rates
    "Fair" against "Best" for its 2.5-bit DeepSeek-R1)."""
    return max(0, cls - 2)


def is_upcast(fmt: str, release_formats: Sequence[str]) -> bool:
    """A wider copy of weights released narrower (bf16 of an FP8 or MXFP4 release)."""
    narrow = {"fp8", "mxfp4", "nvfp4", "int4"}
    return (
        bool(release_formats)
        and all(r in narrow for r in release_formats)
        and (fmt not in release_formats)
    )


def consumer_gpu(g: Gpu) -> bool:
    """GeForce/TITAN/Radeon RX cards, Apple and other unified-memory chips."""
    name = g.name.lower()
    return (
        g.unified_memory
        or g.vendor == "apple"
        or any(w in name for w in ("geforce", "titan", "radeon rx", "radeon 8", "radeon(tm) 8"))
    )


def preferred_engine(plan: Plan, hw: Hardware) -> str:
    """vLLM on datacenter/workstation GPUs; llama.cpp on consumer cards, Apple, CPUs."""
    used = [g for g in hw.gpus if g.device_id in plan.devices]
    if not used or any(consumer_gpu(g) for g in used):
        return "llamacpp"
    return "vllm"


@dataclass(frozen=True)
class Floors:
    min_tok_s: float
    min_ctx: int


def usable_label(plan: Plan, floors: Floors) -> str | None:
    """None when the plan meets both floors, else its label."""
    slow = plan.speed.decode_tok_s is not None and plan.speed.decode_tok_s < floors.min_tok_s
    short = plan.ctx < floors.min_ctx
    if slow and short:
        return "fits but slow and short"
    if slow:
        return "fits but slow"
    if short:
        return "fits but short"
    return None


@dataclass(frozen=True)
class Keys:
    unusable: int
    capability: float
    #: Release date as a sortable string ("" when unknown): newer first on equal capability.
    released: str
    band: int
    tier: int
    engine_fit: int
    cls: int
    upcast: int
    speed: float
    ctx: float


def shortfall(plan: Plan, min_tok_s: float) -> int:
    """0 for a usable plan; else 1 + how many halvings its decode rate lies below the
    speed floor beyond the first (a plan at 5.8 tok/s against a floor of 10 is 1, one at
    0.9 tok/s is 4), so that when nothing meets the floors the nearest miss comes first."""
    if plan.usable:
        return 0
    tok = plan.speed.decode_tok_s
    if tok is None or tok <= 0 or tok >= min_tok_s:
        return 1
    return max(1, math.ceil(math.log2(min_tok_s / tok)))


def keys(
    plan: Plan,
    hw: Hardware,
    cls: int,
    upcast: bool,
    released: str = "",
    min_tok_s: float = DEFAULT_MIN_TOK_S,
) -> Keys:
    return Keys(
        unusable=shortfall(plan, min_tok_s),
        capability=plan.capability or 0.0,
        released=released,
        band=band(cls),
        tier=PLACEMENT_TIER.get(plan.placement, 3),
        engine_fit=0 if plan.engine == preferred_engine(plan, hw) else 1,
        cls=cls,
        upcast=1 if upcast else 0,
        speed=plan.speed.decode_tok_s or 0.0,
        ctx=float(plan.max_ctx or plan.ctx),
    )


def order(k: Keys, prefer: str) -> tuple[float | str, ...]:
    quality = (
        -k.capability,
        _newest_first(k.released),
        k.band,
        k.tier,
        k.engine_fit,
        k.cls,
        k.upcast,
    )
    if prefer == "speed":
        return (k.unusable, -k.speed, *quality, -k.ctx)
    if prefer == "context":
        return (k.unusable, -k.ctx, *quality, -k.speed)
    return (k.unusable, *quality, -k.speed, -k.ctx)


def _newest_first(date: str) -> str:
    """A key that sorts later dates first ("" — unknown — last)."""
    if not date:
        return "~"
    return "".join(chr(0x7E - ord(c) + 0x20) if " " <= c <= "~" else c for c in date)


def reason(a: Plan, ka: Keys, b: Plan, kb: Keys, prefer: str) -> str:
    """Why plan a ranks above plan b, in one line (the first key that differs)."""
    if ka.unusable != kb.unusable:
        if ka.unusable == 0:
            return f"meets the floors; the next is {b.label}"
        return f"nearer the speed floor: ~{ka.speed:.1f} vs ~{kb.speed:.1f} tok/s"
    speed = (ka.speed > kb.speed, f"faster: ~{ka.speed:.0f} vs ~{kb.speed:.0f} tok/s")
    ctx = (ka.ctx > kb.ctx, f"longer context: {ka.ctx:,.0f} vs {kb.ctx:,.0f} tokens")
    quality = [
        (
            ka.capability > kb.capability,
            f"more capable model ({a.model_id} {_cap(a)} vs {b.model_id} {_cap(b)})",
        ),
        (
            ka.capability == kb.capability and ka.released > kb.released,
            f"newer release ({ka.released} vs {kb.released or 'unknown'})",
        ),
        (ka.band < kb.band, f"{CLASSES[ka.cls]} weights vs {CLASSES[kb.cls]}"),
        (
            ka.tier < kb.tier,
            f"{_PLACEMENT_WORDS[ka.tier]} vs {_PLACEMENT_WORDS[kb.tier]}",
        ),
        (ka.engine_fit < kb.engine_fit, f"{a.engine} suits these devices better"),
        (ka.cls < kb.cls, f"{CLASSES[ka.cls]} weights vs {CLASSES[kb.cls]}"),
        (ka.upcast < kb.upcast, "the release's own format (the other is an upcast)"),
    ]
    if prefer == "speed":
        checks = [speed, *quality, ctx]
    elif prefer == "context":
        checks = [ctx, *quality, speed]
    else:
        checks = [*quality, speed, ctx]
    for better, text in checks:
        if better:
            return text
    return "ties on every key; catalog order"


def _cap(p: Plan) -> str:
    if p.capability is None:
        return "?"
    return f"{p.capability:g}" + (" est." if "estimated" in p.capability_basis else "")


def rank(
    plans: Sequence[Plan],
    hw: Hardware,
    prefer: str,
    info: dict[str, tuple[int, bool, str]],
    min_tok_s: float = DEFAULT_MIN_TOK_S,
) -> list[Plan]:
    """Sort plans best first and fill each plan's rank_reason. `info` maps variant id →
    (quality class, is upcast, release date); `min_tok_s` is the speed floor."""
    keyed = [(p, keys(p, hw, *info[p.variant_id], min_tok_s=min_tok_s)) for p in plans]
    keyed.sort(key=lambda pk: order(pk[1], prefer))
    out: list[Plan] = []
    for i, (p, k) in enumerate(keyed):
        why = ""
        if i + 1 < len(keyed):
            nxt, nk = keyed[i + 1]
            why = reason(p, k, nxt, nk, prefer)
        out.append(replace(p, rank_reason=why))
    return out
