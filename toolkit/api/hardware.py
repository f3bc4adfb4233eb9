"""Hardware: detect this machine, read a spec string or profile, save a profile, list GPUs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.hardware.model import Hardware
from toolkit.hardware.profile import load_hardware, profile_document, save_profile


def hardware(spec: str | None = None) -> Hardware:
    """This machine (spec None and no DEPLOY_HW), a spec string, or a profile file."""
    return load_hardware(spec)


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


def save_hardware(spec: str | None, path: Path) -> tuple[Hardware, Path]:
    """Write the profile of `spec` (default: this machine) to `path`."""
    hw = load_hardware(spec)
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
                "unified_memory": s.unified_memory,
                "note": s.note,
                "sources": [specs.sources[r] for r in s.sources],
            }
        )
    return rows


__all__ = ["hardware", "hardware_document", "list_gpus", "save_hardware"]
