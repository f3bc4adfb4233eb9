"""One exception tree for the whole toolkit.

Every error carries the facts it is about and a hint naming the next thing to try.
The CLI maps each class to an exit code in one place (`toolkit.cli.errors`); nothing
below the CLI exits or prints.
"""

from __future__ import annotations

from typing import ClassVar


class DeployError(Exception):
    """Base class. `exit_code` follows STYLE habit 4."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(DeployError):
    """Bad flag, bad spec string, contradictory settings (exit 2)."""

    exit_code = 2


class DoesNotFit(DeployError):
    """The requested model/plan does not fit the memory available (exit 3)."""

    exit_code = 3


class NotFound(DeployError):
    """A model, recipe, run or file that does not exist (exit 4)."""

    exit_code = 4


class EngineError(DeployError):
    """Engine missing, failed to start or not ready in time (exit 5)."""

    exit_code = 5


class IntegrityError(DeployError):
    """Hash mismatch, hostile archive, refused insecure setting (exit 6)."""

    exit_code = 6


class Conflict(DeployError):
    """Port in use, run name taken (exit 7)."""

    exit_code = 7


class RecipeError(UsageError):
    """A recipe file is invalid. `file` and `key_path` locate the problem."""

    def __init__(self, file: str, key_path: str, problem: str) -> None:
        where = f"{file}: {key_path}" if key_path else file
        super().__init__(
            f"{where}: {problem}", hint="fix the file, then run: deploy recipes validate"
        )
        self.file = file
        self.key_path = key_path
        self.problem = problem
