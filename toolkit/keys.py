"""API keys for the servers deploy starts.

One key per run name, generated with `secrets`, stored as `$DEPLOY_HOME/keys/<name>.key`
with mode 0600 in a 0700 directory, and named keys for a team (`deploy keys add NAME`,
`keys/team/<name>.key`) that the native llama-server accepts beside the run's own. A
key is handed to an engine by FILE (llama-server's `--api-key-file`) or ENVIRONMENT
(vLLM's `VLLM_API_KEY`), never on a command line, where any user could read it with `ps`.
`redact` removes a key from text before it is shown.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from toolkit import settings
from toolkit.errors import IntegrityError, NotFound

#: Prefix that makes a deploy key recognisable in a config file or a leak scanner.
KEY_PREFIX = "sk-deploy-"
#: Shortest key deploy starts a server with. An empty key file would mean no
#: authentication at all (llama-server and vLLM treat an empty key as "no key").
MIN_KEY_CHARS = 16
REDACTED = "<redacted>"


def key_path(name: str) -> Path:
    return settings.keys_dir() / f"{_file_safe(name)}.key"


def _file_safe(name: str) -> str:
    return name.replace("/", "_").replace(":", "_").replace("@", "_")


def _keys_dir() -> Path:
    d = settings.keys_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    return d


def write_key(path: Path, key: str) -> None:
    """Write atomically; the file is never readable by others, not even for a moment."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def ensure_key(name: str) -> Path:
    """The key file for run `name`, generated when absent. Returns its path."""
    _keys_dir()
    path = key_path(name)
    if path.exists():
        check_mode(path)
        check_strength(path, path.read_text())
        return path
    write_key(path, new_key())
    return path


def rotate_key(name: str) -> Path:
    """A fresh key for `name` (the old one stops working at the next start)."""
    _keys_dir()
    path = key_path(name)
    write_key(path, new_key())
    return path


def read_key(path: Path) -> str:
    if not path.exists():
        raise NotFound(f"no API key at {path}", hint="start the run again: deploy up MODEL")
    check_mode(path)
    text = path.read_text()
    check_strength(path, text)
    return text.strip()


def check_strength(path: Path, text: str) -> None:
    """Refuse an empty, short or multi-line key: the server would be open, or the key
    would not be the one the engine reads. Never regenerated behind the user's back."""
    key = text.strip()
    if len(key) < MIN_KEY_CHARS or any(c.isspace() for c in key):
        what = "empty" if not key else f"not a usable key ({len(key)} characters)"
        raise IntegrityError(
            f"API key file {path} is {what}: a server started with it would not be private",
            hint=f"remove it and deploy makes a new one: rm {path}",
        )


def check_mode(path: Path) -> None:
    """Refuse a key file that others can read (someone loosened it by hand)."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise IntegrityError(
            f"API key file {path} has mode {mode:o}: others can read it",
            hint=f"chmod 600 {path}",
        )


def redact(text: str, *secrets_: str) -> str:
    for s in secrets_:
        if s:
            text = text.replace(s, REDACTED)
    return text


# --- named keys for a team -------------------------------------------------------------

_KEY_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
#: The file the native llama-server reads (`--api-key-file`, one key per line): the run's
#: own key first, then every named key, written into the run's folder at each start.
ENGINE_KEYS_FILE = "api-keys"


def team_dir() -> Path:
    return settings.keys_dir() / "team"


def _team_path(name: str) -> Path:
    if not _KEY_NAME.match(name):
        from toolkit.errors import UsageError

        raise UsageError(
            f"key name {name!r} must be 1-64 lowercase letters, digits, '.', '_' or '-'",
            hint="e.g. deploy keys add alice",
        )
    return team_dir() / f"{name}.key"


def team_keys() -> dict[str, Path]:
    """Named keys, by name (files under keys/team, each checked like a run key)."""
    d = team_dir()
    if not d.is_dir():
        return {}
    return {p.stem: p for p in sorted(d.glob("*.key")) if _KEY_NAME.match(p.stem)}


def add_team_key(name: str) -> str:
    """A new named key; refused when the name exists (rotate it instead)."""
    from toolkit.errors import Conflict

    path = _team_path(name)
    if path.exists():
        raise Conflict(f"a key named {name!r} exists", hint=f"deploy keys rotate {name}")
    _keys_dir()
    team_dir().mkdir(mode=0o700, exist_ok=True)
    key = new_key()
    write_key(path, key)
    return key


def _existing(name: str) -> Path:
    path = _team_path(name)
    if not path.exists():
        raise NotFound(f"no key named {name!r}", hint="deploy keys list")
    return path


def rotate_team_key(name: str) -> str:
    key = new_key()
    write_key(_existing(name), key)
    return key


def revoke_team_key(name: str) -> None:
    _existing(name).unlink()


def fingerprint(key: str) -> str:
    """A short, non-secret name for a key (first 12 hex digits of its SHA-256)."""
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:12]


def write_engine_keys(run_key: Path, dest: Path) -> Path:
    """The run's key followed by every named key, for an engine that accepts several
    (llama-server's --api-key-file), written atomically with mode 0600."""
    lines = [read_key(run_key)]
    for path in team_keys().values():
        lines.append(read_key(path))
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest
