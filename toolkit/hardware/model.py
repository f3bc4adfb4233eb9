"""The planner's picture of a machine. Frozen values; JSON round-trips exactly.

Memory is in bytes, bandwidth in bytes per second. `free_bytes` is what is free NOW
(other processes, MIG slice, Apple's GPU working-set cap already taken into account);
GPUs described by a spec string are taken as idle (free = total).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Vendor = Literal["nvidia", "amd", "apple", "other"]
HardwareSource = Literal["detected", "spec", "file"]


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    vendor: Vendor
    total_bytes: int
    free_bytes: int
    #: Memory bandwidth; None when unknown.
    bandwidth_bytes_s: float | None = None
    #: NVIDIA compute capability ("8.9"), AMD gfx target ("gfx942"), Apple chip family.
    compute_capability: str | None = None
    arch: str | None = None
    uuid: str | None = None
    #: True when this device is a MIG slice (then total/free are the slice's).
    mig: bool = False
    #: Native tensor paths.
    bf16: bool = False
    fp8: bool = False
    int4: bool = False
    fp4: bool = False
    #: Apple/Jetson: GPU shares the host's RAM.
    unified_memory: bool = False
    #: Dense fp16/bf16 tensor throughput, FLOP/s (for prefill estimates); None when unknown.
    fp16_flops: float | None = None
    #: Dense FP8 / FP4 tensor FLOP/s and INT8 tensor OP/s; None when unknown or not native.
    fp8_flops: float | None = None
    fp4_flops: float | None = None
    int8_ops: float | None = None
    #: Non-tensor FP32 (vector/shader) FLOP/s; for GPUs without tensor cores (Apple, Pascal).
    fp32_flops: float | None = None
    #: GPU-to-GPU link ("nvlink", "xgmi") when the GPUs talk without PCIe; None: PCIe.
    fabric: str | None = None
    used_by_others_bytes: int | None = None
    power_limit_w: float | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    #: The board's index as the driver numbers it (NVML / nvidia-smi / rocm-smi), when it
    #: differs from `index` (CUDA_VISIBLE_DEVICES reorders and renumbers what a process sees).
    physical_index: int | None = None
    #: MIG profile of a slice ("3g.40gb"); None for a whole GPU.
    mig_profile: str | None = None
    #: Apple: Metal's GPU working-set cap; free_bytes is already limited by it.
    working_set_limit_bytes: int | None = None

    @property
    def device_id(self) -> str:
        prefix = {"nvidia": "cuda", "amd": "rocm", "apple": "metal", "other": "gpu"}[self.vendor]
        return f"{prefix}:{self.index}"


@dataclass(frozen=True)
class Host:
    cpu_model: str | None
    physical_cores: int
    logical_cores: int
    ram_total_bytes: int
    ram_available_bytes: int
    #: ISA flags that matter to engines: avx2, avx512f, avx512_bf16, amx, neon …
    cpu_flags: tuple[str, ...] = ()
    swap_total_bytes: int = 0
    numa_nodes: int = 1
    #: RAM bandwidth; None when unknown (the planner then states its assumption).
    ram_bandwidth_bytes_s: float | None = None
    #: Where ram_bandwidth_bytes_s came from: "dmi" (configured speed × channels × width,
    #: a theoretical peak), "measured" (`deploy hw --probe`: an achieved copy rate, already
    #: below peak), "spec" (bw= in a spec string), "chip" (the unified-memory chip's
    #: vendor figure, a peak); None when unknown.
    ram_bandwidth_source: str | None = None
    #: Free disk where models are stored (the Hugging Face cache); None when unknown.
    disk_free_bytes: int | None = None
    disk_path: str | None = None
    arch: str | None = None
    os: str | None = None
    #: False when a spec string left RAM out (ram_total_bytes is then 0, meaning unknown):
    #: plan nothing in system RAM, but do not reject a plan for want of it either.
    ram_known: bool = True
    #: False when a spec string left the core count out (cores are then 0, meaning unknown).
    cores_known: bool = True


@dataclass(frozen=True)
class Hardware:
    host: Host
    gpus: tuple[Gpu, ...] = ()
    #: Why a probe found nothing ("NVML not available: libnvidia-ml.so.1 not found").
    notes: tuple[str, ...] = ()
    source: HardwareSource = "detected"
    #: The spec string or file this came from, when not detected.
    origin: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        """A stable key for 'the same machine' (calibration records): GPU models and
        memory, CPU model and RAM size; not free memory, which changes."""
        import hashlib

        parts = [f"{g.name}|{g.total_bytes}|{g.mig}" for g in self.gpus]
        parts.append(f"{self.host.cpu_model}|{self.host.ram_total_bytes}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hardware:
        host_fields = {f.name for f in fields(Host)}
        gpu_fields = {f.name for f in fields(Gpu)}
        host_data = {k: v for k, v in data["host"].items() if k in host_fields}
        host_data["cpu_flags"] = tuple(host_data.get("cpu_flags", ()))
        gpus = tuple(
            Gpu(**{k: v for k, v in g.items() if k in gpu_fields}) for g in data.get("gpus", [])
        )
        return cls(
            host=Host(**host_data),
            gpus=gpus,
            notes=tuple(data.get("notes", ())),
            source=data.get("source", "file"),
            origin=data.get("origin"),
        )


__all__ = ["Gpu", "Hardware", "HardwareSource", "Host", "Vendor"]
