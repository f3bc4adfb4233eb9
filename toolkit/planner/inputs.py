"""What the planner is given: the model (architecture + variants with weight layouts).

Built by `toolkit.api.plan` from recipes or from files read by `toolkit.inspect`; the
planner itself reads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.catalog.schema import Architecture
    from toolkit.inspect.layout import WeightLayout


@dataclass(frozen=True)
class VariantInput:
    id: str
    quant: str
    format: str
    #: Exact (from files) or None: the planner then estimates it from the architecture.
    layout: WeightLayout | None = None
    download_bytes: int | None = None
    max_tp: int | None = None
    tp_divides: int | None = None
    #: A local file or folder when the model did not come from a recipe.
    path: str | None = None
    #: Published by the model's own repo (the release): its format is lossless by definition.
    release: bool = False


@dataclass(frozen=True)
class ModelInput:
    id: str
    arch: Architecture
    native_ctx: int
    params_total: float | None = None
    variants: tuple[VariantInput, ...] = ()
    #: Capability on the catalog's main scale (higher is better) and how it was obtained;
    #: None when unknown (the planner then compares total parameters).
    capability: float | None = None
    capability_basis: str = ""
    #: The shortest context a user of this model needs (recipe `min_ctx`).
    min_ctx: int | None = None
    #: Formats the model was released in (the variants in the model's own repo).
    release_formats: tuple[str, ...] = ()
    #: ISO date of the release (ranking tie-break: newer first on equal capability).
    release_date: str | None = None
