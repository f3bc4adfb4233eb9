"""Fakes behind real seams for the hardware probes.

- Executables named `nvidia-smi`, `rocm-smi`, `sysctl` written into a temp bin/ that a test
  puts first on PATH; they replay the recorded outputs in tests/fixtures/hw.
- `FakeNvml`: a stand-in for the pynvml module built from recorded NVML readings, passed to
  `probe_nvml(nvml=...)` (the probe's module seam).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "hw"
MiB = 1024**2

_NVIDIA_SMI = r"""
import csv, re, sys
from pathlib import Path

DIR = Path(%(dir)r)
args = sys.argv[1:]


def table():
    rows = list(csv.reader(l for l in (DIR / "query.csv").read_text().splitlines() if l.strip()))
    header = [re.sub(r"\s*\[.*\]$", "", h.strip()) for h in rows[0]]
    return header, [[v.strip() for v in r] for r in rows[1:]]


query = [a for a in args if a.startswith("--query-gpu=")]
if query:
    fields = query[0].split("=", 1)[1].split(",")
    fmt = next((a.split("=", 1)[1] for a in args if a.startswith("--format=")), "")
    header, rows = table()
    for f in fields:
        if f not in header:
            print('Field "%%s" is not a valid field to query.' %% f)
            print()
            sys.exit(2)
    if "noheader" not in fmt:
        print(", ".join(fields))
    for r in rows:
        values = [r[header.index(f)] for f in fields]
        if "nounits" in fmt:
            values = [re.sub(r"^(-?[\d.]+) (MiB|W|%%|MHz|C)$", r"\1", v) for v in values]
        print(", ".join(values))
    sys.exit(0)
if args in (["-q", "-x"], ["-x", "-q"]) and (DIR / "query.xml").exists():
    sys.stdout.write((DIR / "query.xml").read_text())
    sys.exit(0)
if args == ["-L"] and (DIR / "list.txt").exists():
    sys.stdout.write((DIR / "list.txt").read_text())
    sys.exit(0)
print("fake nvidia-smi: no recording for %%s" %% args, file=sys.stderr)
sys.exit(2)
"""

_CAT = r"""
import sys
sys.stdout.write(open(%(file)r).read())
"""

_SYSCTL = r"""
import sys
values = {}
for line in open(%(file)r).read().splitlines():
    key, sep, value = line.partition(":")
    if sep:
        values[key.strip()] = value.strip()
missing = 0
for key in sys.argv[1:]:
    if key in values:
        print("%%s: %%s" %% (key, values[key]))
    else:
        print("sysctl: unknown oid '%%s'" %% key, file=sys.stderr)
        missing = 1
sys.exit(missing)
"""


def install_tool(bin_dir: Path, name: str, body: str) -> Path:
    """Write an executable `name` (a Python script) into bin_dir."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


@dataclass
class Tools:
    bin_dir: Path
    monkeypatch: pytest.MonkeyPatch

    def on_path(self) -> None:
        import os

        self.monkeypatch.setenv("PATH", f"{self.bin_dir}{os.pathsep}{os.environ['PATH']}")

    def nvidia_smi(self, recording: str) -> Path:
        return install_tool(
            self.bin_dir,
            "nvidia-smi",
            _NVIDIA_SMI % {"dir": str(FIXTURES / "nvidia-smi" / recording)},
        )

    def rocm_smi(self, recording: str) -> Path:
        return install_tool(
            self.bin_dir, "rocm-smi", _CAT % {"file": str(FIXTURES / "rocm-smi" / recording)}
        )

    def sysctl(self, recording: str) -> Path:
        return install_tool(
            self.bin_dir, "sysctl", _SYSCTL % {"file": str(FIXTURES / "sysctl" / recording)}
        )


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


class NVMLError_NotFound(NVMLError):
    pass


@dataclass
class _Memory:
    total: int
    free: int
    used: int


class FakeNvml:
    """The subset of pynvml the probe calls, answering from a recorded readout."""

    NVMLError = NVMLError
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NotFound = NVMLError_NotFound

    def __init__(self, recording: str | None, *, library_missing: bool = False) -> None:
        self.doc: dict[str, Any] = (
            json.loads((FIXTURES / "nvml" / recording).read_text()) if recording else {}
        )
        self.library_missing = library_missing
        self.initialised = False
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.library_missing:
            raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return str(self.doc["driver_version"])

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return int(self.doc["cuda_driver_version"])

    def nvmlDeviceGetCount(self) -> int:
        return len(self.doc["devices"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        return dict(self.doc["devices"][index])

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> str:
        return str(handle["name"])

    def nvmlDeviceGetUUID(self, handle: dict[str, Any]) -> str:
        return str(handle["uuid"])

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> _Memory:
        m = handle["memory_mib"]
        return _Memory(m["total"] * MiB, m["free"] * MiB, m["used"] * MiB)

    def nvmlDeviceGetCudaComputeCapability(self, handle: dict[str, Any]) -> tuple[int, int]:
        if "compute_capability" not in handle:
            raise NVMLError_NotSupported("Not Supported")
        major, minor = handle["compute_capability"]
        return int(major), int(minor)

    def nvmlDeviceGetPowerManagementLimit(self, handle: dict[str, Any]) -> int:
        if handle.get("power_limit_mw") is None:
            raise NVMLError_NotSupported("Not Supported")
        return int(handle["power_limit_mw"])

    def nvmlDeviceGetMigMode(self, handle: dict[str, Any]) -> list[int]:
        if handle.get("mig_mode") is None:
            raise NVMLError_NotSupported("Not Supported")
        return list(handle["mig_mode"])

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: dict[str, Any]) -> int:
        return int(handle.get("max_mig_devices", 0))

    def nvmlDeviceGetMigDeviceHandleByIndex(
        self, handle: dict[str, Any], index: int
    ) -> dict[str, Any]:
        migs = handle.get("mig_devices", [])
        if index >= len(migs):
            raise NVMLError_NotFound("Not Found")
        return dict(migs[index])
