"""`deploy recipes list|show|validate`."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click

from toolkit.api import recipes as api
from toolkit.cli.output import console, emit_json, json_option
from toolkit.units import format_bytes, format_params


@click.group()
def recipes() -> None:
    """Model recipes: architectures, variants and serving flags."""


@recipes.command("list")
@json_option
def list_(as_json: bool) -> None:
    """List every model in the catalog."""
    rows = api.list_recipes()
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table("id", "family", "params (total/active)", "formats", "context", box=None)
    for r in rows:
        params = format_params(r["params_total"])
        if r["params_active"]:
            params += f" / {format_params(r['params_active'])}"
        table.add_row(r["id"], r["family"], params, ",".join(r["formats"]), f"{r['context']:,}")
    console().print(table)


@recipes.command()
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> None:
    """Show a model (or a family's models, or one variant) with all its variants."""
    docs = api.show_recipe(name)
    if as_json:
        emit_json(docs if len(docs) > 1 else docs[0])
        return
    out = console()
    from rich.table import Table

    for doc in docs:
        out.print(f"[bold]{doc['name']}[/bold]  ({doc['id']}, family {doc['family']})")
        out.print(f"  repo: {doc['repo']}   file: {doc['file']}")
        if "overrides" in doc:
            out.print(f"  [yellow]overrides shipped recipe {doc['overrides']}[/yellow]")
        p = doc["params"]
        active = f" / {format_params(p['active'])} active" if p.get("active") else ""
        out.print(f"  params: {format_params(p['total'])}{active}")
        out.print(f"  context: {doc['context']['native']:,} native")
        if doc.get("license"):
            out.print(f"  license: {doc['license']['value']}")
        table = Table("variant id", "format", "repo", "size", box=None)
        for v in doc.get("variants", []):
            table.add_row(v["id"], v["format"], v["repo"], format_bytes(v.get("total_size")))
        out.print(table)


@recipes.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@json_option
def validate(paths: tuple[Path, ...], as_json: bool) -> None:
    """Validate shipped recipes, or the given files/directories."""
    results = api.validate_recipes(list(paths))
    bad = [r for r in results if r.error]
    if as_json:
        emit_json([asdict(r) for r in results])
    else:
        for r in results:
            if r.error:
                click.echo(r.error, err=True)
            else:
                click.echo(f"ok  {r.file}: {r.models} models, {r.variants} variants")
    if bad:
        sys.exit(2)
