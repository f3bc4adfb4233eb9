"""The CLI's shared behaviour: help, error mapping, no heavy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.clihelp import run
from toolkit.cli.errors import exit_code, format_error
from toolkit.errors import Conflict, DoesNotFit, EngineError, IntegrityError, NotFound, UsageError


def test_help_lists_commands() -> None:
    res = run("--help")
    assert res.exit_code == 0
    assert "recipes" in res.stdout


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (UsageError("x"), 2),
        (DoesNotFit("x"), 3),
        (NotFound("x"), 4),
        (EngineError("x"), 5),
        (IntegrityError("x"), 6),
        (Conflict("x"), 7),
        (RuntimeError("x"), 1),
    ],
)
def test_exit_codes(exc: Exception, code: int) -> None:
    assert exit_code(exc) == code


def test_format_error_names_next_command() -> None:
    text = format_error(
        DoesNotFit("needs 18.2 GiB, 16.0 GiB free", hint="deploy plan x --ctx 8192")
    )
    assert text == "Error: needs 18.2 GiB, 16.0 GiB free\n  Try: deploy plan x --ctx 8192"


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["recipes", "list"], ["recipes", "show", "qwen3-coder"], ["hw", "--json"]],
)
def test_no_heavy_imports(argv: list[str]) -> None:
    """`deploy --help` and the catalog/planning commands never import torch, vllm or llama_cpp."""
    code = (
        "import sys\n"
        "from toolkit.cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'vllm', 'llama_cpp', 'transformers'})\n"
        "print('HEAVY:', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert "HEAVY: []" in out.stdout, out.stdout + out.stderr
