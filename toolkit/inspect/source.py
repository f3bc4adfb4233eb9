"""One entry for the planner: a local GGUF, a local HF folder or a hub repo → catalog terms.

`load_model_source(x)` returns a catalog `Model` holding exactly one `Variant` (the file
or checkpoint given), plus the exact `WeightLayout` when tensor tables were read. The
planner then treats a file exactly like a recipe variant: same architecture math, same
variant fields (format, quant, size, bits_per_weight), with `layout` replacing the
params × bits estimate.

Shape decisions, kept simple on purpose:
- Recipes are not consulted here (the planner resolves recipe names first and only calls
  this for things that are not recipes).
- `Model.repo` / `Variant.repo` must be "owner/name" in the schema; a local file gets
  `local/<slug>` so it can never be mistaken for a hub repo that `deploy pull` could fetch
  (`ModelSource.kind` and `.location` say where it really is).
- Parameter counts: GGUF → the exact element count of the loaded tensors; HF → the
  analytic breakdown of config.json (safetensors of quantized checkpoints pack several
  weights per element, so their element counts are not parameter counts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from toolkit.catalog.schema import Context, Model, Params, Variant, VariantFile
from toolkit.errors import NotFound, UsageError

if TYPE_CHECKING:
    from toolkit.inspect.gguf import GgufModel
    from toolkit.inspect.hf import HfModel
    from toolkit.inspect.layout import WeightLayout

SourceKind = Literal["gguf", "hf-dir", "hub-gguf", "hub-hf"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSource:
    kind: SourceKind
    #: The path or repo id given.
    location: str
    model: Model
    variant: Variant
    #: Exact when read from tensor tables; None for a config-only folder (estimate it
    #: with `estimate_layout(model.architecture, bits_per_weight(quant))`).
    layout: WeightLayout | None
    inspected: GgufModel | HfModel


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return s or "model"


def _from_gguf(g: GgufModel, kind: SourceKind, location: str, repo: str | None) -> ModelSource:
    from toolkit.inspect.gguf import split_quant_label

    first = Path(g.paths[0]).name
    stem = split_quant_label(first)[0]
    mid = slug(stem)
    params_total = sum(t.n_elements for t in g.tensors if not _is_unloaded(t.name, g))
    arch = g.architecture
    active: float | None = None
    if arch.moe is not None:
        from toolkit.inspect.params import param_breakdown

        b = param_breakdown(arch)
        active = float(b.active)
    repo_id = repo or f"local/{mid}"
    if g.context_length is None:
        raise UsageError(f"{first}: no context length in the GGUF header")
    files = tuple(
        VariantFile(name=Path(p).name, size=b or None)
        for p, b in zip(g.paths, g.part_bytes, strict=True)
    )
    variant = Variant(
        quant=slug(g.quant),
        format="gguf",
        repo=repo_id,
        files=files,
        size=g.file_bytes or None,
        bits_per_weight=round(g.layout.total_bytes * 8 / params_total, 4) if params_total else None,
        source=f"GGUF header of {location}",
    )
    model = Model(
        id=mid,
        name=g.name or stem,
        repo=repo_id,
        params=Params(total=params_total, active=active, source="GGUF tensor table"),
        context=Context(native=g.context_length, source="GGUF header"),
        architecture=arch,
        variants=(variant,),
    )
    return ModelSource(kind, location, model, variant, g.layout, g)


def _is_unloaded(name: str, g: GgufModel) -> bool:
    m = re.match(r"^blk\.(\d+)\.", name)
    return m is not None and int(m.group(1)) >= g.architecture.layers


def _from_hf(h: HfModel, kind: SourceKind, location: str, repo: str | None) -> ModelSource:
    name = location.rstrip("/").rsplit("/", 1)[-1]
    mid = slug(name)
    repo_id = repo or f"local/{mid}"
    arch = h.architecture
    if h.context_length is None:
        raise UsageError(f"{location}: config.json has no max_position_embeddings")
    total = h.params.total
    bits = None
    if h.layout is not None and total:
        bits = round(h.layout.total_bytes * 8 / total, 4)
    variant = Variant(
        quant=slug(h.quant),
        format=h.format,
        repo=repo_id,
        files=tuple(VariantFile(name=n, size=s) for n, s in h.files),
        revision=h.revision,
        bits_per_weight=bits,
        source=f"config.json and safetensors headers of {location}",
    )
    model = Model(
        id=mid,
        name=name,
        repo=repo_id,
        params=Params(
            total=total,
            active=h.params.active if arch.moe is not None else None,
            source="computed from config.json (toolkit.inspect.params)",
        ),
        context=Context(native=h.context_length, source="config.json max_position_embeddings"),
        architecture=arch,
        variants=(variant,),
    )
    return ModelSource(kind, location, model, variant, h.layout, h)


def load_model_source(
    name_or_path: str, *, revision: str | None = None, filename: str | None = None
) -> ModelSource:
    """A local .gguf file, a local model folder, or a hub repo id → ModelSource."""
    from toolkit.inspect.gguf import GgufModel, read_gguf
    from toolkit.inspect.hf import read_model_dir

    path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise UsageError(
                f"{path} is not a .gguf file", hint="pass a GGUF file or a model folder"
            )
        return _from_gguf(read_gguf(path), "gguf", str(path), None)
    if path.is_dir():
        if (path / "config.json").is_file():
            return _from_hf(read_model_dir(path), "hf-dir", str(path), None)
        ggufs = sorted(
            p
            for p in path.glob("*.gguf")
            if "mmproj" not in p.name.lower() and not re.search(r"-0000[2-9]-of-", p.name)
        )
        if len(ggufs) == 1:
            return _from_gguf(read_gguf(ggufs[0]), "gguf", str(ggufs[0]), None)
        raise NotFound(
            f"{path} has no config.json and {len(ggufs)} GGUF files",
            hint="pass the .gguf file itself",
        )
    if _REPO_ID.match(name_or_path):
        from toolkit.inspect.hub import read_hub_model

        got = read_hub_model(name_or_path, revision=revision, filename=filename)
        if isinstance(got, GgufModel):
            return _from_gguf(got, "hub-gguf", name_or_path, name_or_path)
        return _from_hf(got, "hub-hf", name_or_path, name_or_path)
    raise NotFound(
        f"{name_or_path!r} is not a recipe, a file, a folder or a hub repo id",
        hint="see: deploy recipes list",
    )
