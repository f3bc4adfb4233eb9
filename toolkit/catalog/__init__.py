"""Recipes: the catalog of models, their architectures and variants.

The schema's names load on first use: `deploy plan` reads the compiled catalog's records
(`toolkit.catalog.records`) and never needs pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.catalog.loader import Catalog, ModelEntry, load_catalog, parse_recipe
from toolkit.catalog.records import variant_id
from toolkit.catalog.resolve import Resolved, resolve

if TYPE_CHECKING:
    from toolkit.catalog.schema import Architecture, Model, RecipeFile, Variant

_SCHEMA = ("Architecture", "Model", "RecipeFile", "Variant")

__all__ = [
    "Architecture",
    "Catalog",
    "Model",
    "ModelEntry",
    "RecipeFile",
    "Resolved",
    "Variant",
    "load_catalog",
    "parse_recipe",
    "resolve",
    "variant_id",
]


def __getattr__(name: str) -> Any:
    if name in _SCHEMA:
        from toolkit.catalog import schema

        return getattr(schema, name)
    raise AttributeError(f"module 'toolkit.catalog' has no attribute {name!r}")
