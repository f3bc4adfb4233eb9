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
#: Where deploy keeps caches it can rebuild (the compiled recipe catalog). Default:
#: $DEPLOY_HOME/cache when DEPLOY_HOME is set, else the platform's user cache dir
#: (e.g. ~/.cache/deploy). Deleting it is always safe.
DEPLOY_CACHE_DIR = "DEPLOY_CACHE_DIR"
#: Hugging Face's own variables, honoured (read at call time, not at import) by the store:
#: HF_HOME (default ~/.cache/huggingface), HF_HUB_CACHE (default $HF_HOME/hub; the model
#: store shared with other tools), HF_ENDPOINT (a hub mirror), HF_TOKEN (gated repos; read
#: by huggingface_hub itself), HF_HUB_OFFLINE (offline mode, same as DEPLOY_OFFLINE).
HF_HOME = "HF_HOME"
HF_HUB_CACHE = "HF_HUB_CACHE"
HF_ENDPOINT = "HF_ENDPOINT"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def home() -> Path:
    """deploy's state directory (created on first use by the writers, not here)."""
    value = os.environ.get(DEPLOY_HOME)
    if value:
        path = Path(value).expanduser()
        if path.exists() and not path.is_dir():
            from toolkit.errors import UsageError

            raise UsageError(
                f"DEPLOY_HOME={value} is a file, not a folder",
                hint="point DEPLOY_HOME at a folder (it is created if missing), or unset it",
            )
        return path
    return _user_dir("data")


def cache_dir() -> Path:
    """Rebuildable caches: DEPLOY_CACHE_DIR, else $DEPLOY_HOME/cache, else the user cache dir."""
    value = os.environ.get(DEPLOY_CACHE_DIR)
    if value:
        return Path(value).expanduser()
    if os.environ.get(DEPLOY_HOME):
        return home() / "cache"
    return _user_dir("cache")


def _user_dir(kind: str) -> Path:
    """platformdirs' user data / cache dir for "deploy". Linux and macOS are spelled out
    here, as platformdirs spells them (XDG_DATA_HOME / XDG_CACHE_HOME, else ~/.local/share
    and ~/.cache; ~/Library/Application Support and ~/Library/Caches): importing it costs
    every `deploy plan` start more than reading the compiled catalog."""
    import sys

    if sys.platform.startswith("linux"):
        var, fallback = {
            "data": ("XDG_DATA_HOME", "~/.local/share"),
            "cache": ("XDG_CACHE_HOME", "~/.cache"),
        }[kind]
        base = os.environ.get(var, "").strip() or os.path.expanduser(fallback)
        return Path(os.path.join(base, "deploy"))
    if sys.platform == "darwin":
        sub = {"data": "Application Support", "cache": "Caches"}[kind]
        return Path(os.path.expanduser(f"~/Library/{sub}/deploy"))
    import platformdirs

    return Path(getattr(platformdirs, f"user_{kind}_dir")("deploy", appauthor=False))


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


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache: deploy's model store (HF_HUB_CACHE, else $HF_HOME/hub)."""
    value = os.environ.get(HF_HUB_CACHE) or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if value:
        return Path(os.path.expandvars(value)).expanduser()
    hf_home = os.environ.get(HF_HOME)
    if hf_home:
        return Path(os.path.expandvars(hf_home)).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "huggingface" / "hub"


def hf_endpoint() -> str:
    """The hub to download from (HF_ENDPOINT; default https://huggingface.co)."""
    return (os.environ.get(HF_ENDPOINT) or "https://huggingface.co").rstrip("/")


def store_dir() -> Path:
    """deploy's records about the store (verified revisions, hashes): $DEPLOY_HOME/store."""
    return home() / "store"


#: Which GPUs a process may use; read by the hardware probes, never written by deploy.
#: CUDA_VISIBLE_DEVICES (NVIDIA: indices, GPU-/MIG- UUIDs); ROCR_VISIBLE_DEVICES and
#: HIP_VISIBLE_DEVICES (AMD; HIP also honours CUDA_VISIBLE_DEVICES).
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
ROCR_VISIBLE_DEVICES = "ROCR_VISIBLE_DEVICES"
HIP_VISIBLE_DEVICES = "HIP_VISIBLE_DEVICES"


def visible_devices(vendor: str) -> str | None:
    """The device filter for `vendor` ("nvidia" or "amd"); None when unset (all visible)."""
    names = (
        [CUDA_VISIBLE_DEVICES]
        if vendor == "nvidia"
        else [ROCR_VISIBLE_DEVICES, HIP_VISIBLE_DEVICES, CUDA_VISIBLE_DEVICES]
    )
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            return value
    return None
