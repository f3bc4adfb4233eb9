"""AMD GPUs through `rocm-smi --json` (ROCm 5/6) or, without it, `amd-smi --json` (ROCm 6+).

rocm-smi: `rocm-smi --showproductname --showmeminfo vram --json` answers per card
"VRAM Total Memory (B)", "VRAM Total Used Memory (B)", "Card Series"/"Device Name" and
"GFX Version". amd-smi: `amd-smi static --asic --json` (market_name, target_graphics_version)
and `amd-smi metric --mem-usage --json` (total_vram, used_vram with units).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

from toolkit.hardware.model import Gpu
from toolkit.hardware.probe import Probe

ROCM_SMI_ARGS = ("--showproductname", "--showmeminfo", "vram", "--json")
_UNIT = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "kib": 1024, "mib": 1024**2}


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)


def _first(card: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = card.get(key)
        if value not in (None, "", "N/A"):
            return str(value)
    return None


def parse_rocm_smi(text: str) -> list[Gpu]:
    """GPUs from `rocm-smi --showproductname --showmeminfo vram --json`."""
    doc = json.loads(text)
    gpus: list[Gpu] = []
    cards = sorted((k for k in doc if re.fullmatch(r"card\d+", k)), key=lambda k: int(k[4:]))
    for key in cards:
        card = doc[key]
        total = _first(card, "VRAM Total Memory (B)")
        if total is None:
            continue
        used = int(_first(card, "VRAM Total Used Memory (B)") or 0)
        name = _first(card, "Card Series", "Card series", "Device Name", "Card SKU") or "AMD GPU"
        gpus.append(
            Gpu(
                index=len(gpus),
                name=name,
                vendor="amd",
                total_bytes=int(total),
                free_bytes=int(total) - used,
                used_by_others_bytes=used,
                compute_capability=_first(card, "GFX Version"),
                arch=_first(card, "GFX Version"),
                uuid=_first(card, "Unique ID"),
                physical_index=int(key[4:]),
            )
        )
    return gpus


def _size(value: Any) -> int | None:
    """amd-smi sizes: {"value": 196592, "unit": "MB"} or "196592 MB" or a bare MB number."""
    number: Any
    if isinstance(value, dict):
        number, unit = value.get("value"), str(value.get("unit", "MB"))
    elif isinstance(value, str):
        match = re.match(r"\s*([\d.]+)\s*([A-Za-z]*)", value)
        if not match:
            return None
        number, unit = match.group(1), match.group(2) or "MB"
    elif isinstance(value, (int, float)):
        number, unit = value, "MB"
    else:
        return None
    try:
        return int(float(number) * _UNIT.get(unit.lower(), 1024**2))
    except (TypeError, ValueError):
        return None


def _gpu_list(doc: Any) -> list[dict[str, Any]]:
    if isinstance(doc, dict):
        doc = doc.get("gpu_data", doc.get("gpus", [doc]))
    return [d for d in doc if isinstance(d, dict)] if isinstance(doc, list) else []


def parse_amd_smi(static_text: str, metric_text: str) -> list[Gpu]:
    """GPUs from `amd-smi static --asic --json` and `amd-smi metric --mem-usage --json`."""
    static = {int(d.get("gpu", i)): d for i, d in enumerate(_gpu_list(json.loads(static_text)))}
    metric = {int(d.get("gpu", i)): d for i, d in enumerate(_gpu_list(json.loads(metric_text)))}
    gpus: list[Gpu] = []
    for index in sorted(static):
        asic = static[index].get("asic") or {}
        usage = (metric.get(index) or {}).get("mem_usage") or {}
        total = _size(usage.get("total_vram"))
        if total is None:
            total = _size((static[index].get("vram") or {}).get("size"))
        if total is None:
            continue
        used = _size(usage.get("used_vram")) or 0
        target = asic.get("target_graphics_version")
        gpus.append(
            Gpu(
                index=len(gpus),
                name=str(asic.get("market_name") or "AMD GPU"),
                vendor="amd",
                total_bytes=total,
                free_bytes=total - used,
                used_by_others_bytes=used,
                compute_capability=str(target) if target else None,
                arch=str(target) if target else None,
                physical_index=index,
            )
        )
    return gpus


def probe_amd(rocm_smi: str | None = None, amd_smi: str | None = None) -> Probe:
    """Every ROCm device; no subprocess when neither tool is on PATH."""
    rocm = rocm_smi or shutil.which("rocm-smi")
    amd = amd_smi or shutil.which("amd-smi")
    if rocm is None and amd is None:
        return Probe(notes=("AMD: neither rocm-smi nor amd-smi on PATH",))
    try:
        if rocm is not None:
            result = _run([rocm, *ROCM_SMI_ARGS])
            if result.returncode == 0 and result.stdout.strip():
                return Probe(gpus=tuple(parse_rocm_smi(result.stdout)))
            if amd is None:
                return Probe(notes=(f"AMD: rocm-smi failed: {result.stderr.strip()[:200]}",))
        assert amd is not None
        static = _run([amd, "static", "--asic", "--json"])
        metric = _run([amd, "metric", "--mem-usage", "--json"])
        if static.returncode != 0:
            return Probe(notes=(f"AMD: amd-smi failed: {static.stderr.strip()[:200]}",))
        return Probe(gpus=tuple(parse_amd_smi(static.stdout, metric.stdout or "[]")))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Probe(notes=(f"AMD: probe failed: {exc}",))
    except (ValueError, KeyError, TypeError) as exc:
        return Probe(notes=(f"AMD: output not understood: {exc}",))


__all__ = ["parse_amd_smi", "parse_rocm_smi", "probe_amd"]
