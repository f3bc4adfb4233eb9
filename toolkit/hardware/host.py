"""CPU, RAM, swap, NUMA and disk of this machine (psutil, /proc, /sys). Never raises.

RAM bandwidth: from the DMI memory-device table (`dmidecode -t 17`: configured speed ×
populated channels × channel width, a theoretical peak) when it may be read (root, or a
readable /sys/firmware/dmi/tables/DMI); measured on request (`measure_ram_bandwidth`,
`deploy hw --probe`); otherwise unknown.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DmiMemory:
    """RAM bandwidth derived from the DMI memory devices (SMBIOS type 17)."""

    bandwidth_bytes_s: float
    channels: int
    modules: int
    #: Slowest configured speed of the populated modules, MT/s.
    mt_s: int
    memory_type: str | None
    #: False when the locators do not name channels: each module is then taken as its own
    #: channel (right for one module per channel, too high for two per channel).
    channels_named: bool

    def describe(self) -> str:
        kind = f"{self.memory_type}-{self.mt_s}" if self.memory_type else f"{self.mt_s} MT/s"
        how = (
            f"{self.channels} channel(s) named by the slot locators"
            if self.channels_named
            else f"{self.modules} module(s), one channel each assumed (locators name no channel)"
        )
        return f"RAM bandwidth {self.bandwidth_bytes_s / 1e9:.1f} GB/s from DMI: {kind}, {how}"


_HANDLE = re.compile(r"^Handle 0x[0-9A-Fa-f]+, DMI type (\d+)", re.M)
_SPEED = re.compile(r"^(\d+)\s*(?:MT/s|MHz)$")
_WIDTH = re.compile(r"^(\d+)\s*bits$")
_CHANNEL = re.compile(r"channel\s*_?([a-z0-9]+)")
_DIMM_LETTER = re.compile(r"dimm\s*_?([a-z])\d")
_SOCKET = re.compile(r"\b(?:p|cpu|socket)\s*_?(\d+)")
_NODE = re.compile(r"(?:node|controller)\s*_?(\d+)")


def _records(text: str) -> list[dict[str, str]]:
    """The `Key: value` fields of each type-17 record in dmidecode output."""
    out: list[dict[str, str]] = []
    starts = list(_HANDLE.finditer(text))
    for i, m in enumerate(starts):
        if m.group(1) != "17":
            continue
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        fields: dict[str, str] = {}
        for line in text[m.end() : end].splitlines():
            key, sep, value = line.strip().partition(":")
            if sep and key and key not in fields:
                fields[key] = value.strip()
        out.append(fields)
    return out


def _channel_key(fields: dict[str, str]) -> tuple[str, str, str] | None:
    """(socket, controller/node, channel) named by a slot's locators, or None."""
    text = f"{fields.get('Bank Locator', '')} | {fields.get('Locator', '')}".lower()
    channel = _CHANNEL.search(text) or _DIMM_LETTER.search(text)
    if channel is None:
        return None
    socket = _SOCKET.search(text)
    node = _NODE.search(text)
    return (
        socket.group(1) if socket else "",
        node.group(1) if node else "",
        channel.group(1),
    )


def parse_dmidecode_memory(text: str) -> DmiMemory | None:
    """RAM bandwidth from `dmidecode -t 17` (or `-t memory`) output; None when no
    populated module states a speed.

    Per populated module: configured speed (else rated speed) in MT/s and data width in
    bits (64 when unknown). Modules sharing a channel (same socket, controller and channel
    in the locators) count once; peak = Σ channels width/8 × MT/s.
    """
    channels: dict[tuple[str, str, str], tuple[int, int]] = {}
    per_module: list[tuple[int, int]] = []
    kinds: set[str] = set()
    named = True
    for f in _records(text):
        size = f.get("Size", "")
        if not size or size.startswith(("No Module", "Not Installed", "0 ", "Unknown")):
            continue
        speed = next(
            (m for k in ("Configured Memory Speed", "Configured Clock Speed", "Speed")
             if (m := _SPEED.match(f.get(k, "")))),
            None,
        )  # fmt: skip
        if speed is None:
            continue
        mt_s = int(speed.group(1))
        w = _WIDTH.match(f.get("Data Width", ""))
        width = int(w.group(1)) if w else 64
        per_module.append((mt_s, width))
        if f.get("Type") not in (None, "", "Unknown", "Other"):
            kinds.add(f["Type"])
        key = _channel_key(f)
        if key is None:
            named = False
            continue
        old = channels.get(key)
        channels[key] = (min(mt_s, old[0]), max(width, old[1])) if old else (mt_s, width)
    if not per_module:
        return None
    rates = list(channels.values()) if named else per_module
    return DmiMemory(
        bandwidth_bytes_s=sum(width / 8 * mt_s * 1e6 for mt_s, width in rates),
        channels=len(rates),
        modules=len(per_module),
        mt_s=min(mt_s for mt_s, _ in per_module),
        memory_type=sorted(kinds)[0] if len(kinds) == 1 else None,
        channels_named=named,
    )


