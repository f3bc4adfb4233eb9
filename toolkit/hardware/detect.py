"""Detect this machine: run each probe, keep what they found and why they found nothing.

Fast on purpose (`deploy plan` calls it): pynvml is imported only here, a vendor tool is
run only when it is on PATH, the spec table is read only when a GPU was found.
"""

from __future__ import annotations

import platform
from dataclasses import replace

from toolkit import settings
from toolkit.hardware.model import Gpu, Hardware
from toolkit.hardware.probe import Probe
from toolkit.hardware.visible import apply_visible


def enrich(gpus: tuple[Gpu, ...]) -> tuple[Gpu, ...]:
    """Fill what drivers do not report (bandwidth, arch, tensor paths) from the spec table."""
    if not gpus:
        return gpus
    from toolkit.hardware.specs import table

    specs = table()
    out = []
    for g in gpus:
        base_name = g.name.split(" MIG")[0]
        spec = specs.match_reported(base_name, g.total_bytes if g.unified_memory else None)
        if spec is None:
            out.append(g)
            continue
        bandwidth = spec.bandwidth_bytes_s
        flops = spec.fp16_flops
        if g.mig and bandwidth is not None and spec.memory_bytes:
            # A MIG slice owns its memory slices' share of the memory controllers.
            share = min(1.0, g.total_bytes / spec.memory_bytes)
            bandwidth *= share
            flops = None
        out.append(
            replace(
                g,
                bandwidth_bytes_s=g.bandwidth_bytes_s or bandwidth,
                arch=g.arch or spec.arch,
                compute_capability=g.compute_capability or spec.compute_capability,
                bf16=g.bf16 or spec.bf16,
                fp8=g.fp8 or spec.fp8,
                int4=g.int4 or spec.int4,
                fp4=g.fp4 or spec.fp4,
                unified_memory=g.unified_memory or spec.unified_memory,
                fp16_flops=g.fp16_flops or flops,
                fp8_flops=g.fp8_flops or (None if g.mig else spec.fp8_flops),
                fp4_flops=g.fp4_flops or (None if g.mig else spec.fp4_flops),
                int8_ops=g.int8_ops or (None if g.mig else spec.int8_ops),
                fp32_flops=g.fp32_flops or (None if g.mig else spec.fp32_flops),
                fabric=g.fabric or spec.fabric,
            )
        )
    return tuple(out)


def probe_gpus() -> Probe:
    """Every GPU probe that applies to this OS, merged."""
    gpus: list[Gpu] = []
    notes: list[str] = []
    system = platform.system()
    if system == "Darwin":
        from toolkit.hardware.apple import probe_apple

        apple = probe_apple()
        gpus += apple.gpus
        notes += apple.notes
    else:
        from toolkit.hardware.nvidia import probe_nvidia

        nv = probe_nvidia()
        visible, vnotes = apply_visible(nv.gpus, settings.visible_devices("nvidia"))
        gpus += visible
        notes += nv.notes + (vnotes if nv.gpus else ())
        from toolkit.hardware.amd import probe_amd

        amd = probe_amd()
        avisible, anotes = apply_visible(
            amd.gpus, settings.visible_devices("amd"), variable="ROCR/HIP_VISIBLE_DEVICES"
        )
        gpus += avisible
        notes += amd.notes + (anotes if amd.gpus else ())
    enriched = enrich(tuple(gpus))
    unknown = sorted({g.name for g in enriched if g.bandwidth_bytes_s is None})
    if unknown:
        notes.append(
            f"memory bandwidth unknown for {', '.join(unknown)} (not in the spec table); "
            "speed estimates for it are unavailable"
        )
    return Probe(gpus=enriched, notes=tuple(notes))


def detect() -> Hardware:
    """This machine, now. Never prints, exits or writes os.environ."""
    from toolkit.hardware.host import probe_host

    host, host_notes = probe_host()
    found = probe_gpus()
    apple = [g for g in found.gpus if g.vendor == "apple"]
    if apple and (host.cpu_model in (None, "arm", "i386")):
        host = replace(host, cpu_model=apple[0].name)  # the chip: "Apple M3 Max"
    unified = [g for g in found.gpus if g.unified_memory and g.bandwidth_bytes_s]
    if unified and host.ram_bandwidth_source in (None, "dmi"):
        # The CPU reads the same memory as the GPU: the chip's figure is the RAM's.
        host = replace(
            host, ram_bandwidth_bytes_s=unified[0].bandwidth_bytes_s, ram_bandwidth_source="chip"
        )
    return Hardware(host=host, gpus=found.gpus, notes=host_notes + found.notes, source="detected")


__all__ = ["detect", "enrich", "probe_gpus"]
