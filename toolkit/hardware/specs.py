"""The GPU spec table (gpus.yaml, shipped in the package): memory, bandwidth, arch and
native tensor paths of common GPUs, each with its sources.

Names are matched case-insensitively with spaces, dashes and underscores ignored, so
`RTX 3090`, `rtx-3090` and `rtx3090` are the same entry; every name and alias resolves to
exactly one entry (checked when the table loads).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from toolkit.errors import UsageError
from toolkit.hardware.model import Vendor
from toolkit.units import parse_size


@dataclass(frozen=True)
class GpuSpec:
    name: str
    full_name: str
    vendor: Vendor
    #: Memory a spec string gets when it names this GPU (bytes). For GPUs whose driver is
    #: known to report less than the nominal size (H100: 81559 MiB), the reported size.
    memory_bytes: int
    bandwidth_bytes_s: float | None
    arch: str | None
    compute_capability: str | None
    bf16: bool
    fp8: bool
    int4: bool
    fp4: bool
    fp16_flops: float | None
    unified_memory: bool
    aliases: tuple[str, ...]
    #: Exact names drivers report (NVML / nvidia-smi / rocm-smi), for matching detected GPUs.
    reported_names: tuple[str, ...]
    #: Apple: the unified-memory sizes the chip ships with (bytes); empty for others.
    memory_options: tuple[int, ...]
    sources: tuple[str, ...]
    note: str | None = None
    #: Dense FP8 / FP4 tensor FLOP/s, dense INT8 tensor OP/s, FP32 vector FLOP/s.
    fp8_flops: float | None = None
    fp4_flops: float | None = None
    int8_ops: float | None = None
    fp32_flops: float | None = None
    #: Where the FLOP figures come from, when not the vendor's own table (derived, third-party).
    flops_note: str | None = None
    #: GPU-to-GPU link of the board the part is sold on: "nvlink" (SXM/HGX: NVLink and
    #: NVSwitch) or "xgmi" (AMD OAM: Infinity Fabric); None: PCIe between GPUs.
    fabric: str | None = None


def key(name: str) -> str:
    """Normalised lookup key: lower case, only letters and digits."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class SpecTable:
    entries: tuple[GpuSpec, ...]
    sources: dict[str, str]
    by_key: dict[str, GpuSpec]
    #: Reported name → entries (Apple chips come in variants told apart by memory size).
    by_reported: dict[str, list[GpuSpec]]

    def get(self, name: str) -> GpuSpec | None:
        return self.by_key.get(key(name))

    def resolve(self, name: str) -> GpuSpec:
        """The entry for a user-typed name; UsageError naming close matches otherwise."""
        spec = self.get(name)
        if spec is not None:
            return spec
        import difflib

        close = difflib.get_close_matches(key(name), list(self.by_key), n=4, cutoff=0.6)
        names = sorted({self.by_key[c].name for c in close})
        hint = f"did you mean {', '.join(names)}?" if names else "deploy hw --list-gpus"
        raise UsageError(
            f"unknown GPU {name!r}: use a name from `deploy hw --list-gpus`, "
            "or `gpu:SIZE` for any GPU (e.g. gpu:79.18GiB)",
            hint=hint,
        )

    def match_reported(self, reported: str, memory_bytes: int | None = None) -> GpuSpec | None:
        """The entry for a name a driver reported ("NVIDIA GeForce RTX 3090"), if known.

        When several entries share the name (Apple chip variants), the one whose memory
        options include `memory_bytes` wins.
        """
        candidates = self.by_reported.get(key(reported), [])
        if not candidates:
            stripped = reported
            for _ in range(3):
                stripped = _VENDOR_WORDS.sub("", stripped)
            spec = self.by_key.get(key(stripped))
            candidates = [spec] if spec is not None else []
        if len(candidates) > 1 and memory_bytes is not None:
            for spec in candidates:
                if memory_bytes in spec.memory_options:
                    return spec
        return candidates[0] if candidates else None


_VENDOR_WORDS = re.compile(r"^(nvidia|amd|tesla|geforce|radeon|apple|instinct)\s*", re.I)


def _bool(entry: dict[str, Any], field: str) -> bool:
    value = entry.get(field, False)
    if not isinstance(value, bool):
        raise ValueError(f"gpus.yaml: {entry.get('name')}: {field} must be true or false")
    return value


#: Throughput fields (TFLOPS / TOPS in the file) and the native path each needs.
RATE_FIELDS = {
    "fp16_tflops": None,
    "fp8_tflops": "fp8",
    "fp4_tflops": "fp4",
    "int8_tops": None,
    "fp32_tflops": None,
}


