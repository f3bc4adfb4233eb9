"""The store: pull, list, verify, remove, bundle and import models (called by cli/store.py)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from toolkit.api.recipes import catalog
from toolkit.catalog import Model, Variant, resolve, variant_id
from toolkit.catalog.resolve import Resolved
from toolkit.catalog.schema import Adapter
from toolkit.errors import Conflict, IntegrityError, NotFound, UsageError
from toolkit.store import records


def resolve_variant(name: str, quant: str | None = None) -> tuple[Model, Variant]:
    """A variant from `model:quant`, or `model` + `--variant`, or the model's first variant."""
    resolved: Resolved = resolve(catalog(), f"{name}:{quant}" if quant else name)
    if len(resolved.entries) > 1 and resolved.variant is None:
        ids = ", ".join(e.model.id for e in resolved.entries)
        raise UsageError(f"{name!r} names several models: {ids}", hint="deploy pull MODEL:QUANT")
    model = resolved.entry.model
    variant = resolved.variant
    if variant is None:
        if not model.variants:
            raise NotFound(f"{model.id} has no variants with weights")
        variant = model.variants[0]
    return model, variant


def adapter_files(model: str, name: str) -> tuple[Model, Adapter, list[Path]]:
    """A recipe adapter of MODEL and its files in the store (pulled or imported, so
    verified against the recipe's hashes then). NotFound names the pull to run."""
    from toolkit.catalog.resolve import find_adapter
    from toolkit.store.locate import locate

    if Path(model).expanduser().exists() or model.endswith((".gguf", "/")):
        raise UsageError(
            f"--lora takes an adapter from a recipe model's `adapters:`; {model!r} is a file",
            hint="for an adapter file: deploy up MODEL -- --lora-scaled FILE:SCALE (llama.cpp)"
            " or -- --lora-modules NAME=DIR (vLLM)",
        )
    resolved = resolve(catalog(), model)
    if len(resolved.entries) != 1:
        ids = ", ".join(e.model.id for e in resolved.entries)
        raise UsageError(f"{model!r} names several models ({ids}): name one for --lora")
    base = resolved.entry.model
    adapter = find_adapter(base, name)
    if adapter is None:
        have = ", ".join(a.name for a in base.adapters) or "none"
        raise NotFound(
            f"{base.id} has no LoRA adapter {name!r} in its recipe (it has: {have})",
            hint=f"deploy recipes show {base.id}",
        )
    paths = locate(base, adapter.as_variant())
    return base, adapter, paths


def _variant_ids(names: list[str]) -> list[str]:
    """Variant ids for names: a recorded variant id as typed, else resolved via the recipes."""
    out: list[str] = []
    for name in names:
        if records.load(name) is not None:
            out.append(name)
            continue
        model, variant = resolve_variant(name)
        out.append(variant_id(model, variant))
    return out


def pull(
    name: str, quant: str | None = None, *, offline: bool | None = None, progress: bool = True
) -> dict[str, Any]:
    from toolkit.store.pull import pull as do_pull

    model, variant = resolve_variant(name, quant)
    rec = do_pull(model, variant, offline=offline, progress=progress)
    return {**rec.to_json(), "paths": [str(p) for p in rec.paths()], "size": rec.total_size()}


def models() -> list[dict[str, object]]:
    from toolkit.store.inventory import list_models

    return list_models()


def verify(names: list[str] | None = None) -> list[dict[str, Any]]:
    from toolkit.store.inventory import verify as do_verify

    return [asdict(c) for c in do_verify(_variant_ids(names) if names else None)]


def remove(name: str, *, force: bool = False) -> dict[str, Any]:
    """Delete a variant's files; refused (Conflict) while a run serves them, unless force."""
    from toolkit.runs import process, records
    from toolkit.store.inventory import remove as do_remove

    (vid,) = _variant_ids([name])
    serving = [
        r.name
        for r in records.all_records()
        if r.variant_id == vid and r.pid is not None and process.alive(r.pid, r.create_time)
    ]
    if serving and not force:
        raise Conflict(
            f"{vid} is being served by run {serving[0]!r}; removing its files would pull "
            "them from under the server",
            hint=f"deploy stop {serving[0]}, then deploy rm {name}   (or deploy rm {name} --force)",
        )
    return {"variant": vid, "freed": do_remove(vid), "was_serving": serving}


def mismatches(checks: list[dict[str, Any]]) -> IntegrityError | None:
    bad = [c for c in checks if c["status"] != "ok"]
    if not bad:
        return None
    names = ", ".join(f"{c['variant_id']}/{c['name']} ({c['status']})" for c in bad)
    return IntegrityError(
        f"{len(bad)} file(s) do not match their recorded sha256: {names}",
        hint="deploy rm MODEL, then deploy pull MODEL (or deploy import a bundle)",
    )


def bundle(
    names: list[str],
    output: Path,
    *,
    plan: Path | None = None,
    with_engine: bool = False,
    with_toolkit: bool = False,
    platforms: tuple[str, ...] = (),
    python_version: str | None = None,
    offline: bool | None = None,
) -> dict[str, Any]:
    from toolkit.store.bundle import BundleOptions, make_bundle

    pairs = [resolve_variant(n) for n in names]
    opts = BundleOptions(
        plan=plan,
        with_engine=with_engine,
        with_toolkit=with_toolkit,
        platforms=platforms,
        python_version=python_version,
        offline=offline,
    )
    return make_bundle(pairs, output, opts)


def import_bundle(path: Path, *, replace: bool = False) -> dict[str, Any]:
    """Import a bundle; its files must match what the local recipes pin for each variant,
    and a variant already stored with other files is replaced only with `replace`."""
    from toolkit.store.importer import import_bundle as do_import

    return do_import(path, pinned=_pinned_files, replace_existing=replace)


def _pinned_files(variant_id: str) -> dict[str, tuple[int | None, str | None]] | None:
    from toolkit.api.recipes import catalog
    from toolkit.catalog import resolve
    from toolkit.errors import DeployError

    try:
        resolved = resolve(catalog(), variant_id)
    except DeployError:
        return None
    v = resolved.variant
    if v is None or not v.files:
        return None
    pins = {f.name.rsplit("/", 1)[-1]: (f.size, f.sha256) for f in v.files}
    pins.update({f.name: (f.size, f.sha256) for f in v.files})
    return pins
