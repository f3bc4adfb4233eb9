"""Was the machine busy while we measured? Load average, cores and CPU steal from /proc.

A decode rate measured while a neighbour holds the CPUs (or the hypervisor steals them)
describes the neighbour, not the model, engine and hardware: it must not become a
"measured" figure that later plans repeat. This module turns two Linux files into facts:

* `/proc/loadavg`: the 1-minute load average, sampled once before the load starts (the
  bench's own server adds about one runnable thread per core while it runs, so a sample
  taken during or after the bench would flag every CPU benchmark);
* `/proc/stat`: the number of cores (its `cpuN` lines) and the CPU time stolen by the
  hypervisor, as a share of all CPU time between the start and the end of the bench.

The parsers are pure (tested on recorded text); `LoadProbe` reads through an injectable
`ProcReader`, so tests replay recorded files instead of loading the machine. A machine
without /proc (macOS, Windows) yields unknown facts, never an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Steal above this share of CPU time over the bench (percent) marks the machine busy.
BUSY_STEAL_PCT = 5.0
#: A measured decode rate below this fraction of the plan's estimate is suspect.
SLOW_RATIO = 0.5

#: Reads a file such as "/proc/stat" and returns its text; raises OSError when it cannot.
ProcReader = Callable[[str], str]

_CPU_N = re.compile(r"^cpu\d+\s")


def read_proc(path: str) -> str:
    return Path(path).read_text()


def parse_loadavg(text: str) -> float:
    """The 1-minute load average from /proc/loadavg ("0.52 0.58 0.59 1/467 12345")."""
    fields = text.split()
    if not fields:
        raise ValueError("empty /proc/loadavg")
    return float(fields[0])


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate `cpu` line of /proc/stat, in clock ticks, and the number of cores."""

    total: int
    steal: int
    cores: int


def parse_proc_stat(text: str) -> CpuTimes:
    """user nice system idle iowait irq softirq steal [guest guest_nice]: the total is the
    first eight (guest time is already counted inside user and nice)."""
    total = steal = None
    cores = 0
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            if len(values) < 4:
                raise ValueError(f"short cpu line in /proc/stat: {line!r}")
            total = sum(values[:8])
            steal = values[7] if len(values) > 7 else 0
        elif _CPU_N.match(line):
            cores += 1
    if total is None or steal is None:
        raise ValueError("no aggregate cpu line in /proc/stat")
    return CpuTimes(total=total, steal=steal, cores=cores)


def steal_percent(before: CpuTimes, after: CpuTimes) -> float | None:
    """Stolen CPU time as a share of all CPU time between two samples (None: no time)."""
    elapsed = after.total - before.total
    if elapsed <= 0:
        return None
    return max(0.0, (after.steal - before.steal) / elapsed * 100)


@dataclass(frozen=True)
class MachineLoad:
    """How busy the machine was over a measurement. None where it could not be read."""

    load_avg_1m: float | None
    cores: int | None
    steal_pct: float | None
    #: Why a fact is missing ("no /proc/loadavg"), when one is.
    note: str | None = None

    def busy_reasons(self) -> tuple[str, ...]:
        out: list[str] = []
        if self.load_avg_1m is not None and self.cores and self.load_avg_1m > self.cores:
            out.append(
                f"machine busy: 1-minute load average {self.load_avg_1m:.2f} above "
                f"{self.cores} cores"
            )
        if self.steal_pct is not None and self.steal_pct > BUSY_STEAL_PCT:
            out.append(
                f"machine busy: {self.steal_pct:.1f} % of CPU time stolen by the hypervisor "
                f"(above {BUSY_STEAL_PCT:g} %)"
            )
        return tuple(out)

    @property
    def busy(self) -> bool:
        return bool(self.busy_reasons())

    def to_dict(self) -> dict[str, Any]:
        return {
            "load_avg_1m": self.load_avg_1m,
            "cores": self.cores,
            "steal_pct": self.steal_pct,
            "busy": self.busy,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> MachineLoad:
        return cls(
            load_avg_1m=doc.get("load_avg_1m"),
            cores=doc.get("cores"),
            steal_pct=doc.get("steal_pct"),
            note=doc.get("note"),
        )


class LoadProbe:
    """`start()` before a measurement, `finish()` after it: the load average at the start,
    the cores, and the steal share over the whole measurement."""

    def __init__(
        self,
        reader: ProcReader = read_proc,
        cpu_count: Callable[[], int | None] = os.cpu_count,
    ) -> None:
        self._read = reader
        self._cpu_count = cpu_count
        self._load: float | None = None
        self._stat: CpuTimes | None = None
        self._notes: list[str] = []

    def _sample_stat(self) -> CpuTimes | None:
        try:
            return parse_proc_stat(self._read("/proc/stat"))
        except (OSError, ValueError) as exc:
            self._notes.append(f"cannot read /proc/stat ({exc})")
            return None

    def start(self) -> None:
        self._notes = []
        try:
            self._load = parse_loadavg(self._read("/proc/loadavg"))
        except (OSError, ValueError) as exc:
            self._load = None
            self._notes.append(f"cannot read /proc/loadavg ({exc})")
        self._stat = self._sample_stat()

    def finish(self) -> MachineLoad:
        after = self._sample_stat() if self._stat is not None else None
        steal = steal_percent(self._stat, after) if self._stat and after else None
        last = after or self._stat
        cores = last.cores if last is not None else 0
        return MachineLoad(
            load_avg_1m=self._load,
            cores=cores or self._cpu_count(),
            steal_pct=steal,
            note="; ".join(dict.fromkeys(self._notes)) or None,
        )


def slow_reason(ratio: float | None) -> str | None:
    if ratio is None or ratio >= SLOW_RATIO:
        return None
    return f"measured decode is {ratio:.2f}x the plan's estimate (below {SLOW_RATIO:g}x)"


def suspect_reasons(load: MachineLoad | None, ratio: float | None) -> tuple[str, ...]:
    """Why a decode rate must not be recorded as measured without `--accept`: the machine
    was busy, or the rate is below half the plan's estimate. Empty when it may be."""
    reasons = list(load.busy_reasons()) if load is not None else []
    slow = slow_reason(ratio)
    if slow:
        reasons.append(slow)
    return tuple(reasons)
