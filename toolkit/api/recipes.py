"""Recipes: list, show, validate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import settings
from toolkit.catalog import (
    Catalog,
    ModelEntry,
    load_catalog,
    parse_recipe,
    resolve,
    variant_id,
)
from toolkit.catalog.loader import recipe_files, shipped_recipes_dir
from toolkit.errors import DeployError, NotFound
from toolkit.planner.kv import global_kv_bytes_per_token

if TYPE_CHECKING:
    from toolkit.catalog.schema import RecipeFile


def catalog() -> Catalog:
    """Shipped recipes extended/overridden by DEPLOY_RECIPES_PATH and the user config dir."""
    return load_catalog(settings.user_recipe_dirs())


def model_row(entry: ModelEntry) -> dict[str, Any]:
    m = entry.model
    formats = sorted({v.format for v in m.variants})
    return {
        "id": m.id,
        "family": entry.family,
        "name": m.name,
        "params_total": m.params.total,
        "params_active": m.params.active,
        "formats": formats,
        "context": m.context.native,
        "variants": len(m.variants),
    }


def list_recipes() -> list[dict[str, Any]]:
    cat = catalog()
    return [model_row(e) for e in sorted(cat.models.values(), key=lambda e: (e.family, e.model.id))]


def model_document(entry: ModelEntry) -> dict[str, Any]:
    """The resolved recipe for one model, with variant ids and where it came from."""
    m = entry.model
    doc: dict[str, Any] = {"family": entry.family, "file": str(entry.file)}
    if entry.overrides is not None:
        doc["overrides"] = str(entry.overrides)
    if entry.architecture_from is not None:
        doc["architecture_from"] = entry.architecture_from
    body = m.model_dump(mode="json", exclude_none=True)
    arch = m.architecture
    if arch is None and m.same_architecture_as:
        ref = catalog().models.get(m.same_architecture_as)
        arch = ref.model.architecture if ref is not None else None
    for vdoc, v in zip(body.get("variants", []), m.variants, strict=True):
        vdoc["id"] = variant_id(m, v)
        vdoc["total_size"] = v.total_size()
        if vdoc["total_size"] is None and arch is not None:
            # From the architecture and the quant layout (`deploy plan` shows the same).
            from toolkit.planner.inputs import ModelInput, VariantInput
            from toolkit.planner.plan import download_size

            est = download_size(
                ModelInput(m.id, arch, m.context.native, m.params.total),
                VariantInput(vdoc["id"], v.quant, v.format),
            )
            vdoc["total_size"] = est
            vdoc["size_estimated"] = est is not None
    for adoc, a in zip(body.get("adapters", []), m.adapters, strict=True):
        adoc["id"] = f"{m.id}:{a.quant}"
        adoc["total_size"] = a.as_variant().total_size()
    doc.update(body)
    if m.architecture is not None:
        doc["derived"] = {
            # Full-context layers only: sliding/chunked/linear layers add a bounded amount.
            "kv_bytes_per_token_f16": int(global_kv_bytes_per_token(m.architecture, "f16")),
            "global_layers": len(m.architecture.global_layer_indices()),
        }
    return doc


def show_recipe(name: str) -> list[dict[str, Any]]:
    resolved = resolve(catalog(), name)
    docs = [model_document(e) for e in resolved.entries]
    if resolved.adapter is not None:
        docs[0]["variants"] = []
        docs[0]["adapters"] = [a for a in docs[0]["adapters"] if a["name"] == resolved.adapter.name]
    elif resolved.variant is not None:
        vid = resolved.variant_id
        docs[0]["variants"] = [v for v in docs[0]["variants"] if v["id"] == vid]
    return docs


@dataclass(frozen=True)
class Validation:
    file: str
    models: int
    variants: int
    error: str | None


def validate_recipes(paths: Sequence[Path] = ()) -> list[Validation]:
    """Validate the given files (or directories), or the shipped recipes."""
    targets: list[Path] = []
    for p in paths or [shipped_recipes_dir()]:
        if p.is_dir():
            targets.extend(recipe_files([p]))
        elif p.exists():
            targets.append(p)
        else:
            raise NotFound(f"no such file: {p}")
    results: list[Validation] = []
    parsed: list[tuple[Path, RecipeFile]] = []
    for path in targets:
        try:
            recipe = parse_recipe(path)
        except DeployError as exc:
            results.append(Validation(str(path), 0, 0, str(exc)))
            continue
        parsed.append((path, recipe))
        n_variants = sum(len(m.variants) for m in recipe.models)
        results.append(Validation(str(path), len(recipe.models), n_variants, None))
    return _check_links(results, parsed)


def _check_links(
    results: list[Validation], parsed: list[tuple[Path, RecipeFile]]
) -> list[Validation]:
    """`same_architecture_as` may name a model of another file: check each file against the
    shipped recipes plus the other files being validated."""
    base: list[tuple[Path, RecipeFile]] = []
    given = {p.resolve() for p, _ in parsed}
    for path in recipe_files([shipped_recipes_dir()]):
        if path.resolve() in given:
            continue
        try:
            base.append((path, parse_recipe(path)))
        except DeployError:
            continue  # reported when the shipped folder itself is validated
    out = list(results)
    for path, recipe in parsed:
        cat = Catalog()
        for other_path, other in [*base, *((p, r) for p, r in parsed if p != path)]:
            cat.add(other_path, other)
        cat.add(path, recipe)
        try:
            cat.link_architectures()
        except DeployError as exc:
            i = next(k for k, r in enumerate(out) if r.file == str(path))
            out[i] = Validation(str(path), 0, 0, str(exc))
    return out
