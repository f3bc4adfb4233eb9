"""Decode and prefill estimates. Roofline arithmetic, stated with its basis.

Decode: each generated token reads the active weights and the KV cache once. Bytes that
live on a GPU stream at that GPU's bandwidth (split over TP ranks in parallel); bytes on
the CPU at RAM bandwidth; the times add up (layers run one after another), so the slowest
part bounds the rest. Achieved bandwidth is a fraction of peak (`EFFICIENCY`).
Prefill: 2 × active parameters FLOPs per token over the compute available.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.planner.types import SpeedEstimate

#: Fraction of peak memory bandwidth decode achieves (typical for llama.cpp and vLLM at
#: batch 1; stated in every basis line).
EFFICIENCY = 0.7
#: Assumed RAM bandwidth when the host's is unknown (dual-channel DDR4-3200: 51.2 GB/s).
DEFAULT_RAM_BW = 51.2e9


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
    prefill = None
    if flops_per_token and flops:
        prefill = flops * 0.5 / flops_per_token
    basis = (
        f"roofline estimate (an upper bound): bytes read per token / "
        f"{int(EFFICIENCY * 100)}% of peak bandwidth; bounded by {slowest}"
    )
    if ram_assumed:
        basis += f"; RAM bandwidth assumed {DEFAULT_RAM_BW / 1e9:.1f} GB/s"
    if prefill is not None:
        basis += "; prefill from FLOPs at 50% of peak"
    return SpeedEstimate(round(per_stream, 1), round(agg, 1), _r(prefill), basis=basis)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)
