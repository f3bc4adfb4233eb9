"""What one probe found: devices, or notes saying why it found none."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.hardware.model import Gpu


@dataclass(frozen=True)
class Probe:
    """A probe's answer. `notes` say why something is missing ("NVML not available: …")."""

    gpus: tuple[Gpu, ...] = ()
    notes: tuple[str, ...] = ()


__all__ = ["Probe"]
