"""CPU, RAM, swap, NUMA and disk of this machine (psutil, /proc, /sys). Never raises."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from toolkit import settings
from toolkit.hardware.model import Host

#: ISA flags engines care about, as Linux names them in /proc/cpuinfo.
X86_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
)
#: ARM "Features" names; `asimd` is NEON and is reported as `neon`.
ARM_FLAGS = {
    "asimd": "neon",
    "asimddp": "dotprod",
    "sve": "sve",
    "sve2": "sve2",
    "i8mm": "i8mm",
    "bf16": "bf16",
    "fphp": "fp16",
}


def parse_cpuinfo(text: str) -> tuple[str | None, tuple[str, ...]]:
    """CPU model name and the engine-relevant ISA flags from /proc/cpuinfo text."""
    model: str | None = None
    raw: set[str] = set()
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        if name in ("model name", "hardware", "cpu model") and model is None:
            model = value.strip() or None
        elif name in ("flags", "features") and not raw:
            raw = set(value.split())
    flags = [f for f in X86_FLAGS if f in raw]
    flags += [ARM_FLAGS[f] for f in ARM_FLAGS if f in raw]
    return model, tuple(flags)


def numa_nodes(root: Path = Path("/sys/devices/system/node")) -> int:
    try:
        count = sum(1 for p in root.glob("node[0-9]*") if p.is_dir())
    except OSError:
        count = 0
    return max(count, 1)


def cgroup_memory_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The cgroup v2 (or v1) memory limit of this process's container, if any."""
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            text = (root / name).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def disk_free(path: Path) -> tuple[int | None, str]:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free, str(path)
    except OSError:
        return None, str(path)


def probe_host(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[Host, tuple[str, ...]]:
    """This machine's CPU and memory, and notes on what could not be read."""
    import psutil

    notes: list[str] = []
    model: str | None = None
    flags: tuple[str, ...] = ()
    try:
        model, flags = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    except OSError:
        if platform.system() == "Linux":
            notes.append(f"CPU flags unknown: {cpuinfo} not readable")
    if platform.machine().lower() in ("arm64", "aarch64") and "neon" not in flags:
        flags = (*flags, "neon")  # NEON (Advanced SIMD) is mandatory on ARMv8-A
    if model is None:
        model = platform.processor() or None
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    if hasattr(os, "sched_getaffinity"):
        allowed = len(os.sched_getaffinity(0))
        if allowed < logical:
            notes.append(f"this process may use {allowed} of {logical} logical CPUs")
            physical = min(physical, allowed)
            logical = allowed
    vm = psutil.virtual_memory()
    total, available = int(vm.total), int(vm.available)
    limit = cgroup_memory_limit()
    if limit is not None and limit < total:
        notes.append(f"RAM limited by the container's cgroup to {limit} bytes")
        available = min(available, limit)
        total = limit
    disk_bytes, disk_path = disk_free(settings.hf_hub_cache())
    host = Host(
        cpu_model=model,
        physical_cores=int(physical),
        logical_cores=int(logical),
        ram_total_bytes=total,
        ram_available_bytes=available,
        cpu_flags=flags,
        swap_total_bytes=int(psutil.swap_memory().total),
        numa_nodes=numa_nodes(),
        ram_bandwidth_bytes_s=None,
        disk_free_bytes=disk_bytes,
        disk_path=disk_path,
        arch=platform.machine() or None,
        os=platform.system().lower() or None,
    )
    return host, tuple(notes)


__all__ = ["cgroup_memory_limit", "disk_free", "numa_nodes", "parse_cpuinfo", "probe_host"]
