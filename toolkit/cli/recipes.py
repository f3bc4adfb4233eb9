"""`deploy recipes list|show|validate`."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

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

    table = Table(box=None)
    table.add_column("id", no_wrap=True)
    table.add_column("family", overflow="fold")
    table.add_column("params", no_wrap=True)
    table.add_column("formats", min_width=10)
    table.add_column("context", justify="right", no_wrap=True)
    for r in rows:
        params = format_params(r["params_total"])
        if r["params_active"]:
            params += f" / {format_params(r['params_active'])}"
        table.add_row(r["id"], r["family"], params, " ".join(r["formats"]), _tokens(r["context"]))
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
        ctx = doc["context"]
        extended = f", {ctx['extended']:,} extended" if ctx.get("extended") else ""
        out.print(f"  context: {ctx['native']:,} native{extended}")
        out.print(f"  architecture: {_architecture_line(doc)}")
        if "derived" in doc:
            d = doc["derived"]
            out.print(
                f"  KV cache (f16): {d['kv_bytes_per_token_f16']:,} bytes/token "
                f"in {d['global_layers']} full-context layers"
            )
        if doc.get("license"):
            out.print(f"  license: {doc['license']['value']}")
        for engine, serving in doc.get("serving", {}).items():
            if serving.get("flags"):
                out.print(f"  {engine} flags: {_flags_line(serving['flags'])}")
        if doc.get("note"):
            out.print(f"  note: {doc['note']}")
        table = Table(box=None)
        table.add_column("variant id", no_wrap=True)
        table.add_column("format")
        table.add_column("repo", overflow="fold")
        table.add_column("size", justify="right", no_wrap=True)
        for v in doc.get("variants", []):
            repo = v.get("repo") or f"pypi:{v['pypi']['package']}"
            size = format_bytes(v.get("total_size"))
            if v.get("size_estimated"):
                size = f"~{size} est."
            table.add_row(v["id"], v["format"], repo, size)
        for a in doc.get("adapters", []):
            rank = f", rank {a['rank']}" if a.get("rank") else ""
            table.add_row(
                a["id"], f"LoRA {a['format']}{rank}", a["repo"], format_bytes(a.get("total_size"))
            )
        out.print(table)


def _tokens(n: int) -> str:
    """Context lengths as people say them: 131072 -> 128K, 1048576 -> 1M."""
    if n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n % 1024 == 0:
        return f"{n >> 10}K"
    return f"{n:,}"


def _architecture_line(doc: dict[str, Any]) -> str:
    arch = doc.get("architecture")
    if arch is None:
        return "not given (see note)"
    parts = [arch["model_type"], f"{arch['layers']} layers"]
    if "mla" in arch:
        parts.append(
            f"MLA (latent {arch['mla']['kv_lora_rank']}+{arch['mla']['qk_rope_head_dim']})"
        )
    else:
        parts.append(f"{arch['heads']}Q/{arch['kv_heads']}KV heads x {arch['head_dim']}")
    local = arch.get("local_attention")
    if local:
        window = f" {local['window']}" if local.get("window") else ""
        parts.append(f"{local['kind']}{window} + global layers")
    if "moe" in arch:
        moe = arch["moe"]
        parts.append(f"MoE {moe['experts']} experts, {moe['experts_per_token']} per token")
    line = ", ".join(parts)
    if doc.get("architecture_from"):
        line += f" (same as {doc['architecture_from']})"
    return line


def _flags_line(flags: dict[str, Any]) -> str:
    out = []
    for flag, value in flags.items():
        out.append(flag if value is True else f"{flag} {value}")
    return " ".join(out)


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
