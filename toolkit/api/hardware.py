"""Hardware: detect this machine, read a spec string or profile, save a profile, list GPUs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from toolkit import settings
from toolkit.errors import UsageError
from toolkit.hardware.model import Hardware
from toolkit.hardware.profile import load_hardware, profile_document, save_profile


def hardware(spec: str | None = None, *, probe: bool = False) -> Hardware:
    """This machine (spec None and no DEPLOY_HW), a spec string, or a profile file.

    probe: also measure this machine's RAM bandwidth (about 1 s); the measured rate
    replaces a DMI figure (not a unified-memory chip's). Only for this machine.
    """
    if probe and (spec is not None or settings.default_hw() is not None):
        raise UsageError(
            "--probe measures this machine; it cannot be combined with --hw or DEPLOY_HW",
            hint="run `deploy hw --probe --save box.json` on the machine itself",
        )
    hw = load_hardware(spec)
    return probe_ram_bandwidth(hw) if probe else hw


def probe_ram_bandwidth(hw: Hardware) -> Hardware:
    """`hw` with the host's RAM bandwidth measured now, and a note saying so."""
    from toolkit.hardware.host import measure_ram_bandwidth

    measured = measure_ram_bandwidth()
    host = hw.host
    notes = [*hw.notes, measured.describe()]
    if host.ram_bandwidth_source == "chip":  # unified memory: the vendor's figure stays
        notes.append("kept the chip's unified-memory bandwidth for planning")
    else:
        host = replace(
            host, ram_bandwidth_bytes_s=measured.bytes_s, ram_bandwidth_source="measured"
        )
    return replace(hw, host=host, notes=tuple(notes))


def hardware_document(hw: Hardware) -> dict[str, Any]:
    """What `deploy hw --json` prints: the profile document plus totals (bytes)."""
    doc = profile_document(hw)
    doc["summary"] = {
        "gpu_count": len(hw.gpus),
        "gpu_total_bytes": sum(g.total_bytes for g in hw.gpus),
        "gpu_free_bytes": sum(g.free_bytes for g in hw.gpus),
        "ram_total_bytes": hw.host.ram_total_bytes,
        "fingerprint": hw.fingerprint(),
    }
    return doc


def save_hardware(spec: str | None, path: Path, *, probe: bool = False) -> tuple[Hardware, Path]:
    """Write the profile of `spec` (default: this machine) to `path`."""
    hw = hardware(spec, probe=probe)
    return hw, save_profile(hw, path)


def list_gpus() -> list[dict[str, Any]]:
    """The GPU spec table, one row per entry (bytes, bytes/s, FLOP/s)."""
    from toolkit.hardware.specs import table

    specs = table()
    rows = []
    for s in specs.entries:
        rows.append(
            {
                "name": s.name,
                "aliases": list(s.aliases),
                "full_name": s.full_name,
                "vendor": s.vendor,
                "memory_bytes": s.memory_bytes,
                "memory_options_bytes": list(s.memory_options),
                "bandwidth_bytes_s": s.bandwidth_bytes_s,
                "arch": s.arch,
                "compute_capability": s.compute_capability,
                "bf16": s.bf16,
                "fp8": s.fp8,
                "int4": s.int4,
                "fp4": s.fp4,
                "fp16_flops": s.fp16_flops,
                "fp8_flops": s.fp8_flops,
                "fp4_flops": s.fp4_flops,
                "int8_ops": s.int8_ops,
                "fp32_flops": s.fp32_flops,
                "flops_note": s.flops_note,
                "fabric": s.fabric,
                "unified_memory": s.unified_memory,
                "note": s.note,
                "sources": [specs.sources[r] for r in s.sources],
            }
        )
    return rows


__all__ = ["hardware", "hardware_document", "list_gpus", "probe_ram_bandwidth", "save_hardware"]
