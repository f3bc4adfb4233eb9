"""Every environment variable deploy reads, in one place, read lazily.

Precedence, written once: command-line flag > environment > user config > recipe > default.
Functions here read the environment at call time so tests (and users) can move state
with `DEPLOY_HOME` at any moment.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Root of deploy's own state: runs, API keys, engines, calibration, config.
#: Default: the platform's user data dir (e.g. ~/.local/share/deploy).
DEPLOY_HOME = "DEPLOY_HOME"
#: Extra recipe directories (os.pathsep-separated); they extend or override shipped recipes.
DEPLOY_RECIPES_PATH = "DEPLOY_RECIPES_PATH"
#: Where engines are installed. Default: $DEPLOY_HOME/engines.
DEPLOY_ENGINES_DIR = "DEPLOY_ENGINES_DIR"
#: "1" turns on offline mode (no network by deploy or the engines it starts).
DEPLOY_OFFLINE = "DEPLOY_OFFLINE"
#: "1" shows tracebacks for errors.
DEPLOY_DEBUG = "DEPLOY_DEBUG"
#: A hardware spec string or profile file used when --hw is not given.
DEPLOY_HW = "DEPLOY_HW"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def home() -> Path:
    """deploy's state directory (created on first use by the writers, not here)."""
    value = os.environ.get(DEPLOY_HOME)
    if value:
        return Path(value).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("deploy", appauthor=False))


def config_dir() -> Path:
    """User configuration: $DEPLOY_HOME/config."""
    return home() / "config"


def user_recipe_dirs() -> list[Path]:
    """Recipe directories from DEPLOY_RECIPES_PATH, then the user config dir, in that order."""
    dirs: list[Path] = []
    for part in os.environ.get(DEPLOY_RECIPES_PATH, "").split(os.pathsep):
        if part.strip():
            dirs.append(Path(part).expanduser())
    dirs.append(config_dir() / "recipes")
    return dirs


def engines_dir() -> Path:
    value = os.environ.get(DEPLOY_ENGINES_DIR)
    return Path(value).expanduser() if value else home() / "engines"


def runs_dir() -> Path:
    return home() / "runs"


def keys_dir() -> Path:
    return home() / "keys"


def calibration_dir() -> Path:
    return home() / "calibration"


def bench_dir() -> Path:
    return home() / "bench"


def offline() -> bool:
    """Offline when DEPLOY_OFFLINE=1 or HF_HUB_OFFLINE=1."""
    return _truthy(os.environ.get(DEPLOY_OFFLINE)) or _truthy(os.environ.get("HF_HUB_OFFLINE"))


def debug() -> bool:
    return _truthy(os.environ.get(DEPLOY_DEBUG))


def default_hw() -> str | None:
    return os.environ.get(DEPLOY_HW) or None
