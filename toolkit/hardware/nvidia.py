"""NVIDIA GPUs: NVML (nvidia-ml-py) first, `nvidia-smi` when NVML cannot be loaded.

Both probes return every device a process could use: a whole GPU, or each MIG slice of a
GPU in MIG mode (a slice is the device: its own memory, its own UUID). CUDA_VISIBLE_DEVICES
is applied afterwards (`visible.apply_visible`), the way CUDA would apply it.
Nothing here prints, exits or touches os.environ.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from dataclasses import replace
from typing import Any

from toolkit.hardware.model import Gpu
from toolkit.hardware.probe import Probe

MiB = 1024**2
NVML_DEVICE_MIG_ENABLE = 1

#: Fields asked of `nvidia-smi --query-gpu`, in this order.
SMI_FIELDS = (
    "index",
    "uuid",
    "name",
    "memory.total",
    "memory.used",
    "memory.free",
    "compute_cap",
    "driver_version",
    "mig.mode.current",
    "power.limit",
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _mig_profile(name: str) -> str | None:
    match = re.search(r"\bMIG\s+(\S+)", name)
    return match.group(1) if match else None


def _cuda_version(raw: int) -> str:
    return f"{raw // 1000}.{(raw % 1000) // 10}"


def _import_nvml() -> tuple[Any | None, str | None]:
    import sys

    if sys.platform.startswith("linux"):
        # The library pynvml would load: when dlopen cannot find it there is no driver, and
        # importing pynvml (tens of ms) is not worth it.
        import ctypes

        try:
            ctypes.CDLL("libnvidia-ml.so.1")
        except OSError:
            return None, "NVML not available: libnvidia-ml.so.1 not found (no NVIDIA driver)"
    try:
        import pynvml
    except ImportError:
        return None, "NVML not available: nvidia-ml-py is not installed"
    return pynvml, None


def _init_note(nvml: Any, exc: Exception) -> str:
    library_not_found = getattr(nvml, "NVMLError_LibraryNotFound", None)
    driver_not_loaded = getattr(nvml, "NVMLError_DriverNotLoaded", None)
    if library_not_found is not None and isinstance(exc, library_not_found):
        return "NVML not available: libnvidia-ml.so.1 not found (no NVIDIA driver installed)"
    if driver_not_loaded is not None and isinstance(exc, driver_not_loaded):
        return "NVML not available: the NVIDIA kernel driver is not loaded"
    return f"NVML not available: {exc}"


def probe_nvml(nvml: Any | None = None) -> Probe:
    """Every CUDA device NVML reports. `nvml` is the pynvml module (a stand-in in tests)."""
    if nvml is None:
        nvml, note = _import_nvml()
        if nvml is None:
            return Probe(notes=(note or "NVML not available",))
    error: type[Exception] = getattr(nvml, "NVMLError", Exception)
    try:
        nvml.nvmlInit()
    except error as exc:
        return Probe(notes=(_init_note(nvml, exc),))
    try:
        return Probe(gpus=tuple(_nvml_devices(nvml, error)))
    except error as exc:
        return Probe(notes=(f"NVML failed while reading devices: {exc}",))
    finally:
        with contextlib.suppress(error):
            nvml.nvmlShutdown()


def _optional(error: type[Exception], fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except error:
        return None


def _nvml_devices(nvml: Any, error: type[Exception]) -> list[Gpu]:
    driver = _optional(error, nvml.nvmlSystemGetDriverVersion)
    cuda_raw = _optional(error, nvml.nvmlSystemGetCudaDriverVersion)
    gpus: list[Gpu] = []
    for board in range(int(nvml.nvmlDeviceGetCount())):
        handle = nvml.nvmlDeviceGetHandleByIndex(board)
        name = _text(nvml.nvmlDeviceGetName(handle))
        cc = _optional(error, nvml.nvmlDeviceGetCudaComputeCapability, handle)
        power = _optional(error, nvml.nvmlDeviceGetPowerManagementLimit, handle)
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        whole = Gpu(
            index=len(gpus),
            name=name,
            vendor="nvidia",
            total_bytes=int(mem.total),
            free_bytes=int(mem.free),
            used_by_others_bytes=int(mem.total) - int(mem.free),
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
            power_limit_w=power / 1000 if power is not None else None,
            physical_index=board,
            driver_version=_text(driver) if driver is not None else None,
            cuda_version=_cuda_version(int(cuda_raw)) if cuda_raw else None,
        )
        mode = _optional(error, nvml.nvmlDeviceGetMigMode, handle)
        if mode is None or mode[0] != NVML_DEVICE_MIG_ENABLE:
            gpus.append(whole)
            continue
        for slot in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
            mig = _optional(error, nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot)
            if mig is None:
                continue
            mig_name = _text(nvml.nvmlDeviceGetName(mig))
            mig_mem = nvml.nvmlDeviceGetMemoryInfo(mig)
            gpus.append(
                replace(
                    whole,
                    index=len(gpus),
                    name=mig_name if "MIG" in mig_name else f"{name} MIG",
                    total_bytes=int(mig_mem.total),
                    free_bytes=int(mig_mem.free),
                    used_by_others_bytes=int(mig_mem.total) - int(mig_mem.free),
                    uuid=_text(nvml.nvmlDeviceGetUUID(mig)),
                    mig=True,
                    mig_profile=_mig_profile(mig_name),
                )
            )
    return gpus


# --- nvidia-smi fallback -------------------------------------------------------------------


def _na(value: str) -> bool:
    return not value or value.startswith("[") or value in ("N/A", "Not Supported")


def _run(argv: list[str], timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def parse_smi_csv(text: str, fields: tuple[str, ...] = SMI_FIELDS) -> list[dict[str, str]]:
    """Rows of `nvidia-smi --query-gpu=… --format=csv,noheader,nounits` as dicts."""
    import csv

    rows = []
    for row in csv.reader(line for line in text.splitlines() if line.strip()):
        values = [v.strip() for v in row]
        if len(values) != len(fields):
            raise ValueError(f"expected {len(fields)} fields, got {len(values)}: {row}")
        rows.append(dict(zip(fields, values, strict=True)))
    return rows


def _mib_field(value: str) -> int | None:
    return None if _na(value) else int(float(value) * MiB)


def parse_smi_list(text: str) -> dict[int, list[tuple[str, str]]]:
    """MIG slices per GPU index from `nvidia-smi -L`: [(profile, MIG-uuid), …] in order."""
    boards: dict[int, list[tuple[str, str]]] = {}
    board: int | None = None
    for line in text.splitlines():
        gpu = re.match(r"^GPU (\d+):", line)
        if gpu:
            board = int(gpu.group(1))
            boards[board] = []
            continue
        mig = re.match(r"^\s+MIG (\S+)\s+Device\s+\d+: \(UUID: (MIG-[^)]+)\)", line)
        if mig and board is not None:
            boards[board].append((mig.group(1), mig.group(2)))
    return boards


def probe_smi(smi: str | None = None) -> Probe:
    """Every CUDA device `nvidia-smi` reports (MIG slices through `-q -x` and `-L`)."""
    smi = smi or shutil.which("nvidia-smi")
    if smi is None:
        return Probe(notes=("nvidia-smi not found on PATH",))
    fields: tuple[str, ...] = SMI_FIELDS
    try:
        result = _run([smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
        if result.returncode != 0 and "compute_cap" in (result.stdout + result.stderr):
            # Drivers before 510 do not know compute_cap.
            fields = tuple(f for f in fields if f != "compute_cap")
            result = _run([smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Probe(notes=(f"nvidia-smi failed: {exc}",))
    if result.returncode != 0:
        message = (result.stdout + result.stderr).strip().splitlines()
        return Probe(notes=(f"nvidia-smi failed: {message[0] if message else result.returncode}",))
    try:
        rows = parse_smi_csv(result.stdout, fields)
    except ValueError as exc:
        return Probe(notes=(f"nvidia-smi output not understood: {exc}",))
    notes: list[str] = []
    mig_boards: dict[str, list[dict[str, Any]]] = {}
    listing: dict[int, list[tuple[str, str]]] = {}
    cuda_version: str | None = None
    if any(r.get("mig.mode.current", "").lower() == "enabled" for r in rows):
        try:
            cuda_version, mig_boards = parse_smi_xml(_run([smi, "-q", "-x"]).stdout)
            listing = parse_smi_list(_run([smi, "-L"]).stdout)
        except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
            notes.append(f"nvidia-smi -q -x failed, MIG slices unknown: {exc}")
    gpus: list[Gpu] = []
    for r in rows:
        board = int(r["index"])
        total = _mib_field(r["memory.total"])
        if total is None:
            notes.append(f"GPU {board} ({r['name']}): memory.total not reported; skipped")
            continue
        used = _mib_field(r["memory.used"])
        free = _mib_field(r["memory.free"])
        if free is None:
            free = total - (used or 0)
            notes.append(f"GPU {board}: nvidia-smi reported no free memory; taken as total - used")
        cc, power = r.get("compute_cap", ""), r.get("power.limit", "")
        base = Gpu(
            index=0,
            name=r["name"],
            vendor="nvidia",
            total_bytes=total,
            free_bytes=free,
            used_by_others_bytes=used,
            compute_capability=None if _na(cc) else cc,
            uuid=None if _na(r["uuid"]) else r["uuid"],
            power_limit_w=None if _na(power) else float(power),
            driver_version=None if _na(r["driver_version"]) else r["driver_version"],
            cuda_version=cuda_version,
            physical_index=board,
        )
        if r.get("mig.mode.current", "").lower() != "enabled":
            gpus.append(replace(base, index=len(gpus)))
            continue
        slices = mig_boards.get(r["uuid"], [])
        if not slices:
            notes.append(f"GPU {board} ({r['name']}) is in MIG mode with no MIG instances")
            continue
        named = listing.get(board, [])
        for n, s in enumerate(slices):
            profile, uuid = named[n] if n < len(named) else (None, s.get("uuid"))
            gpus.append(
                replace(
                    base,
                    index=len(gpus),
                    name=f"{r['name']} MIG {profile}" if profile else f"{r['name']} MIG",
                    total_bytes=s["total"],
                    free_bytes=s["free"],
                    used_by_others_bytes=s["used"],
                    uuid=uuid,
                    mig=True,
                    mig_profile=profile,
                )
            )
    return Probe(gpus=tuple(gpus), notes=tuple(notes))


def _mib(text: str | None) -> int | None:
    if text is None:
        return None
    match = re.match(r"\s*(\d+(?:\.\d+)?)\s*MiB", text)
    return int(float(match.group(1)) * MiB) if match else None


def parse_smi_xml(text: str) -> tuple[str | None, dict[str, list[dict[str, Any]]]]:
    """CUDA version and the MIG slices per GPU UUID from `nvidia-smi -q -x`."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"not nvidia-smi XML: {exc}") from None
    cuda = root.findtext("cuda_version")
    boards: dict[str, list[dict[str, Any]]] = {}
    for gpu in root.findall("gpu"):
        uuid = (gpu.findtext("uuid") or "").strip()
        slices: list[dict[str, Any]] = []
        for dev in gpu.findall("mig_devices/mig_device"):
            mem = dev.find("fb_memory_usage")
            if mem is None:
                mem = dev.find("shared_fb_memory_usage")
            if mem is None:
                continue
            total = _mib(mem.findtext("total"))
            used = _mib(mem.findtext("used"))
            free = _mib(mem.findtext("free"))
            if total is None:
                continue
            if free is None:
                free = total - (used or 0)
            slices.append(
                {
                    "index": int(dev.findtext("index") or len(slices)),
                    "total": total,
                    "free": free,
                    "used": used,
                    "uuid": (dev.findtext("uuid") or "").strip() or None,
                }
            )
        boards[uuid] = slices
    return (cuda.strip() if cuda else None), boards


def probe_nvidia(nvml: Any | None = None, smi: str | None = None) -> Probe:
    """NVML first; `nvidia-smi` only when NVML is unavailable and the tool is on PATH."""
    first = probe_nvml(nvml)
    if first.gpus or not any(n.startswith("NVML not available") for n in first.notes):
        return first
    smi_path = smi or shutil.which("nvidia-smi")
    if smi_path is None:
        return first
    second = probe_smi(smi_path)
    return Probe(gpus=second.gpus, notes=first.notes + second.notes)


__all__ = [
    "SMI_FIELDS",
    "parse_smi_csv",
    "parse_smi_list",
    "parse_smi_xml",
    "probe_nvidia",
    "probe_nvml",
    "probe_smi",
]
