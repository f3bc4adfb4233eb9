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


def meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """/proc/meminfo in bytes ({"MemTotal": …, "MemAvailable": …, "SwapTotal": …})."""
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def physical_cores(cpuinfo_text: str) -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo; None when not listed."""
    cores: set[tuple[str, str]] = set()
    physical = core = None
    for line in [*cpuinfo_text.splitlines(), ""]:
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "physical id":
            physical = value.strip()
        elif name == "core id":
            core = value.strip()
        elif not line.strip():
            if core is not None:
                cores.add((physical or "0", core))
            physical = core = None
    return len(cores) or None


def _linux_memory() -> tuple[int, int, int] | None:
    try:
        info = meminfo()
        return info["MemTotal"], info["MemAvailable"], info.get("SwapTotal", 0)
    except (OSError, KeyError):
        return None


def probe_host(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[Host, tuple[str, ...]]:
    """This machine's CPU and memory, and notes on what could not be read.

    On Linux everything comes from /proc and /sys (fast); elsewhere from psutil.
    """
    notes: list[str] = []
    model: str | None = None
    flags: tuple[str, ...] = ()
    cpu_text = ""
    try:
        cpu_text = cpuinfo.read_text(errors="replace")
        model, flags = parse_cpuinfo(cpu_text)
    except OSError:
        if platform.system() == "Linux":
            notes.append(f"CPU flags unknown: {cpuinfo} not readable")
    if platform.machine().lower() in ("arm64", "aarch64") and "neon" not in flags:
        flags = (*flags, "neon")  # NEON (Advanced SIMD) is mandatory on ARMv8-A
    if model is None:
        model = platform.processor() or None
    memory = _linux_memory()
    physical = physical_cores(cpu_text) if cpu_text else None
    logical = os.cpu_count() or 1
    if memory is None or physical is None:
        import psutil

        if memory is None:
            vm = psutil.virtual_memory()
            memory = int(vm.total), int(vm.available), int(psutil.swap_memory().total)
        if physical is None:
            physical = psutil.cpu_count(logical=False) or logical
        logical = psutil.cpu_count(logical=True) or logical
    if hasattr(os, "sched_getaffinity"):
        allowed = len(os.sched_getaffinity(0))
        if allowed < logical:
            notes.append(f"this process may use {allowed} of {logical} logical CPUs")
            physical = min(physical, allowed)
            logical = allowed
    total, available, swap = memory
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
        swap_total_bytes=swap,
        numa_nodes=numa_nodes(),
        ram_bandwidth_bytes_s=None,
        disk_free_bytes=disk_bytes,
        disk_path=disk_path,
        arch=platform.machine() or None,
        os=platform.system().lower() or None,
    )
    return host, tuple(notes)


__all__ = [
    "cgroup_memory_limit",
    "disk_free",
    "meminfo",
    "numa_nodes",
    "parse_cpuinfo",
    "physical_cores",
    "probe_host",
]
