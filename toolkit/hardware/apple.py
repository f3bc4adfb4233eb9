"""Apple Silicon: chip, unified memory and the GPU working-set cap (sysctl, Metal)."""

from __future__ import annotations

from toolkit.hardware.probe import Probe


def probe_apple() -> Probe:
    return Probe(notes=("Apple: probe not implemented yet",))


__all__ = ["probe_apple"]
