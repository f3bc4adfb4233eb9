"""Apple Silicon: chip, unified memory and the GPU working-set cap.

The cap is what Metal lets the GPU keep resident (`recommendedMaxWorkingSetSize`); it is
raised with `sudo sysctl iogpu.wired_limit_mb=N` (0 means the macOS default). Order of
truth: Metal's own answer when it can be asked, else a non-zero iogpu.wired_limit_mb,
else the documented-by-measurement default share of RAM (specstring.apple_default_working_set).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

from toolkit.hardware.model import Gpu, Hardware
from toolkit.hardware.probe import Probe

MiB = 1024**2
GiB = 1024**3
#: Memory left to macOS and apps when suggesting a raised cap (a quarter of RAM on
#: Macs below 32 GiB). A rule of thumb, not an Apple figure.
OS_RESERVE_BYTES = 8 * GiB
#: Keys asked of `sysctl`; a key this macOS does not have is skipped by sysctl.
SYSCTL_KEYS = (
    "machdep.cpu.brand_string",
    "hw.memsize",
    "hw.physicalcpu",
    "hw.logicalcpu",
    "hw.optional.arm64",
    "hw.optional.arm.FEAT_BF16",
    "iogpu.wired_limit_mb",
)


def parse_sysctl(text: str) -> dict[str, str]:
    """`key: value` lines (the format of `sysctl NAME…` and `sysctl -a`) as a dict."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and " " not in key.strip():
            values[key.strip()] = value.strip()
    return values


def metal_working_set() -> int | None:
    """Metal's recommendedMaxWorkingSetSize for the default device (macOS only), or None.

    Uses the Objective-C runtime through ctypes: no PyObjC dependency, nothing printed.
    """
    import ctypes
    import ctypes.util

    try:
        objc = ctypes.cdll.LoadLibrary("/usr/lib/libobjc.A.dylib")
        metal = ctypes.cdll.LoadLibrary("/System/Library/Frameworks/Metal.framework/Metal")
        ctypes.cdll.LoadLibrary(
            "/System/Library/Frameworks/CoreGraphics.framework/CoreGraphics"
        )  # MTLCreateSystemDefaultDevice needs it linked in command-line processes
    except OSError:
        return None
    metal.MTLCreateSystemDefaultDevice.restype = ctypes.c_void_p
    device = metal.MTLCreateSystemDefaultDevice()
    if not device:
        return None
    objc.sel_registerName.restype = ctypes.c_void_p
    objc.sel_registerName.argtypes = [ctypes.c_char_p]
    send = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p)(
        ("objc_msgSend", objc)
    )
    value = int(send(device, objc.sel_registerName(b"recommendedMaxWorkingSetSize")))
    return value or None


def probe_apple(
    sysctl: str | None = None, metal: Callable[[], int | None] | None = metal_working_set
) -> Probe:
    """The Apple GPU of this Mac (one device, unified memory). `sysctl` and `metal` are
    seams: a path to a sysctl executable, a function returning Metal's working-set cap."""
    path = sysctl or shutil.which("sysctl") or "/usr/sbin/sysctl"
    try:
        result = subprocess.run(
            [path, *SYSCTL_KEYS], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Probe(notes=(f"Apple: sysctl failed: {exc}",))
    values = parse_sysctl(result.stdout)
    return apple_from_sysctl(values, metal() if metal is not None else None)


def apple_from_sysctl(values: dict[str, str], metal_cap: int | None) -> Probe:
    """The Apple GPU described by sysctl values (and Metal's cap when known)."""
    from toolkit.hardware.specstring import apple_default_working_set

    brand = values.get("machdep.cpu.brand_string", "")
    if values.get("hw.optional.arm64") != "1" or not brand.startswith("Apple"):
        return Probe(notes=(f"Apple: not Apple Silicon ({brand or 'unknown CPU'}); no Metal GPU",))
    memsize = int(values.get("hw.memsize", "0") or 0)
    if memsize <= 0:
        return Probe(notes=("Apple: hw.memsize not reported",))
    wired_mb = int(values.get("iogpu.wired_limit_mb", "0") or 0)
    notes: list[str] = []
    if metal_cap:
        cap = metal_cap
    elif wired_mb > 0:
        cap = wired_mb * MiB
        notes.append(f"GPU working-set cap {wired_mb} MiB from iogpu.wired_limit_mb")
    else:
        cap = apple_default_working_set(memsize)
        notes.append(
            f"GPU working-set cap estimated at {cap // MiB} MiB (macOS default share of RAM; "
            "Metal was not asked)"
        )
    gpu = Gpu(
        index=0,
        name=brand,
        vendor="apple",
        total_bytes=memsize,
        free_bytes=min(cap, memsize),
        unified_memory=True,
        working_set_limit_bytes=cap,
    )
    return Probe(gpus=(gpu,), notes=tuple(notes))


def suggested_wired_limit(total_bytes: int) -> int:
    """The iogpu.wired_limit_mb (MiB) that leaves macOS OS_RESERVE_BYTES (a quarter of
    RAM below 32 GiB)."""
    reserve = min(OS_RESERVE_BYTES, total_bytes // 4)
    return (total_bytes - reserve) // MiB


def wired_cap_note(hw: Hardware) -> str | None:
    """One line naming the Apple GPU working-set cap and what raising it would give;
    None when the machine has no Apple GPU.

    Example: "GPU working-set cap 96.0 GiB of 128.0 GiB (macOS default, estimated);
    `sudo sysctl iogpu.wired_limit_mb=122880` would give 120.0 GiB (leaves 8.0 GiB to macOS;
    lasts until reboot)".
    """
    from toolkit.hardware.specstring import apple_default_working_set

    gpu = next((g for g in hw.gpus if g.vendor == "apple"), None)
    if gpu is None:
        return None
    total = gpu.total_bytes
    cap = gpu.working_set_limit_bytes or gpu.free_bytes
    if hw.source == "detected":
        origin = "as Metal/sysctl report it"
    elif cap == apple_default_working_set(total):
        origin = "macOS default, estimated"
    else:
        origin = "as stated by wired="
    head = f"GPU working-set cap {cap / GiB:.1f} GiB of {total / GiB:.1f} GiB ({origin})"
    limit_mb = suggested_wired_limit(total)
    if limit_mb * MiB <= cap:
        return f"{head}; already at or above the suggested {limit_mb * MiB / GiB:.1f} GiB"
    return (
        f"{head}; `sudo sysctl iogpu.wired_limit_mb={limit_mb}` would give "
        f"{limit_mb * MiB / GiB:.1f} GiB (leaves {(total - limit_mb * MiB) / GiB:.1f} GiB to "
        "macOS; lasts until reboot)"
    )


__all__ = [
    "OS_RESERVE_BYTES",
    "SYSCTL_KEYS",
    "apple_from_sysctl",
    "parse_sysctl",
    "probe_apple",
    "suggested_wired_limit",
    "wired_cap_note",
]
