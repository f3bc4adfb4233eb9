"""API keys for the servers deploy starts.

One key per run name, generated with `secrets`, stored as `$DEPLOY_HOME/keys/<name>.key`
with mode 0600 in a 0700 directory. A key is handed to an engine by FILE (llama-server's
`--api-key-file`) or ENVIRONMENT (vLLM's `VLLM_API_KEY`), never on a command line, where
any user could read it with `ps`. `redact` removes a key from text before it is shown.
"""

from __future__ import annotations

import os
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
