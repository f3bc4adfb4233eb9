"""`deploy hw`: this machine's hardware, or the machine a spec string or profile describes."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.api import hardware as api
from toolkit.cli.output import console, emit_json, json_option
from toolkit.hardware.model import Hardware
from toolkit.units import format_bytes

#: Reusable option for every planning command: `--hw SPEC|FILE` (default: DEPLOY_HW, else
#: this machine). Pass the value to toolkit.hardware.profile.load_hardware().
hw_option = click.option(
    "--hw",
    "hw_spec",
    metavar="SPEC|FILE",
    default=None,
    help="Plan for another machine: a spec (2xrtx3090,ram=128G; cpu,ram=24G,cores=2; "
    "m3-max:128G) or a profile saved by `deploy hw --save`. Default: $DEPLOY_HW, else "
    "this machine.",
)


@click.command()
@hw_option
@json_option
@click.option(
    "--save",
    "save_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the profile (JSON) to FILE; read it back anywhere with --hw FILE.",
)
@click.option("--list-gpus", is_flag=True, help="List the GPU names a spec string accepts.")
@click.option(
    "--probe",
    is_flag=True,
    help="Also measure this machine's RAM bandwidth (a ~1 s copy test); with --save the "
    "profile keeps the measured figure.",
)
def hw(
    hw_spec: str | None, as_json: bool, save_path: Path | None, list_gpus: bool, probe: bool
) -> None:
    """Detect this machine's GPUs, CPU and memory, or show the machine --hw describes.

    Examples: deploy hw --json;  deploy hw --hw 2xrtx3090,ram=128G;  deploy hw --save box.json;
    deploy hw --probe
    """
    if list_gpus:
        _render_gpu_list(api.list_gpus(), as_json)
        return
    if save_path is not None:
        hardware, written = api.save_hardware(hw_spec, save_path, probe=probe)
    else:
        hardware, written = api.hardware(hw_spec, probe=probe), None
    if as_json:
        emit_json(api.hardware_document(hardware))
    else:
        _render(hardware)
    if written is not None:
        click.echo(
            f"saved {written}  (plan for it with: deploy plan MODEL --hw {written})", err=True
        )


def _render(h: Hardware) -> None:
    out = console()
    where = {"detected": "this machine", "spec": f"spec {h.origin}", "file": f"profile {h.origin}"}
    out.print(f"[bold]Hardware[/bold] ({where[h.source]})")
    host = h.host
    cores = f"{host.physical_cores} cores / {host.logical_cores} threads"
    out.print(f"  CPU: {host.cpu_model or '?'}  {cores if host.physical_cores else 'cores ?'}")
    if host.cpu_flags:
        out.print(f"  ISA: {' '.join(host.cpu_flags)}")
    bw = (
        f", {host.ram_bandwidth_bytes_s / 1e9:.1f} GB/s ({host.ram_bandwidth_source or '?'})"
        if host.ram_bandwidth_bytes_s
        else ", bandwidth unknown (deploy hw --probe measures it)"
    )
    out.print(
        f"  RAM: {format_bytes(host.ram_total_bytes)} total, "
        f"{format_bytes(host.ram_available_bytes)} available{bw}; swap "
        f"{format_bytes(host.swap_total_bytes)}; NUMA nodes {host.numa_nodes}"
    )
    if host.disk_free_bytes is not None:
        out.print(f"  Disk: {format_bytes(host.disk_free_bytes)} free at {host.disk_path or '?'}")
    if h.gpus:
        from rich.table import Table

        table = Table("device", "name", "total", "free", "bandwidth", "cc/arch", "tensor", box=None)
        for g in h.gpus:
            paths = [p for p in ("bf16", "fp8", "int4", "fp4") if getattr(g, p)]
            table.add_row(
                g.device_id,
                g.name,
                format_bytes(g.total_bytes),
                format_bytes(g.free_bytes),
                f"{g.bandwidth_bytes_s / 1e9:.0f} GB/s" if g.bandwidth_bytes_s else "?",
                g.compute_capability or g.arch or "?",
                ",".join(paths) or "-",
            )
        out.print(table)
    else:
        out.print("  GPUs: none")
    for note in h.notes:
        out.print(f"  [dim]note: {note}[/dim]")


def _render_gpu_list(rows: list[dict[str, object]], as_json: bool) -> None:
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table(
        "name", "aliases", "memory", "bandwidth", "cc/arch", "tensor", "fp16 TFLOPS", box=None
    )
    for r in rows:
        options = r["memory_options_bytes"]
        assert isinstance(options, list)
        memory = (
            "/".join(format_bytes(o).replace(".0 GiB", "") for o in options) + " GiB"
            if options
            else format_bytes(r["memory_bytes"])  # type: ignore[arg-type]
        )
        bw = r["bandwidth_bytes_s"]
        fp16 = r["fp16_flops"]
        paths = [p for p in ("bf16", "fp8", "int4", "fp4") if r[p]]
        aliases = r["aliases"]
        assert isinstance(aliases, list)
        table.add_row(
            str(r["name"]),
            ",".join(aliases),
            memory,
            f"{float(bw) / 1e9:.0f} GB/s" if isinstance(bw, float) else "?",
            str(r["compute_capability"] or r["arch"] or "?"),
            ",".join(paths) or "-",
            f"{float(fp16) / 1e12:g}" if isinstance(fp16, float) else "?",
        )
    console().print(table)


__all__ = ["hw", "hw_option"]
