"""`deploy service install | status | uninstall`: a run that survives a reboot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from toolkit.cli.output import console
from toolkit.errors import UsageError


@click.group(name="service")
def service_group() -> None:
    """Install a run as a systemd unit (Linux) or launchd agent (macOS), from a frozen plan."""


def _scope(system: bool) -> str:
    return "system" if system else "user"


@service_group.command()
@click.argument("target", required=False)
@click.option("-f", "--file", "stack_file", type=click.Path(path_type=Path),
              help="A stack file instead of a run or model.")  # fmt: skip
@click.option("--name", help="Service and run name (default: the run's, or the variant id).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: the name's saved one).")
@click.option("--system", is_flag=True, help="A system unit (/etc/systemd/system; needs root).")
@click.option("--print", "print_only", is_flag=True, help="Print the unit; write nothing.")
@click.option("--no-start", is_flag=True, help="Write the unit; do not enable or start it.")
def install(
    target: str | None,
    stack_file: Path | None,
    name: str | None,
    port: int | None,
    system: bool,
    print_only: bool,
    no_start: bool,
) -> None:
    """Install TARGET (a running run's name, or a model to plan now) or -f STACK as a
    service whose command is `deploy up --plan FROZEN --foreground` on a fixed port."""
    from toolkit import service as svc_mod
    from toolkit.api import runs as api
    from toolkit.runs import launch as launch_parts
    from toolkit.runs import process, records

    if (target is None) == (stack_file is None):
        raise UsageError("give a run or model, or -f STACK", hint="deploy service install my-run")
    py = (sys.executable, "-m", "toolkit", "up")
    argv: tuple[str, ...]
    running = None
    if stack_file is not None:
        from toolkit.stack import load_stack

        stack = load_stack(stack_file)
        name = stack.name
        argv = (*py, "-f", str(stack_file.resolve()), "--foreground")
        description = f"stack {name} ({', '.join(m.alias for m in stack.models)})"
        running = records.find(name)
    else:
        assert target is not None
        rec = records.find(target)
        plan_doc: dict[str, object]
        if rec is not None and "stack" not in rec.plan:
            running = rec
            name = name or rec.name
            plan_doc = rec.plan
            host, port = rec.host, port or rec.port
            extra: tuple[str, ...] = ("--", *rec.engine_args) if rec.engine_args else ()
            server = rec.argv[0] if rec.engine == "llamacpp" else None
        else:
            plan, _notes = api.make_plan(target, api.UpOptions())
            name = name or launch_parts.default_name(plan)
            plan_doc = plan.to_dict()
            host, extra, server = "127.0.0.1", (), None
        name = records.check_name(name)
        if port is None:
            port = launch_parts.saved_ports().get(name) or process.free_port(host)
        frozen = svc_mod.services_dir() / f"{name}.plan.json"
        argv = (*py, "--plan", str(frozen), "--name", name, "--host", host,
                "--port", str(port), "--foreground")  # fmt: skip
        if server:
            argv += ("--llama-server", server)
        argv += extra
        description = f"{name} ({plan_doc.get('variant_id')} on {plan_doc.get('engine')})"
        if not print_only:
            records.write_json_atomic(frozen, plan_doc)
            with records.lock():
                launch_parts.save_port(name, port)
    svc = svc_mod.make_service(name, argv, scope=_scope(system), description=description)  # type: ignore[arg-type]
    if print_only:
        click.echo(svc.text)
        return
    svc_mod.write_service(svc)
    out = console()
    out.print(f"wrote {svc.unit_path}")
    if svc.kind == "systemd":
        ok, why = svc_mod.verify_unit(svc.unit_path)
        if not ok:
            raise UsageError(f"systemd-analyze verify rejects {svc.unit_path}: {why}")
    if no_start:
        out.print("start it with: " + " ".join(svc_mod.manager_command(svc, "start")))
        return
    if running is not None and process.alive(running.pid, running.create_time):
        api.stop(running.name)
        out.print(f"stopped the run {running.name} started by hand; the service takes over")
    ok, why = svc_mod.run_manager(svc_mod.manager_command(svc, "start"), required=False)
    if ok:
        out.print(f"enabled and started: {svc.unit_path.name} (after a reboot too)")
    else:
        out.print(f"[yellow]not started[/yellow] ({why.splitlines()[0] if why else 'failed'}); "
                  "run: " + " ".join(svc_mod.manager_command(svc, "start")))  # fmt: skip


def _installed(name: str, system: bool) -> object:
    from toolkit import service as svc_mod

    kind = "launchd" if sys.platform == "darwin" else "systemd"
    path = svc_mod.unit_path(name, _scope(system), kind)  # type: ignore[arg-type]
    if not path.exists():
        from toolkit.errors import NotFound

        raise NotFound(f"no service {name!r} ({path})", hint="deploy service install RUN")
    return svc_mod.Service(name, _scope(system), kind, path, path.read_text(), ())  # type: ignore[arg-type]


@service_group.command()
@click.argument("name")
@click.option("--system", is_flag=True)
def status(name: str, system: bool) -> None:
    """The unit, the service manager's view, and the run's state."""
    from toolkit import service as svc_mod
    from toolkit.api import runs as api
    from toolkit.runs import records

    svc = _installed(name, system)
    assert isinstance(svc, svc_mod.Service)
    click.echo(f"unit: {svc.unit_path}")
    ok, out = svc_mod.run_manager(svc_mod.manager_command(svc, "status"), required=False)
    click.echo(out.splitlines()[0] if out else ("active" if ok else "unknown"))
    rec = records.find(name)
    click.echo(json.dumps(api.status(rec).to_dict()) if rec else "run: not running")


@service_group.command()
@click.argument("name")
@click.option("--system", is_flag=True)
def uninstall(name: str, system: bool) -> None:
    """Stop and disable the service, remove its unit and frozen plan."""
    from toolkit import service as svc_mod

    svc = _installed(name, system)
    assert isinstance(svc, svc_mod.Service)
    ok, why = svc_mod.run_manager(svc_mod.manager_command(svc, "stop"), required=False)
    svc.unit_path.unlink(missing_ok=True)
    (svc_mod.services_dir() / f"{name}.plan.json").unlink(missing_ok=True)
    click.echo(
        f"removed {svc.unit_path}"
        + ("" if ok else f" ({why.splitlines()[0] if why else 'manager not reached'})")
    )
