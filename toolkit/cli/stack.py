"""`deploy stack validate`, and the stack forms of `deploy plan -f` and `deploy up -f`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from toolkit.cli.output import console, emit_json
from toolkit.stack import DEFAULT_FILE, load_stack
from toolkit.units import format_bytes

file_option = click.option(
    "-f",
    "--file",
    "stack_file",
    type=click.Path(path_type=Path),
    help=f"A stack file ({DEFAULT_FILE}): several models behind one endpoint.",
)


@click.group(name="stack")
def stack_group() -> None:
    """Stacks: several models served together behind one endpoint (docs/serving.md)."""


@stack_group.command()
@click.option("-f", "--file", "stack_file", type=click.Path(path_type=Path), default=DEFAULT_FILE,
              show_default=True)  # fmt: skip
def validate(stack_file: Path) -> None:
    """Check a stack file: its keys, aliases, models and engine flags."""
    stack = load_stack(stack_file)
    from toolkit.api.plan import model_inputs
    from toolkit.planner.types import PlanRequest

    for m in stack.models:
        model_inputs(m.model, PlanRequest())  # resolves or raises NotFound with a hint
    click.echo(f"{stack_file}: ok ({len(stack.models)} models: "
               f"{', '.join(m.alias for m in stack.models)})")  # fmt: skip


def plan_file(stack_file: Path, hw_spec: str | None, as_json: bool) -> None:
    from toolkit.api.stack import plan_stack

    splan = plan_stack(load_stack(stack_file), hw_spec)
    if as_json:
        emit_json(splan.to_dict())
        return
    out = console()
    out.print(f"stack [bold]{splan.stack.name}[/bold]: {len(splan.entries)} models, one endpoint")
    for e in splan.entries:
        mem = " ".join(f"{d.id} {format_bytes(d.needed_bytes)}" for d in e.plan.memory
                       if d.total_bytes > 0)  # fmt: skip
        state = "resident" if e.model.alias in splan.resident else "on demand"
        speed = e.plan.speed.decode_tok_s
        tok_s = f"~{speed:.0f} tok/s" if speed else "speed ?"
        out.print(
            f"  {e.model.alias:12} {e.plan.variant_id}  {e.plan.placement}  ctx {e.plan.ctx:,}"
            f" · {mem} · {tok_s} · {state}"
            + (f" · {e.model.task}" if e.model.task != "chat" else ""),
            soft_wrap=True,
        )
    for dev, (need, usable) in splan.devices.items():
        out.print(f"  {dev}: resident models need {format_bytes(need)} of {format_bytes(usable)}")
    if any(e.model.engine == "llamacpp" for e in splan.entries):
        out.print(f"  at most {splan.models_max} loaded at once (llama-server --models-max)")
    for n in splan.notes:
        out.print(f"  note: {n}", soft_wrap=True)


def up_file(stack_file: Path, opts: dict[str, Any], as_json: bool) -> None:
    from toolkit.api.stack import up_stack

    stack = load_stack(stack_file)
    err = console(stderr=True)
    with err.status("planning the stack", spinner="dots") as status:

        def progress(phase: str, elapsed: float) -> None:
            status.update(f"{phase}  [dim]{elapsed:4.0f} s[/dim]")

        result = up_stack(
            stack,
            source=stack_file.resolve(),
            llama_server=opts.get("llama_server"),
            port=opts.get("port"),
            timeout=opts.get("timeout"),
            dry_run=bool(opts.get("dry_run")),
            tls_cert=opts.get("tls_cert"),
            tls_key=opts.get("tls_key"),
            progress=progress,
            notify=lambda m: err.print(f"[yellow]Warning: {m}[/yellow]"),
        )
    if isinstance(result, dict):
        if as_json:
            emit_json(result)
        else:
            click.echo(result["preset"])
            click.echo(" ".join(result["argv"]))
        return
    rec = result.result.record
    aliases = [e.model.alias for e in result.plan.entries]
    if as_json:
        from toolkit.api import runs as api

        emit_json({**api.status(rec).to_dict(), "aliases": aliases,
                   "key_file": str(result.result.key_file), "preset": str(result.preset),
                   "stack": result.plan.to_dict()})  # fmt: skip
        return
    out = console()
    out.print(f"[green]Ready[/green] in {result.result.seconds_to_ready:.1f} s: stack "
              f"[bold]{rec.name}[/bold] (llama-server router, pid {rec.pid})")  # fmt: skip
    out.print(f"  base URL  {rec.base_url}")
    out.print(f"  models    {', '.join(aliases)}   (the `model` field picks one)")
    out.print(f"  API key   {result.result.snippets['key']}")
    out.print(f"  manage    deploy logs {rec.name} -f | deploy stop {rec.name}")
    for n in result.plan.notes:
        out.print(f"  [yellow]note[/yellow]  {n}", soft_wrap=True)
