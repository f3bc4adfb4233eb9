"""Decode and prefill estimates. Roofline arithmetic, stated with its basis.

Decode: each generated token reads the active weights and the KV cache once. Bytes that
live on a GPU stream at that GPU's bandwidth (split over TP ranks in parallel); bytes on
the CPU at RAM bandwidth; the times add up (layers run one after another), so the slowest
part bounds the rest. Achieved bandwidth is a fraction of peak (`EFFICIENCY`).
Prefill: 2 × active parameters FLOPs per token over the compute available, at 50% of peak.
llama.cpp and vLLM's CPU backend: each place (GPU, CPU) does the share of the FLOPs that
matches its share of the active weights read per token, and the times add up. A CPU's peak
is physical cores × FP32 FLOP per cycle of its widest FMA unit (from the ISA flags) ×
an assumed 3.0 GHz; no core count, no estimate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from toolkit.hardware.model import Host
from toolkit.planner.types import SpeedEstimate

#: Fraction of peak memory bandwidth decode achieves (typical for llama.cpp and vLLM at
#: batch 1; stated in every basis line).
EFFICIENCY = 0.7
#: Assumed RAM bandwidth when the host's is unknown (dual-channel DDR4-3200: 51.2 GB/s).
DEFAULT_RAM_BW = 51.2e9


#: Prefill achieves this fraction of peak compute (stated in the basis).
PREFILL_EFFICIENCY = 0.5
#: CPU clock assumed for the FLOP rate (hosts do not report a sustained all-core clock).
ASSUMED_CPU_HZ = 3.0e9


def cpu_flop_per_cycle(flags: tuple[str, ...]) -> tuple[int, str]:
    """FP32 FLOP per cycle per core: 2 FMA units × SIMD lanes × 2 (multiply + add)."""
    f = set(flags)
    if "avx512f" in f:
        return 64, "AVX-512 (2×16-lane FMA)"
    if "avx2" in f and "fma" in f:
        return 32, "AVX2+FMA (2×8-lane FMA)"
    if "neon" in f or "asimd" in f:
        return 16, "NEON (2×4-lane FMA)"
    if "avx" in f:
        return 16, "AVX (8-lane add + mul)"
    if not f:
        return 32, "ISA flags unknown, AVX2+FMA assumed (2×8-lane FMA)"
    return 8, "SSE (4-lane add + mul)"


def cpu_flops(host: Host) -> tuple[float | None, str]:
    """Peak FP32 FLOP/s of the host's physical cores and how it was derived."""
    if not host.cores_known or host.physical_cores <= 0:
        return None, "CPU core count unknown (add cores=N)"
    per, isa = cpu_flop_per_cycle(host.cpu_flags)
    rate = host.physical_cores * per * ASSUMED_CPU_HZ
    return rate, (
        f"CPU {host.physical_cores} cores × {per} FLOP/cycle ({isa}) × "
        f"{ASSUMED_CPU_HZ / 1e9:.1f} GHz assumed"
    )


def prefill_by_share(
    parts: list[Part], flops_by_where: Mapping[str, float | None], flops_per_token: float
) -> float | None:
    """Prefill tok/s when each place computes its share (by active bytes read) of the FLOPs
    and the places run one after another; None when any place's compute is unknown."""
    total = sum(p.bytes_per_token for p in parts if p.bytes_per_token > 0)
    if total <= 0 or flops_per_token <= 0:
        return None
    seconds = 0.0
    for p in parts:
        if p.bytes_per_token <= 0:
            continue
        rate = flops_by_where.get(p.where)
        if not rate:
            return None
        seconds += (p.bytes_per_token / total) * flops_per_token / (rate * PREFILL_EFFICIENCY)
    return 1.0 / seconds if seconds > 0 else None


@dataclass(frozen=True)
class Part:
    """Bytes read per token from one place and that place's bandwidth."""

    where: str
    bytes_per_token: float
    bandwidth: float | None
    #: Parallel ranks sharing the bytes (TP): each reads bytes/ranks at the same time.
    ranks: int = 1


def decode(
    parts: list[Part],
    *,
    concurrency: int = 1,
    shared_bytes: float = 0.0,
    flops_per_token: float | None = None,
    flops: float | None = None,
    ram_assumed: bool = False,
    prefill_tok_s: float | None = None,
    prefill_basis: str = "",
) -> SpeedEstimate:
    """Per-stream decode tok/s, aggregate over `concurrency` streams, and prefill."""
    seconds = 0.0
    slowest = ""
    worst = -1.0
    unknown = False
    for p in parts:
        if p.bytes_per_token <= 0:
            continue
        if not p.bandwidth:
            unknown = True
            continue
        t = p.bytes_per_token / p.ranks / (p.bandwidth * EFFICIENCY)
        seconds += t
        if t > worst:
            worst, slowest = t, p.where
    if unknown or seconds <= 0:
        return SpeedEstimate(None, None, None, basis="bandwidth unknown: no speed estimate")
    per_stream = 1.0 / seconds
    # With several streams the weights are read once per step for all of them; KV is per
    # stream. shared_bytes is the weights part of the bytes above.
    agg = per_stream
    if concurrency > 1:
        total = sum(p.bytes_per_token / p.ranks / (p.bandwidth or 1) / EFFICIENCY for p in parts)
        weights_t = total * (shared_bytes / max(1.0, sum(p.bytes_per_token for p in parts)))
        step = weights_t + (total - weights_t) * concurrency
        per_stream = 1.0 / step
        agg = concurrency / step
    prefill = prefill_tok_s
    if prefill is None and flops_per_token and flops:
        prefill = flops * PREFILL_EFFICIENCY / flops_per_token
    basis = (
        f"roofline estimate (an upper bound): bytes read per token / "
        f"{int(EFFICIENCY * 100)}% of peak bandwidth; bounded by {slowest}"
    )
    if ram_assumed:
        basis += f"; RAM bandwidth assumed {DEFAULT_RAM_BW / 1e9:.1f} GB/s"
    if prefill is not None:
        basis += "; prefill from FLOPs at 50% of peak"
        if prefill_basis:
            basis += f" ({prefill_basis})"
    return SpeedEstimate(round(per_stream, 1), round(agg, 1), _r(prefill), basis=basis)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)
