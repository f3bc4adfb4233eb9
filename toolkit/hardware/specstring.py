"""Parse a hardware spec string into a Hardware value.

Grammar: comma-separated items. A GPU item is `[N x]NAME[:MEM]`: NAME from the spec table
(`deploy hw --list-gpus`) or `gpu` with an explicit MEM (`gpu:79.18GiB`). Other items:
`ram=SIZE`, `cores=N`, `bw=GB/s` (RAM bandwidth, decimal GB/s), `disk=SIZE` (free disk for
models), `wired=SIZE` (Apple: the GPU working-set cap, as raised by iogpu.wired_limit_mb),
and `cpu` for a machine without GPUs. GPUs described here are idle (free = total).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from toolkit.errors import UsageError
from toolkit.hardware.model import Gpu, Hardware, Host
from toolkit.hardware.specs import GpuSpec, table
from toolkit.units import GiB, format_bytes, parse_size

KEYS = ("ram", "cores", "bw", "disk", "wired")
ACCEPTED = (
    "accepted: [N x]NAME[:MEM] (NAME from `deploy hw --list-gpus`, or gpu:MEM), "
    "ram=SIZE, cores=N, bw=GB/s, disk=SIZE, wired=SIZE, cpu"
)
_COUNT = re.compile(r"^(?P<count>[+-]?\d+(?:\.\d+)?)\s*[x×]\s*(?P<rest>[a-z].*)$")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
#: ISA flags of Zen 5 cores (AMD Strix Halo), as Linux names them.
ZEN5_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
    "avx512_vnni", "avx512_bf16",
)  # fmt: skip


def apple_default_working_set(ram_bytes: int) -> int:
    """macOS's default GPU working-set cap when iogpu.wired_limit_mb is 0 (an estimate).

    Apple does not document the default. llama.cpp logs of `recommendedMaxWorkingSetSize`
    show exactly 2/3 of RAM on 8, 16 and 32 GB Macs (5461.34 / 10922.67 / 21845.34 MiB in
    llama.cpp #5207, #687, PR #2011) and exactly 3/4 on a 96 GB M2 Max (73728 MiB, #3213;
    "around 49 GB" on 64 GB in #1870); newer macOS releases give somewhat more (107.52 GiB
    of 128 GiB reported in antirez/ds4 #893), so this errs low. Detection on a Mac reads
    the real value from Metal instead.
    """
    fraction = 2 / 3 if ram_bytes <= 32 * GiB else 3 / 4
    return int(ram_bytes * fraction)


#: The most GPUs one machine (one spec string) may have: planning walks every GPU, and
#: no single server holds more (multi-node clusters are described another way).
MAX_GPUS = 64


def _bad(token: str, problem: str) -> UsageError:
    return UsageError(
        f"bad hardware spec item {token!r}: {problem}",
        hint="deploy hw --list-gpus   (examples: 2xrtx3090,ram=128G  cpu,ram=24G,cores=2)",
    )


@dataclass
class _Parsed:
    gpus: list[tuple[int, GpuSpec | None, int | None, str]] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    cpu: bool = False


def _positive_int(token: str, text: str, what: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise _bad(token, f"{what} must be a whole number greater than zero, not {text!r}")
    value = int(text)
    if value <= 0:
        raise _bad(token, f"{what} must be greater than zero, not {value}")
    return value


def _size(token: str, text: str, what: str) -> int:
    try:
        return parse_size(text, what=what)
    except UsageError as exc:
        raise _bad(token, exc.message) from None


def _parse_items(spec: str) -> _Parsed:
    parsed = _Parsed()
    if not spec.strip():
        raise UsageError(f"empty hardware spec; {ACCEPTED}")
    for raw in spec.split(","):
        token = raw.strip()
        item = token.lower()
        if not item:
            raise _bad(token, f"empty item in {spec!r}; {ACCEPTED}")
        if "=" in item:
            name, _, value = (p.strip() for p in item.partition("="))
            if name not in KEYS:
                raise _bad(token, f"unknown key {name!r}; {ACCEPTED}")
            if name in parsed.keys:
                raise _bad(token, f"{name}= is given twice")
            if not value:
                raise _bad(token, f"{name}= needs a value")
            parsed.keys[name] = value
            continue
        if item == "cpu":
            if parsed.cpu:
                raise _bad(token, "cpu is given twice")
            parsed.cpu = True
            continue
        count = 1
        match = _COUNT.match(item)
        if match:
            text = match.group("count")
            if not re.fullmatch(r"[+-]?\d+", text):
                raise _bad(token, f"GPU count must be a whole number, not {text!r}")
            if len(text.lstrip("+-")) > 6:
                raise _bad(token, f"GPU count {text} is not a machine (at most {MAX_GPUS})")
            count = int(text)
            if count <= 0:
                raise _bad(token, f"GPU count must be greater than zero, not {count}")
            item = match.group("rest").strip()
        elif re.match(r"^[+-]?\d", item) and not table().get(item.partition(":")[0]):
            raise _bad(token, f"expected [N x]NAME[:MEM]; {ACCEPTED}")
        name, _, mem_text = (p.strip() for p in item.partition(":"))
        if ":" in item and not mem_text:
            raise _bad(token, "a size must follow ':' (e.g. gpu:24G)")
        mem = _size(token, mem_text, "GPU memory") if mem_text else None
        if name == "gpu":
            if mem is None:
                raise _bad(token, "`gpu` needs its memory size, e.g. gpu:24G or gpu:79.18GiB")
            parsed.gpus.append((count, None, mem, token))
            continue
        try:
            gspec = table().resolve(name)
        except UsageError as exc:
            raise UsageError(
                f"bad hardware spec item {token!r}: {exc.message}", hint=exc.hint
            ) from None
        parsed.gpus.append((count, gspec, mem, token))
    total = sum(c for c, *_ in parsed.gpus)
    if total > MAX_GPUS:
        raise UsageError(
            f"bad hardware spec {spec!r}: {total} GPUs in one machine; deploy plans one "
            f"machine of at most {MAX_GPUS} GPUs",
            hint="describe one node, e.g. 8xh100,ram=2T",
        )
    return parsed


def parse_spec(spec: str) -> Hardware:
    """The Hardware a spec string describes. UsageError names the bad token."""
    p = _parse_items(spec)
    if p.cpu and p.gpus:
        raise _bad(spec, "`cpu` means a machine without GPUs, but GPUs are listed too")
    unified = [g for g in p.gpus if g[1] is not None and g[1].unified_memory]
    if unified and (len(p.gpus) > 1 or unified[0][0] != 1):
        raise _bad(
            unified[0][3],
            f"{unified[0][1].name if unified[0][1] else ''} is a whole machine with unified "
            "memory; it cannot be combined with other GPUs or counted",
        )
    keys = p.keys
    ram = _size(f"ram={keys['ram']}", keys["ram"], "RAM") if "ram" in keys else None
    cores = (
        _positive_int(f"cores={keys['cores']}", keys["cores"], "cores") if "cores" in keys else 0
    )
    ram_bw: float | None = None
    bw_source: str | None = None
    if "bw" in keys:
        text = re.sub(r"\s*gb/?s$", "", keys["bw"])
        if not _NUMBER.match(text) or float(text) <= 0:
            raise _bad(
                f"bw={keys['bw']}", "bw= is RAM bandwidth in GB/s, a number above zero (bw=400)"
            )
        ram_bw, bw_source = float(text) * 1e9, "spec"
    disk = _size(f"disk={keys['disk']}", keys["disk"], "disk") if "disk" in keys else None
    wired = (
        _size(f"wired={keys['wired']}", keys["wired"], "wired limit") if "wired" in keys else None
    )
    if wired is not None and not unified:
        raise _bad(
            f"wired={keys['wired']}",
            "wired= is the GPU working-set cap of an Apple Silicon Mac; name one (m3-max:128G)",
        )

    notes: list[str] = []
    gpus: list[Gpu] = []
    host_arch: str | None = None
    host_os: str | None = None
    flags: tuple[str, ...] = ()
    if unified:
        _, gspec, mem, token = unified[0]
        assert gspec is not None
        if mem is None and ram is not None:
            mem = ram
        if mem is None:
            if len(gspec.memory_options) > 1:
                sizes = [_short(o) for o in gspec.memory_options]
                rate = (
                    f" (its {gspec.bandwidth_bytes_s / 1e9:g} GB/s is the same for every size)"
                    if gspec.bandwidth_bytes_s
                    else ""
                )
                raise _bad(
                    token,
                    f"{gspec.name} comes with {', '.join(sizes)} of memory; "
                    f"say which, e.g. {gspec.name}:{sizes[-1]}{rate}",
                )
            mem = gspec.memory_bytes
        if ram is not None and ram != mem:
            raise _bad(
                f"ram={keys['ram']}",
                f"{gspec.name} has unified memory: ram= must equal its memory "
                f"({format_bytes(mem)}) or be left out",
            )
        ram = mem
        if gspec.vendor == "apple":
            host_arch, host_os, flags = "arm64", "darwin", ("neon",)
            if wired is not None and wired > mem:
                raise _bad(
                    f"wired={keys['wired']}",
                    f"the GPU cap cannot exceed the Mac's memory ({format_bytes(mem)})",
                )
            cap = wired if wired is not None else apple_default_working_set(mem)
            if wired is None:
                notes.append(
                    f"GPU working-set cap estimated at {format_bytes(cap)} (macOS default; "
                    "state it with wired=SIZE if iogpu.wired_limit_mb is raised)"
                )
            gpus.append(_gpu(0, gspec, mem, free=cap, limit=cap))
        elif gspec.vendor == "amd":  # Strix Halo: Zen 5 cores
            host_arch, host_os, flags = "x86_64", "linux", ZEN5_FLAGS
            gpus.append(_gpu(0, gspec, mem))
        else:  # Jetson, GB10: Arm cores
            host_arch, host_os, flags = "aarch64", "linux", ("neon",)
            gpus.append(_gpu(0, gspec, mem))
        if ram_bw is None and gspec.bandwidth_bytes_s:
            ram_bw, bw_source = gspec.bandwidth_bytes_s, "chip"
    else:
        index = 0
        for count, gspec, mem, _token in p.gpus:
            for _ in range(count):
                gpus.append(_gpu(index, gspec, mem))
                index += 1
    if ram is None:
        ram = 0
        notes.append("RAM not given (add ram=SIZE): nothing will be planned in system RAM")
    if cores == 0:
        notes.append("CPU cores not given (add cores=N)")
    host = Host(
        cpu_model=None,
        physical_cores=cores,
        logical_cores=cores,
        ram_total_bytes=ram,
        ram_available_bytes=ram,
        cpu_flags=flags,
        ram_bandwidth_bytes_s=ram_bw,
        ram_bandwidth_source=bw_source,
        disk_free_bytes=disk,
        arch=host_arch,
        os=host_os,
        ram_known="ram" in keys or bool(unified),
        cores_known=cores > 0,
    )
    return Hardware(host=host, gpus=tuple(gpus), notes=tuple(notes), source="spec", origin=spec)


def _short(n: int) -> str:
    """64G for whole GiB, else the exact byte count."""
    return f"{n // GiB}G" if n % GiB == 0 else str(n)


def _gpu(
    index: int,
    gspec: GpuSpec | None,
    mem: int | None,
    *,
    free: int | None = None,
    limit: int | None = None,
) -> Gpu:
    if gspec is None:
        assert mem is not None
        return Gpu(index=index, name="gpu", vendor="other", total_bytes=mem, free_bytes=mem)
    total = mem if mem is not None else gspec.memory_bytes
    return Gpu(
        index=index,
        name=gspec.full_name,
        vendor=gspec.vendor,
        total_bytes=total,
        free_bytes=free if free is not None else total,
        bandwidth_bytes_s=gspec.bandwidth_bytes_s,
        compute_capability=gspec.compute_capability,
        arch=gspec.arch,
        bf16=gspec.bf16,
        fp8=gspec.fp8,
        int4=gspec.int4,
        fp4=gspec.fp4,
        unified_memory=gspec.unified_memory,
        fp16_flops=gspec.fp16_flops,
        fp8_flops=gspec.fp8_flops,
        fp4_flops=gspec.fp4_flops,
        int8_ops=gspec.int8_ops,
        fp32_flops=gspec.fp32_flops,
        fabric=gspec.fabric,
        working_set_limit_bytes=limit,
    )


__all__ = ["ACCEPTED", "apple_default_working_set", "parse_spec"]
