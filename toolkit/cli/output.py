"""Rendering helpers shared by commands: JSON out, a rich console for tables."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def emit_json(data: Any) -> None:
    """Write JSON to stdout (sorted keys off: documents keep their field order)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


class _Amount(click.ParamType):  # type: ignore[type-arg]
    """A finite number ≥ 0 (prices, watts, speeds): `nan`, `inf` and negatives are usage
    errors, not figures to print."""

    name = "number"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        import math

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number < 0:
            self.fail(f"{value!r} must be a finite number ≥ 0", param, ctx)
        return number


AMOUNT = _Amount()