def _rate(name: str, entry: dict[str, Any], field: str) -> float | None:
    """A throughput field in FLOP/s (OP/s); None when absent. Refuses non-positive values
    and FP8/FP4 figures on GPUs the table says have no native path for them."""
    value = entry.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"gpus.yaml: {name}: {field} must be a positive number")
    needs = RATE_FIELDS[field]
    if needs is not None and not entry.get(needs, False):
        raise ValueError(f"gpus.yaml: {name}: {field} given but {needs} is not true")
    return float(value) * 1e12


#: Every field an entry may have (a misspelt field is an error, not silently ignored).
FIELDS = frozenset(
    {
        "full_name", "vendor", "memory", "memory_options", "recorded", "reported_names",
        "aliases", "bandwidth_gb_s", "arch", "compute_capability", "bf16", "fp8", "fp4",
        "int4", "unified_memory", "note", "flops_note", "sources", "fabric", *RATE_FIELDS,
    }
)  # fmt: skip


def _spec(name: str, entry: dict[str, Any], sources: dict[str, str]) -> GpuSpec:
    unknown = sorted(set(entry) - FIELDS)
    if unknown:
        raise ValueError(f"gpus.yaml: {name}: unknown field(s) {', '.join(unknown)}")
    refs = tuple(entry.get("sources", ()))
    for ref in refs:
        if ref not in sources:
            raise ValueError(f"gpus.yaml: {name}: unknown source {ref!r}")
    if not refs:
        raise ValueError(f"gpus.yaml: {name}: every entry needs a source")
    recorded = entry.get("recorded")
    if recorded is not None and recorded not in refs:
        raise ValueError(f"gpus.yaml: {name}: recorded source {recorded!r} not in its sources")
    bw = entry.get("bandwidth_gb_s")
    options = tuple(parse_size(str(m)) for m in entry.get("memory_options", ()))
    memory = entry.get("memory")
    if memory is None and options:
        memory = str(entry["memory_options"][-1])
    return GpuSpec(
        name=name,
        full_name=str(entry["full_name"]),
        vendor=entry["vendor"],
        memory_bytes=parse_size(str(memory)),
        bandwidth_bytes_s=float(bw) * 1e9 if bw is not None else None,
        arch=entry.get("arch"),
        compute_capability=(
            str(entry["compute_capability"]) if entry.get("compute_capability") else None
        ),
        bf16=_bool(entry, "bf16"),
        fp8=_bool(entry, "fp8"),
        int4=_bool(entry, "int4"),
        fp4=_bool(entry, "fp4"),
        fp16_flops=_rate(name, entry, "fp16_tflops"),
        unified_memory=bool(entry.get("unified_memory", False)),
        aliases=tuple(str(a) for a in entry.get("aliases", ())),
        reported_names=tuple(str(r) for r in entry.get("reported_names", ())),
        memory_options=options,
        sources=refs,
        note=entry.get("note"),
        fp8_flops=_rate(name, entry, "fp8_tflops"),
        fp4_flops=_rate(name, entry, "fp4_tflops"),
        int8_ops=_rate(name, entry, "int8_tops"),
        fp32_flops=_rate(name, entry, "fp32_tflops"),
        flops_note=entry.get("flops_note"),
        fabric=_fabric(name, entry),
    )


def _fabric(name: str, entry: dict[str, Any]) -> str | None:
    value = entry.get("fabric")
    if value not in (None, "nvlink", "xgmi"):
        raise ValueError(f"gpus.yaml: {name}: fabric must be nvlink or xgmi, not {value!r}")
    return value


def parse_table(text: str) -> SpecTable:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = yaml.load(text, Loader=loader)
    sources = {str(k): str(v) for k, v in doc["sources"].items()}
    entries = tuple(_spec(str(n), e, sources) for n, e in doc["gpus"].items())
    by_key: dict[str, GpuSpec] = {}
    by_reported: dict[str, list[GpuSpec]] = {}
    for spec in entries:
        for name in (spec.name, *spec.aliases):
            k = key(name)
            if k in by_key:
                raise ValueError(
                    f"gpus.yaml: name {name!r} is used by {by_key[k].name} and {spec.name}"
                )
            by_key[k] = spec
        for reported in spec.reported_names:
            by_reported.setdefault(key(reported), []).append(spec)
    return SpecTable(entries, sources, by_key, by_reported)


@lru_cache(maxsize=1)
def table() -> SpecTable:
    """The shipped table (parsed once per process, and kept parsed between processes by
    toolkit.filecache while gpus.yaml and this module are unchanged)."""
    from toolkit import filecache

    # Beside this module, not importlib.resources (whose import costs more than reading
    # the cached table); the package is always installed as files.
    path = Path(__file__).with_name("gpus.yaml")

    def build() -> SpecTable:
        return parse_table(path.read_text("utf-8"))

    return filecache.cached(
        "gpus", [path], [Path(__file__)], build, valid=lambda t: isinstance(t, SpecTable)
    )


__all__ = ["FIELDS", "RATE_FIELDS", "GpuSpec", "SpecTable", "key", "parse_table", "table"]
