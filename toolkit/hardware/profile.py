"""Where the planner's Hardware comes from: this machine, a spec string, or a profile file.

`load_hardware(None)` uses DEPLOY_HW when set, else detects this machine. A spec string
(`2xrtx3090,ram=128G`) describes another machine; a path names a profile JSON written by
`deploy hw --save FILE`.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from toolkit import settings
from toolkit.errors import NotFound, UsageError
from toolkit.hardware.model import Hardware

#: Profile files carry this marker so a random JSON file is not taken for one.
PROFILE_FORMAT = "deploy-hardware-profile"
PROFILE_VERSION = 1


def _looks_like_path(spec: str) -> bool:
    """A profile file, not a spec string (spec strings never start with a path prefix)."""
    return (
        spec.endswith(".json")
        or spec.startswith(("/", "~", "./", "../"))
        or Path(spec).expanduser().is_file()
    )


def load_hardware(spec: str | None = None) -> Hardware:
    """The Hardware to plan for. None → DEPLOY_HW if set, else this machine (detected).

    Raises UsageError (bad spec, exit 2) or NotFound (missing profile file, exit 4).
    """
    if spec is None:
        spec = settings.default_hw()
    if spec is None:
        from toolkit.hardware.detect import detect

        return detect()
    spec = spec.strip()
    if _looks_like_path(spec):
        return read_profile(Path(spec).expanduser())
    from toolkit.hardware.specstring import parse_spec

    return parse_spec(spec)


def profile_document(hw: Hardware) -> dict[str, Any]:
    """The JSON document `deploy hw --save` writes (bytes and bytes/s throughout)."""
    return {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, **hw.to_dict()}


def save_profile(hw: Hardware, path: Path) -> Path:
    """Write `hw` as a profile file, atomically (temp file + os.replace)."""
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(profile_document(hw), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_profile(path: Path) -> Hardware:
    """A Hardware from a profile file; source becomes "file", origin the path."""
    if not path.is_file():
        raise NotFound(
            f"no such hardware profile: {path}",
            hint="write one on the target machine with: deploy hw --save box.json",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a hardware profile ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise UsageError(
            f'{path}: not a hardware profile (no "format": "{PROFILE_FORMAT}")',
            hint="write one with: deploy hw --save box.json",
        )
    if data.get("version") != PROFILE_VERSION:
        raise UsageError(f"{path}: profile version {data.get('version')!r} is not supported")
    try:
        hw = Hardware.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{path}: malformed hardware profile ({exc})") from None
    problem = profile_problem(hw)
    if problem:
        raise UsageError(
            f"{path}: malformed hardware profile ({problem})",
            hint="write it again on the target machine: deploy hw --save box.json",
        )
    return replace(hw, source="file", origin=str(path))


#: Largest byte count a profile may state (1 PiB): beyond it a value is a typo.
_MAX_BYTES = 1 << 50


def profile_problem(hw: Hardware) -> str | None:
    """The first value of a loaded profile with the wrong type or an impossible size (a
    profile is a file anyone could have edited), or None."""
    from toolkit.hardware.specstring import MAX_GPUS

    def whole(v: object, hi: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= hi

    h = hw.host
    for name, value, hi in (
        ("host.ram_total_bytes", h.ram_total_bytes, _MAX_BYTES),
        ("host.ram_available_bytes", h.ram_available_bytes, _MAX_BYTES),
        ("host.physical_cores", h.physical_cores, 1 << 16),
        ("host.logical_cores", h.logical_cores, 1 << 16),
        ("host.swap_total_bytes", h.swap_total_bytes, _MAX_BYTES),
        ("host.numa_nodes", h.numa_nodes, 1 << 10),
    ):
        if not whole(value, hi):
            return f"{name} is {value!r}, not a whole number in 0..{hi}"
    bw = h.ram_bandwidth_bytes_s
    if bw is not None and (not isinstance(bw, (int, float)) or not 0 < bw < 1e15):
        return f"host.ram_bandwidth_bytes_s is {bw!r}"
    if not all(isinstance(f, str) for f in h.cpu_flags):
        return "host.cpu_flags must be strings"
    if len(hw.gpus) > MAX_GPUS:
        return f"{len(hw.gpus)} GPUs (at most {MAX_GPUS})"
    for i, g in enumerate(hw.gpus):
        if not isinstance(g.name, str) or g.vendor not in ("nvidia", "amd", "apple", "other"):
            return f"gpus[{i}]: name and vendor (nvidia, amd, apple, other) are required"
        for name, value in (("total_bytes", g.total_bytes), ("free_bytes", g.free_bytes)):
            if not whole(value, _MAX_BYTES):
                return f"gpus[{i}].{name} is {value!r}, not a byte count"
        if g.free_bytes > g.total_bytes:
            return f"gpus[{i}].free_bytes is more than its total_bytes"
        gbw = g.bandwidth_bytes_s
        if gbw is not None and (not isinstance(gbw, (int, float)) or not 0 < gbw < 1e15):
            return f"gpus[{i}].bandwidth_bytes_s is {gbw!r}"
    if h.ram_available_bytes > h.ram_total_bytes:
        return "host.ram_available_bytes is more than host.ram_total_bytes"
    return None


__all__ = ["PROFILE_FORMAT", "load_hardware", "profile_document", "read_profile", "save_profile"]
