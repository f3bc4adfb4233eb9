"""Turn what people type into recipes.

`qwen3-coder` (a family: all its sizes), `qwen3-coder:30b` (an alias), exact HF repo ids
(`Qwen/Qwen3-Coder-30B-A3B-Instruct`), variant ids (`qwen3-coder-30b-a3b:q4_k_m`,
`…:q4_k_m@bartowski`), and case/punctuation variants of all of these. Names of models
without public weights (DeepSeek R2) raise NotFound with the closest real models.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolkit.catalog.records import variant_id
from toolkit.errors import NotFound

if TYPE_CHECKING:
    from toolkit.catalog.loader import Catalog, ModelEntry
    from toolkit.catalog.schema import Adapter, Model, Variant


def normalize(name: str) -> str:
    """Case and separators: 'Qwen3 Coder_30B' -> 'qwen3-coder-30b'."""
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def loose(name: str) -> str:
    """Only letters and digits: used when the normal form finds nothing."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class Resolved:
    """What a name means: one or more models, and a variant when one was named."""

    name: str
    entries: tuple[ModelEntry, ...]
    variant: Variant | None = None
    family: str | None = None
    #: Set when the name is a LoRA adapter (`model:lora-NAME`); `variant` is its store form.
    adapter: Adapter | None = None

    @property
    def entry(self) -> ModelEntry:
        return self.entries[0]

    @property
    def variant_id(self) -> str | None:
        if self.variant is None:
            return None
        return variant_id(self.entry.model, self.variant)


class _Index:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.exact: dict[str, tuple[str, str]] = {}
        self.fuzzy: dict[str, set[tuple[str, str]]] = {}
        for fam, recipe in catalog.families.items():
            for key in (fam, *recipe.aliases):
                self._add(key, ("family", fam))
        for mid, entry in catalog.models.items():
            m = entry.model
            for key in (mid, m.repo, m.name, *m.aliases):
                self._add(key, ("model", mid))
            for v in m.variants:
                self._add(variant_id(m, v), ("variant", variant_id(m, v)))
        for gid, gone in catalog.unavailable.items():
            for key in (gid, gone.name, *gone.aliases):
                self._add(key, ("unavailable", gid))

    def _add(self, key: str, target: tuple[str, str]) -> None:
        self.exact.setdefault(normalize(key), target)
        self.fuzzy.setdefault(loose(key), set()).add(target)

    def lookup(self, name: str) -> tuple[str, str] | None:
        hit = self.exact.get(normalize(name))
        if hit is not None:
            return hit
        hits = self.fuzzy.get(loose(name), set())
        if len(hits) == 1:
            return next(iter(hits))
        return None


def _variant_by_quant(entry: ModelEntry, tag: str) -> Variant | None:
    """`q4_k_m` (the default uploader's), `Q4_K_M@bartowski` (that uploader's)."""
    quant, _, uploader = normalize(tag).partition("@")
    model = entry.model
    for v in model.variants:
        if normalize(v.quant) != quant:
            continue
        if uploader:
            if normalize(v.uploader) == uploader:
                return v
        elif variant_id(model, v) == f"{model.id}:{v.quant}":
            return v
    return None


def find_adapter(model: Model, tag: str) -> Adapter | None:
    """The adapter a tag names: `lora-sql` (as in the variant id) or `sql`."""
    want = normalize(tag).removeprefix("lora-")
    return next((a for a in model.adapters if a.name == want), None)


def resolve(catalog: Catalog, name: str) -> Resolved:
    """Resolve a name or raise NotFound with a suggestion."""
    index = _Index(catalog)
    hit = index.lookup(name)
    if hit is None and ":" in name:
        # The tag is after the LAST colon: aliases may hold one (`qwen3-coder:30b:q8_0`).
        base, _, tag = name.rpartition(":")
        base_hit = index.lookup(base)
        if base_hit is not None and base_hit[0] == "model":
            entry = catalog.models[base_hit[1]]
            adapter = find_adapter(entry.model, tag) if tag.lower().startswith("lora-") else None
            if adapter is not None:
                return Resolved(name, (entry,), adapter.as_variant(), adapter=adapter)
            variant = _variant_by_quant(entry, tag)
            if variant is not None:
                return Resolved(name, (entry,), variant)
            raise NotFound(
                f"{entry.model.id} has no variant {tag!r}; it has: "
                + ", ".join(
                    [
                        *entry.model.variant_ids(),
                        *(f"{entry.model.id}:{a.quant}" for a in entry.model.adapters),
                    ]
                ),
                hint=f"deploy recipes show {entry.model.id}",
            )
    if hit is None:
        raise _not_found(index, name)
    kind, key = hit
    if kind == "family":
        recipe = catalog.families[key]
        entries = tuple(catalog.models[m.id] for m in recipe.models if m.id in catalog.models)
        if not entries:
            raise NotFound(f"family {key!r} has no models with weights")
        return Resolved(name, entries, family=key)
    if kind == "model":
        return Resolved(name, (catalog.models[key],))
    if kind == "variant":
        mid = key.split(":", 1)[0]
        entry = catalog.models[mid]
        for v in entry.model.variants:
            if variant_id(entry.model, v) == key:
                return Resolved(name, (entry,), v)
    gone = catalog.unavailable[key]
    raise NotFound(
        f"{gone.name} has no public weights: {gone.reason}",
        hint=_closest(catalog, gone.suggest),
    )


def _closest(catalog: Catalog, ids: tuple[str, ...]) -> str | None:
    """`closest real models: deepseek-v3.2 (deepseek-ai/DeepSeek-V3.2), …`."""
    if not ids:
        return None
    shown = []
    for mid in ids:
        entry = catalog.models.get(mid)
        shown.append(f"{mid} ({entry.model.repo})" if entry is not None else mid)
    return "closest real models: " + ", ".join(shown)


def _not_found(index: _Index, name: str) -> NotFound:
    """Suggest up to three distinct recipes (by canonical id) whose names are close."""
    keys = sorted(index.exact)
    close = difflib.get_close_matches(normalize(name), keys, n=12, cutoff=0.6)
    if not close:
        stem = normalize(name).split(":")[0]
        close = [k for k in keys if stem and (stem in k or k in stem)]
    suggestions: list[str] = []
    for key in close:
        kind, target = index.exact[key]
        if kind == "unavailable":
            continue
        if target not in suggestions:
            suggestions.append(target)
    suggestions = suggestions[:3]
    hint = (
        "did you mean " + " or ".join(repr(c) for c in suggestions) + "?"
        if suggestions
        else "deploy recipes list"
    )
    return NotFound(f"no recipe matches {name!r}", hint=hint)
