"""Parsed data files cached as pickles, keyed by the identity of the files they came from.

`deploy plan` starts as a new process each time; re-parsing every recipe and the GPU
table on every start costs more than the planning itself. A cache entry holds the key
(each source and code file's path, size, mtime, ctime and inode, the toolkit and Python
versions) and the object built from them; any change to a file, the code that parses it
or the interpreter is a miss. Entries are written to a temporary file and renamed over
(atomic), files touched in the last two seconds are not cached (a same-size rewrite in
the same clock tick would look unchanged), and any error reading or writing is a miss,
never a failure. The cache lives in the user's own cache dir (`settings.cache_dir()`),
the same trust level as their recipe files.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Bump when the layout of cached entries changes.
FORMAT = 1
#: Files changed this recently are not cached.
RACY_S = 2.0

Key = tuple[Any, ...]


def _stamp(path: Path) -> tuple[str, int, int, int, int]:
    st = os.stat(path)
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def key_for(sources: Sequence[Path], code: Sequence[Path], extra: Any = None) -> Key | None:
    """What an entry is built from; None when a file cannot be stat'ed."""
    from toolkit import __version__

    try:
        return (
            FORMAT,
            __version__,
            sys.version_info[:3],
            extra,
            tuple(_stamp(p) for p in code),
            tuple(_stamp(p) for p in sources),
        )
    except OSError:
        return None


def racy(key: Key) -> bool:
    newest = max((max(s[2], s[3]) for s in (*key[4], *key[5])), default=0)
    return newest >= time.time_ns() - int(RACY_S * 1e9)


def path_for(name: str) -> Path | None:
    from toolkit import settings

    try:
        return settings.cache_dir() / f"{name}.pickle"
    except Exception:
        return None


def read(path: Path, key: Key) -> Any | None:
    """The cached object when `key` matches; None on any mismatch or error."""
    try:
        with open(path, "rb") as f:
            if pickle.load(f) != key:
                return None
            return pickle.load(f)
    except Exception:
        return None


def write(path: Path, key: Key, obj: Any) -> None:
    """Key then object, via a temporary file renamed over; failure is silent."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            pickle.dump(key, f, protocol=pickle.HIGHEST_PROTOCOL)
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except Exception:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def cached(
    name: str,
    sources: Sequence[Path],
    code: Sequence[Path],
    build: Callable[[], T],
    *,
    extra: Any = None,
    valid: Callable[[Any], bool] = lambda obj: True,
) -> T:
    """build(), or the object cached under `name` for the same sources and code."""
    key = key_for(sources, code, extra)
    path = path_for(name) if key is not None else None
    if path is not None and key is not None:
        obj = read(path, key)
        if obj is not None and valid(obj):
            return obj  # type: ignore[no-any-return]
    built = build()
    if path is not None and key is not None and not racy(key):
        write(path, key, built)
    return built


#: Tables of `memo`, per name, as read (or grown) in this process: their key, their file
#: and their entries.
_tables: dict[str, tuple[Key | None, Path | None, dict[Any, Any]]] = {}
#: Entries a memo table keeps: when full it starts afresh, so a table (read on every start)
#: stays small however many models are planned over time.
MEMO_MAX = 256


def memo(name: str, code: Sequence[Path], key: Any, compute: Callable[[], T]) -> T:
    """compute(), remembered under `key` in a table kept across processes for as long as
    the `code` that computes it is unchanged.

    For pure functions too slow to run on every start: the first process to need a value
    computes it and writes the grown table back (atomically; a lost race only loses
    entries, which are computed again).
    """
    entry = _tables.get(name)
    if entry is None:
        stamp = key_for((), code)
        path = path_for(name)
        stored = read(path, stamp) if path is not None and stamp is not None else None
        entry = _tables[name] = (stamp, path, stored if isinstance(stored, dict) else {})
    stamp, path, table = entry
    if key in table:
        return table[key]  # type: ignore[no-any-return]
    value = compute()
    if len(table) >= MEMO_MAX:
        table.clear()
    table[key] = value
    if path is not None and stamp is not None and not racy(stamp):
        write(path, stamp, table)
    return value
