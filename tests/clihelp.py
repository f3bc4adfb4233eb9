"""Run the real `deploy` entry point in-process; capture stdout, stderr and the exit code."""

from __future__ import annotations

from dataclasses import dataclass

import click
from click.testing import CliRunner

from toolkit.cli.main import main


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


@click.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def _entry(args: tuple[str, ...]) -> None:
    main(list(args))


def run(*args: str) -> Result:
    """`run("recipes", "show", "qwen3-coder")` behaves like `deploy recipes show qwen3-coder`."""
    # The leading "--" ends _entry's own option parsing, so a "--" in args (engine flags
    # for `deploy up`) reaches deploy's parser as the user typed it.
    res = CliRunner().invoke(_entry, ["--", *args], catch_exceptions=False)
    return Result(res.exit_code, res.stdout, res.stderr)
