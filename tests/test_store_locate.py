"""locate(): a variant's files in the HF cache / deploy's pypi store, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit import settings
from toolkit.catalog import Model, Variant, parse_recipe, variant_id
from toolkit.catalog.loader import shipped_recipes_dir
from toolkit.errors import NotFound
from toolkit.store import cache, locate


def _variant(name: str) -> tuple[Model, Variant]:
    """A variant of the shipped SmolLM2 recipe (parsed alone: other recipes may be in flux)."""
    recipe = parse_recipe(shipped_recipes_dir() / "smollm2.yaml")
    for model in recipe.models:
        for v in model.variants:
            if variant_id(model, v) == name:
                return model, v
    raise AssertionError(name)


def test_missing_variant_raises_not_found_with_pull_hint() -> None:
    entry, variant = _variant("smollm2-360m:q4_k_m")
    with pytest.raises(NotFound) as exc:
        locate(entry, variant)
    assert exc.value.exit_code == 4
    assert exc.value.hint is not None and "deploy pull smollm2-360m:q4_k_m" in exc.value.hint


def test_listing_resolved_gguf_found_in_hf_cache() -> None:
    entry, variant = _variant("smollm2-360m:q4_k_m")
    assert variant.repo is not None
    rev = "a" * 40
    blobs = cache.repo_folder(variant.repo) / "blobs"
    blobs.mkdir(parents=True)
    for name in ("SmolLM2-360M-Instruct-Q4_K_M.gguf", "SmolLM2-360M-Instruct-Q8_0.gguf"):
        blob = blobs / name.replace(".", "-")
        blob.write_bytes(b"GGUF" + name.encode())
        cache.link_into_snapshot(variant.repo, rev, name, blob)
    cache.write_ref(variant.repo, "main", rev)
    paths = locate(entry, variant)
    assert [p.name for p in paths] == ["SmolLM2-360M-Instruct-Q4_K_M.gguf"]
    assert paths[0].read_bytes() == b"GGUFSmolLM2-360M-Instruct-Q4_K_M.gguf"
    assert settings.hf_hub_cache() in paths[0].parents


def test_pypi_variant_found_in_deploy_store(tmp_path: Path) -> None:
    entry, variant = _variant("smollm2-135m:q4_1")
    assert variant.pypi is not None
    with pytest.raises(NotFound) as exc:
        locate(entry, variant)
    assert "deploy pull smollm2-135m:q4_1" in (exc.value.hint or "")
    target = cache.pypi_file(variant.pypi)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF")
    assert locate(entry, variant) == [target]
    assert settings.home() in target.parents
