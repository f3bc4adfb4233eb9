"""The one place that maps exceptions to messages and exit codes (STYLE habit 4).

0 ok, 1 unexpected error, 2 usage, 3 does not fit, 4 not found, 5 engine failure,
6 integrity or security refusal, 7 conflict. Tracebacks only with DEPLOY_DEBUG=1;
unknown exceptions are re-raised, never swallowed.
"""

from __future__ import annotations

import sys

import click

from toolkit import settings
from toolkit.errors import DeployError


def format_error(exc: DeployError) -> str:
    """One line (plus a hint line when there is one). Pure, tested."""
    text = f"Error: {exc.message}"
    if exc.hint:
        text += (
            f"\n  Try: {exc.hint}"
            if not exc.hint.startswith(("did you", "closest"))
            else (f"\n  {exc.hint[0].upper()}{exc.hint[1:]}")
        )
    return text


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, DeployError):
        return exc.exit_code
    if isinstance(exc, click.UsageError):
        return 2
    return 1


def report(exc: DeployError) -> None:
    if settings.debug():
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    click.echo(format_error(exc), err=True)
