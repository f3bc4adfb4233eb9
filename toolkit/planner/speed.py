"""Decode and prefill estimates for a plan, from the fitted speed model.

Decode: each generated token reads the active weights and the KV cache once; bytes on a
GPU stream at that GPU's bandwidth (split over TP ranks), bytes on the CPU at RAM
bandwidth, and the times add up, with the fixed costs of `toolkit.planner.speedmodel`.
Prefill: 2 × active parameters FLOPs per token; each place (GPU, CPU) does the share of
the FLOPs that matches its share of the active bytes. A CPU's peak is physical cores ×
FP32 FLOP per cycle of its widest FMA unit (from the ISA flags) × an assumed 3.0 GHz; no
core count, no CPU estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.hardware.model import Host
from toolkit.planner.speedmodel import (
    Place,
    SpeedCase,
    decode_tok_s,
    fitted,
    prefill_tok_s,
)
from toolkit.planner.types import SpeedEstimate

#: Assumed RAM bandwidth when the host's is unknown (dual-channel DDR4-3200: 51.2 GB/s).
DEFAULT_RAM_BW = 51.2e9

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


@dataclass(frozen=True)
class Part:
    """Bytes read per token from one place and that place's bandwidth."""

    where: str
    bytes_per_token: float
    bandwidth: float | None
    #: Parallel ranks sharing the bytes (TP): each reads bytes/ranks at the same time.
    ranks: int = 1


def case_places(parts: list[Part]) -> tuple[Place, ...]:
    """The speed model's places: each part, with its share of the FLOPs by active bytes."""
    total = sum(p.bytes_per_token for p in parts if p.bytes_per_token > 0)
    return tuple(
        Place(
            "cpu" if p.where.startswith("cpu") else "gpu",
            p.bytes_per_token,
            p.bandwidth,
            p.ranks,
            p.bytes_per_token / total if total > 0 and p.bytes_per_token > 0 else 0.0,
        )
        for p in parts
    )


def estimate(
    case: SpeedCase, *, slowest: str, ram_assumed: bool = False, cpu_why: str = ""
) -> SpeedEstimate:
    """Per-stream and aggregate decode, prefill, the expected range, and the basis line."""
    fit = fitted()
    dec = decode_tok_s(case, fit.params)
    if dec is None:
        return SpeedEstimate(None, None, None, basis="bandwidth unknown: no speed estimate")
    per_stream, agg = dec
    pre = prefill_tok_s(case, fit.params)
    basis = (
        f"fitted estimate ({fit.cases} published measurements, {fit.sources} sources; "
        f"range = the middle 80% of leave-one-source-out errors); bounded by {slowest}"
    )
    if ram_assumed:
        basis += f"; RAM bandwidth assumed {DEFAULT_RAM_BW / 1e9:.1f} GB/s (add bw= to --hw)"
    if pre is None:
        basis += "; prefill unknown (no FLOP/s figure for a device)"
    elif cpu_why and any(p.kind == "cpu" and p.flop_share > 0 for p in case.places):
        basis += f"; {cpu_why}"
    return SpeedEstimate(
        round(per_stream, 1),
        round(agg, 1),
        _r(pre),
        basis=basis,
        decode_low=round(per_stream * fit.decode_low, 1),
        decode_high=round(per_stream * fit.decode_high, 1),
    )


def slowest_part(parts: list[Part]) -> str:
    """The place whose bytes take longest at peak bandwidth (named in the basis line)."""
    worst, name = -1.0, ""
    for p in parts:
        if p.bytes_per_token > 0 and p.bandwidth:
            t = p.bytes_per_token / p.ranks / p.bandwidth
            if t > worst:
                worst, name = t, p.where
    return name


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)
