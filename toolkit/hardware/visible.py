"""Apply a CUDA_VISIBLE_DEVICES-style filter to the devices a driver lists.

CUDA semantics: a comma-separated list of indices or UUID prefixes (`GPU-…`, `MIG-…`);
the process sees the listed devices in that order, renumbered from 0; the list stops at
the first entry that names no device; an empty value hides every device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from toolkit.hardware.model import Gpu


def apply_visible(
    gpus: Sequence[Gpu], visible: str | None, *, variable: str = "CUDA_VISIBLE_DEVICES"
) -> tuple[tuple[Gpu, ...], tuple[str, ...]]:
    """The devices a process would see, renumbered, and a note when the filter applied."""
    if visible is None:
        return tuple(gpus), ()
    chosen: list[Gpu] = []
    notes: list[str] = []
    for raw in visible.split(","):
        entry = raw.strip()
        if not entry:
            break
        found = _find(gpus, entry)
        if not found:
            notes.append(f"{variable}: {entry!r} names no device; later entries are ignored")
            break
        for g in found:
            if g not in chosen:
                chosen.append(g)
    renumbered = tuple(
        replace(
            g,
            index=i,
            physical_index=g.physical_index if g.physical_index is not None else g.index,
        )
        for i, g in enumerate(chosen)
    )
    notes.insert(0, f"{variable}={visible!r}: {len(renumbered)} of {len(gpus)} devices visible")
    return renumbered, tuple(notes)


def _find(gpus: Sequence[Gpu], entry: str) -> list[Gpu]:
    if entry.lstrip("-").isdigit():
        n = int(entry)
        return [
            g for g in gpus if (g.physical_index if g.physical_index is not None else g.index) == n
        ]
    lowered = entry.lower()
    matches = [g for g in gpus if g.uuid and g.uuid.lower().startswith(lowered)]
    if matches:
        return matches
    # A bare UUID without its GPU-/MIG- prefix is accepted by CUDA too.
    return [g for g in gpus if g.uuid and g.uuid.lower().split("-", 1)[-1].startswith(lowered)]


__all__ = ["apply_visible"]