#: Where the kernel exposes the DMI table; dmidecode reads it (root only on most systems).
DMI_TABLE = Path("/sys/firmware/dmi/tables/DMI")


def dmi_ram_bandwidth(dmidecode: str | None = None) -> tuple[DmiMemory | None, str | None]:
    """RAM bandwidth from dmidecode, when it is installed and the DMI table is readable.

    Returns (result, note): note says why nothing was read, or None when nothing was tried
    (no dmidecode, not Linux, table not readable: asking would only fail or prompt).
    """
    path = dmidecode or shutil.which("dmidecode")
    if path is None or platform.system() != "Linux":
        return None, None
    if not (os.access(DMI_TABLE, os.R_OK) or (hasattr(os, "geteuid") and os.geteuid() == 0)):
        return None, None
    try:
        result = subprocess.run(
            [path, "-t", "17"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"RAM bandwidth: dmidecode failed: {exc}"
    found = parse_dmidecode_memory(result.stdout)
    if found is None:
        return None, "RAM bandwidth: dmidecode lists no module with a speed"
    return found, None


@dataclass(frozen=True)
class MeasuredBandwidth:
    bytes_s: float
    threads: int
    buffer_bytes: int
    seconds: float

    def describe(self) -> str:
        return (
            f"RAM bandwidth {self.bytes_s / 1e9:.1f} GB/s measured: memmove copy of "
            f"{self.buffer_bytes // 2**20} MiB in {self.threads} thread(s), best of repeats, "
            "read + write bytes counted (STREAM Copy convention); an achieved rate, "
            f"below the theoretical peak ({self.seconds:.1f} s)"
        )


def measure_ram_bandwidth(
    budget_s: float = 1.5, threads: int | None = None, buffer_bytes: int | None = None
) -> MeasuredBandwidth:
    """Copy a buffer much larger than the caches a few times and time it.

    ctypes.memmove (libc memcpy; it releases the GIL) in one thread per physical core up to
    8, each on its own slice; the best pass counts 2 × bytes (read + write) per second.
    Stops after `budget_s` (at least one warm-up and one timed pass). No numpy needed.
    """
    import ctypes
    import threading
    import time

    start = time.perf_counter()
    if threads is None:
        try:
            import psutil

            threads = psutil.cpu_count(logical=False) or os.cpu_count() or 1
        except Exception:  # pragma: no cover - psutil is a dependency
            threads = os.cpu_count() or 1
        threads = max(1, min(threads, 8))
    if buffer_bytes is None:
        avail = _linux_memory()
        free = avail[1] if avail else 8 * 2**30
        # 2 × 256 MiB (source + destination) is far above any L3, and < 1/8 of free RAM.
        buffer_bytes = 256 * 2**20 if free > 4 * 2**30 else 64 * 2**20
    chunk = max(1, buffer_bytes // threads) & ~4095 or 4096
    src = [ctypes.create_string_buffer(chunk) for _ in range(threads)]
    dst = [ctypes.create_string_buffer(chunk) for _ in range(threads)]

    def one_pass() -> float:
        def work(i: int) -> None:
            ctypes.memmove(dst[i], src[i], chunk)

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        t0 = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return time.perf_counter() - t0

    one_pass()  # warm-up: faults the destination pages in
    best = float("inf")
    passes = 0
    while passes < 2 or (passes < 10 and time.perf_counter() - start < budget_s):
        best = min(best, one_pass())
        passes += 1
    return MeasuredBandwidth(
        bytes_s=2 * chunk * threads / best,
        threads=threads,
        buffer_bytes=chunk * threads,
        seconds=time.perf_counter() - start,
    )


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
    dmi, dmi_note = dmi_ram_bandwidth()
    if dmi is not None:
        notes.append(dmi.describe())
    elif dmi_note:
        notes.append(dmi_note)
    host = Host(
        cpu_model=model,
        physical_cores=int(physical),
        logical_cores=int(logical),
        ram_total_bytes=total,
        ram_available_bytes=available,
        cpu_flags=flags,
        swap_total_bytes=swap,
        numa_nodes=numa_nodes(),
        ram_bandwidth_bytes_s=dmi.bandwidth_bytes_s if dmi else None,
        ram_bandwidth_source="dmi" if dmi else None,
        disk_free_bytes=disk_bytes,
        disk_path=disk_path,
        arch=platform.machine() or None,
        os=platform.system().lower() or None,
    )
    return host, tuple(notes)


__all__ = [
    "DmiMemory",
    "MeasuredBandwidth",
    "cgroup_memory_limit",
    "disk_free",
    "dmi_ram_bandwidth",
    "measure_ram_bandwidth",
    "meminfo",
    "numa_nodes",
    "parse_cpuinfo",
    "parse_dmidecode_memory",
    "physical_cores",
    "probe_host",
]
