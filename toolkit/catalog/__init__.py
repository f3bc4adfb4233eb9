"""Recipes: the catalog of models, their architectures and variants."""

from toolkit.catalog.loader import Catalog, ModelEntry, load_catalog, parse_recipe
from toolkit.catalog.resolve import Resolved, resolve
from toolkit.catalog.schema import Architecture, Model, RecipeFile, Variant, variant_id

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
