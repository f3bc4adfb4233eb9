"""AMD GPUs through `amd-smi` (ROCm 6+) or `rocm-smi` JSON output."""

from __future__ import annotations

import shutil

from toolkit.hardware.probe import Probe


def probe_amd() -> Probe:
    """Every ROCm device `amd-smi` or `rocm-smi` reports; no subprocess when neither exists."""
    if shutil.which("amd-smi") is None and shutil.which("rocm-smi") is None:
        return Probe(notes=("AMD: neither amd-smi nor rocm-smi on PATH",))
    return Probe(notes=("AMD: probe not implemented yet",))


__all__ = ["probe_amd"]
