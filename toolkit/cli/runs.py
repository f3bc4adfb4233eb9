"""`deploy up | ps | logs | stop | check`."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import click

from toolkit.api import runs as api
from toolkit.cli.output import console, emit_json, json_option
from toolkit.errors import EngineError, NotFound, UsageError
from toolkit.units import format_bytes


def _warn(message: str) -> None:
    loud = message.startswith("--force")
    style = "bold red" if loud else "yellow"
    console(stderr=True).print(f"[{style}]Warning: {message}[/{style}]")


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("model", required=False)
@click.argument("engine_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--plan", "plan_file", type=click.Path(path_type=Path), help="Run this plan file.")
@click.option(
    "--plan-index",
    type=click.IntRange(1, 10_000),
    help="Which plan of a `deploy plan --json` answer to run (default: #1, said aloud).",
)
@click.option(
    "--engine",
    type=click.Choice(["llamacpp", "llamacpp-python", "vllm"]),
    help="Engine (llamacpp-python: the llama-cpp-python fallback server).",
)
@click.option("--variant", help="Variant id or quant (e.g. q4_k_m).")
@click.option("--ctx", type=click.IntRange(1, 1 << 24), help="Context per sequence.")
@click.option(
    "--concurrency", type=click.IntRange(1, 4096), help="Parallel sequences (llama.cpp slots)."
)
@click.option(
    "--ubatch",
    type=click.IntRange(1, 1 << 16),
    help="llama.cpp physical batch (embedding models: the longest input, e.g. 8192).",
)
@click.option(
    "--rpc",
    help="llama.cpp RPC workers host:port[,…] (deploy rpc-worker) that take layers.",
)
@click.option(
    "--lora",
    multiple=True,
    metavar="NAME[=SCALE]",
    help="Serve a LoRA adapter from the model's recipe (deploy pull MODEL:lora-NAME first).",
)
@click.option("--name", help="Run name (default: the variant id).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), help="Port, 1-65535 (default: a free one).")
@click.option("--force", is_flag=True, help="Start even if the plan does not fit free memory.")
@click.option("--online", is_flag=True, help="Let the engine reach the hub (default: offline).")
@click.option("--tls-cert", type=click.Path(path_type=Path), help="TLS certificate (PEM).")
@click.option("--tls-key", type=click.Path(path_type=Path), help="TLS private key (PEM).")
@click.option("--llama-server", type=click.Path(path_type=Path), help="llama-server binary.")
@click.option("--timeout", type=float, help="Seconds to wait for the model to answer.")
@click.option("--dry-run", is_flag=True, help="Print argv and env (key redacted); start nothing.")
@click.option("--foreground", is_flag=True, help="Stay attached: show the log, Ctrl-C stops.")
@click.option(
    "-f",
    "--file",
    "stack_file",
    type=click.Path(path_type=Path),
    help="Serve a stack file (several models behind one endpoint).",
)
@json_option
def up(
    model: str | None,
    engine_args: tuple[str, ...],
    foreground: bool,
    as_json: bool,
    stack_file: Path | None,
    **kw: object,
) -> None:
    """Launch a private OpenAI-compatible server for MODEL and wait until it answers.

    MODEL is a recipe name or variant id (files from `deploy pull`), or a local GGUF file
    or model folder. Binds 127.0.0.1 with a generated API key, offline, telemetry off.
    Engine flags go after `--`: deploy up smollm2-135m -- --embeddings --pooling mean
    """
    if model is not None and model.startswith("-"):
        # `deploy up --plan FILE -- --flag v`: click gave the first engine flag to MODEL
        engine_args, model = (model, *engine_args), None
    if foreground:
        _stop_like_ctrl_c()
    if stack_file is not None:
        if kw.pop("lora", ()):
            raise UsageError(
                "--lora is for one model; a stack names adapters per model",
                hint="lora: [{adapter: NAME}] under the model in the stack file",
            )
        if model is not None or engine_args:
            raise UsageError(
                "give MODEL or -f FILE, not both",
                hint="per-model engine flags go in the stack file (engine_flags:)",
            )
        from toolkit.cli.stack import up_file

        up_file(stack_file, dict(kw), as_json)
        if foreground:
            from toolkit.stack import load_stack

            _foreground(load_stack(stack_file).name)
        return
    if engine_args and not engine_args[0].startswith("-"):
        raise UsageError(
            f"unexpected argument {engine_args[0]!r}",
            hint="engine flags go after `--`: deploy up MODEL -- --flag value",
        )
    rpc_text = kw.pop("rpc", None)
    if rpc_text:
        from toolkit.rpc import endpoints

        kw["rpc"] = endpoints(str(rpc_text))
    kw["lora"] = tuple(kw.get("lora") or ())  # type: ignore[arg-type]
    opts = api.UpOptions(**kw, engine_args=tuple(engine_args))  # type: ignore[arg-type]
    err = console(stderr=True)
    with err.status("planning", spinner="dots") as status:

        def progress(phase: str, elapsed: float) -> None:
            status.update(f"{phase}  [dim]{elapsed:4.0f} s[/dim]")

        result = api.up(model, opts, notify=_warn, progress=progress)
    if isinstance(result, api.DryRun):
        if as_json:
            emit_json({"name": result.name, "plan": result.plan.to_dict(), **result.launch})
            return
        click.echo(f"# run {result.name}: {result.plan.variant_id} on {result.launch['engine']}")
        for var, value in result.launch["env"].items():
            click.echo(f"{var}={shlex.quote(str(value))} \\")
        click.echo(shlex.join(result.launch["argv"]))
        return
    rec = result.record
    if as_json:
        emit_json(
            {
                **api.status(rec).to_dict(),
                "served_model_name": rec.served_model_name,
                "key_file": str(result.key_file),
                "seconds_to_ready": result.seconds_to_ready,
                "snippets": result.snippets,
                "warnings": list(result.warnings),
            }
        )
    else:
        out = console()
        out.print(
            f"[green]Ready[/green] in {result.seconds_to_ready:.1f} s: run [bold]{rec.name}"
            f"[/bold] ({rec.engine} {rec.engine_version}, pid {rec.pid})"
        )
        out.print(f"  base URL  {rec.base_url}")
        out.print(f"  model     {rec.served_model_name}")
        out.print(f"  API key   {result.snippets['key']}   (file mode 0600; never printed)")
        out.print(
            f"  manage    deploy logs {rec.name} -f | deploy check {rec.name} | "
            f"deploy stop {rec.name}"
        )
        for note in result.warnings:
            out.print(f"  [yellow]note[/yellow]  {note}")
        click.echo("\ncurl:\n" + result.snippets["curl"])
        click.echo("\nPython (openai):\n" + result.snippets["python"])
    if foreground:
        _foreground(rec.name)


def _stop_like_ctrl_c() -> None:
    """A service manager stops a unit with SIGTERM (systemd, launchd, docker); a closed
    terminal sends SIGHUP. From here on both act as Ctrl-C: while `deploy up` still waits
    for the model, the start is abandoned and the engine stopped; afterwards the log loop
    ends and the engine is stopped. Installed before the engine starts, so a stop that
    comes during a long load never leaves the engine running on its own."""
    import signal

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)


def _foreground(name: str) -> None:
    _stop_like_ctrl_c()
    click.echo(f"\n--- {name}: log follows; Ctrl-C stops the server ---", err=True)
    try:
        for line in api.logs(name, lines=0, follow=True):
            click.echo(line)
    except KeyboardInterrupt:
        pass
    finally:
        for s in api.stop(name):
            click.echo(f"{s.name}: {s.outcome}", err=True)


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@click.command()
@json_option
def ps(as_json: bool) -> None:
    """List runs: state (starting, ready, dead), port, uptime, memory of the process group."""
    rows = api.ps()
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        click.echo("no runs (start one: deploy up MODEL)")
        return
    from rich.table import Table

    table = Table(box=None)
    table.add_column("name", overflow="fold")
    table.add_column("model", overflow="fold")
    for col in ("engine", "pid", "port", "uptime", "state", "memory", "tokens out", "tok/s"):
        table.add_column(col, no_wrap=True)
    colour = {"ready": "green", "starting": "yellow", "dead": "red"}
    for r in rows:
        table.add_row(
            r.name,
            r.model,
            r.engine,
            str(r.pid or "-"),
            str(r.port),
            _uptime(r.uptime_s),
            f"[{colour[r.state]}]{r.state}[/{colour[r.state]}]",
            format_bytes(r.rss_bytes) if r.rss_bytes is not None else "-",
            f"{r.tokens_out:,}" if r.tokens_out is not None else "-",
            f"{r.tok_s:.1f}" if r.tok_s is not None else "-",
        )
    console().print(table)
    if any(r.state == "dead" for r in rows):
        click.echo("dead runs: see `deploy logs NAME`; `deploy stop NAME` cleans them up", err=True)


@click.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", default=50, show_default=True, help="Lines from the end.")
def logs(name: str, follow: bool, lines: int) -> None:
    """Show a run's server log (the engine's output)."""
    try:
        for line in api.logs(name, lines=lines, follow=follow):
            click.echo(line)
    except KeyboardInterrupt:
        pass


@click.command()
@click.argument("name", required=False)
@click.option("--all", "all_runs", is_flag=True, help="Stop every run.")
@click.option("--timeout", default=15.0, show_default=True, hidden=True)
def stop(name: str | None, all_runs: bool, timeout: float) -> None:
    """Stop a run: TERM, wait, KILL its whole process group. Safe to repeat."""
    done = api.stop(name, all_runs=all_runs)
    if not done:
        click.echo("no runs")
    for s in done:
        click.echo(f"{s.name}: {s.outcome}")


@click.command()
@click.argument("name")
@json_option
def check(name: str, as_json: bool) -> None:
    """Check a run: served context matches the plan, chat works, tool calls come back as
    tool calls (for recipes with tool calling)."""
    t0 = time.monotonic()
    items = api.check(name)
    failed = [i for i in items if i.verdict == "fail"]
    if as_json:
        emit_json(
            {
                "name": name,
                "ok": not failed,
                "checks": [i.__dict__ for i in items],
                "seconds": round(time.monotonic() - t0, 2),
            }
        )
    else:
        mark = {
            "pass": "[green]pass[/green]",
            "fail": "[red]FAIL[/red]",
            "unknown": "[yellow]?[/yellow]",
        }
        out = console()
        for i in items:
            out.print(f"  {mark[i.verdict]:>4}  {i.name:<10} {i.detail}")
    if failed:
        raise EngineError(
            f"{len(failed)} check(s) failed for {name}: " + ", ".join(i.name for i in failed),
            hint=f"deploy logs {name}",
        )


@click.command()
@click.argument("name")
@json_option
def restart(name: str, as_json: bool) -> None:
    """Stop run NAME and start it again as it was (same plan, port and flags)."""
    result = api.restart(name)
    rec = result.record
    if as_json:
        emit_json({**api.status(rec).to_dict(), "seconds_to_ready": result.seconds_to_ready})
        return
    console().print(
        f"[green]Ready[/green] again in {result.seconds_to_ready:.1f} s: {rec.base_url}"
    )


@click.command()
@click.argument("name", required=False)
@click.argument("model", required=False)
@click.option("--url", help="Any OpenAI-compatible base URL (…/v1) instead of a run NAME.")
@click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="File holding the API key for --url (never pass a key on the command line).",
)
@click.option("--max-tokens", type=click.IntRange(1, 1 << 20), default=512, show_default=True)
@click.option("--temperature", type=float, help="Sampling temperature (default: the server's).")
def chat(
    name: str | None,
    model: str | None,
    url: str | None,
    key_file: Path | None,
    max_tokens: int,
    temperature: float | None,
) -> None:
    """Chat in the terminal with run NAME (and MODEL, an alias of a stack), or --url.

    Streams answers, keeps the conversation; /model NAME, /models, /reset, /system TEXT,
    /exit; a line of three double quotes starts and ends a multi-line message.
    """
    import sys

    from toolkit import chat as chat_mod
    from toolkit import keys
    from toolkit.runs import records

    if (name is None) == (url is None):
        raise UsageError("give a run NAME or --url", hint="deploy ps   (the running runs)")
    if url is not None:
        key = keys.read_key(key_file) if key_file is not None else None
        base = url.rstrip("/")
    else:
        assert name is not None
        rec = records.find(name)
        if rec is None:
            raise NotFound(f"no run named {name!r}", hint="deploy ps")
        base = rec.base_url
        key = keys.read_key(Path(rec.key_file)) if rec.key_file else None
    session = chat_mod.Session(base, key, model or "", max_tokens=max_tokens,
                               temperature=temperature)  # fmt: skip
    if not session.model:
        listed = session.models()
        if not listed:
            raise EngineError(f"{base} lists no model")
        session.model = listed[0]

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    chat_mod.run(session, write=write)
