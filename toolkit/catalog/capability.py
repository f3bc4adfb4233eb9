"""One capability number per model, comparable across families.

Recipes give a published score (`capability: {score, scale, source}`). The scale most
models are scored on is the main one; a model scored on it keeps its score. Any other
model (another scale, or none) gets an estimate on the main scale from its total
parameters: a least-squares line of score against log10(parameters) through the models
scored on the main scale, taken at its lower bound (the line less the RMS of its
residuals), so an estimate outranks a published score only when it clearly exceeds it.
The basis says which one it is.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.catalog.schema import Model


@dataclass(frozen=True)
class Capability:
    score: float
    basis: str
    estimated: bool


def main_scale(models: Iterable[Model]) -> str | None:
    counts = Counter(m.capability.scale for m in models if m.capability is not None)
    if not counts:
        return None
    # Most models first; ties by name so the choice does not depend on file order.
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def _fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(intercept, slope) of y on x; None when there are too few distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    slope = sxy / sxx
    return my - slope * mx, slope


def capabilities(models: Iterable[Model]) -> dict[str, Capability]:
    """Model id → its capability on the main scale (published or estimated)."""
    ms = list(models)
    scale = main_scale(ms)
    out: dict[str, Capability] = {}
    points: list[tuple[float, float]] = []
    for m in ms:
        c = m.capability
        if c is not None and c.scale == scale:
            out[m.id] = Capability(c.score, f"{c.score:g} on {c.scale} ({c.source})", False)
            points.append((math.log10(m.params.total), c.score))
    line = _fit(points)
    if line is None:
        # Nothing to map onto: total parameters (log10) stand in, the same for all.
        return {
            m.id: Capability(
                math.log10(m.params.total), "no published scores: total parameters", True
            )
            for m in ms
        }
    a, b = line
    rms = math.sqrt(sum((y - a - b * x) ** 2 for x, y in points) / len(points))
    for m in ms:
        if m.id in out:
            continue
        est = a + b * math.log10(m.params.total)
        other = m.capability
        seen = f"; published: {other.score:g} on {other.scale}" if other is not None else ""
        out[m.id] = Capability(
            round(est - rms, 1),
            f"{est:.1f} ± {rms:.1f} on {scale} estimated from {m.params.total / 1e9:g}B "
            f"parameters (a line through {len(points)} scored models), ranked at "
            f"{est - rms:.1f}{seen}",
            True,
        )
    return out
