"""Run records: one JSON document per run, written atomically, guarded by one lock.

Layout under `$DEPLOY_HOME/runs/`:

    .lock                   flock taken by every writer (two `deploy up` at once)
    <name>/record.json      the RunRecord (schema 1)
    <name>/server.log       the engine's stdout + stderr
    <name>/tmp/             the engine's TMPDIR and caches

The record holds what was launched (argv, env overrides, the plan, the engine version) and
where to reach it; it never holds the API key, only the key file's path.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from toolkit import settings
from toolkit.errors import NotFound, UsageError

RECORD_SCHEMA = 1
RECORD_FILE = "record.json"
LOG_FILE = "server.log"

State = Literal["starting", "ready", "stopping", "dead", "unreadable"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")


@dataclass(frozen=True)
class RunRecord:
    name: str
    #: What the user asked for: recipe model id or the local path.
    model: str
    variant_id: str
    engine: str
    engine_version: str | None
    #: As last written: "starting" until the model answered, then "ready"; "dead" once
    #: deploy saw it fail. A live check (`toolkit.runs.process.alive`) overrides it.
    state: State
    host: str
    port: int
    base_url: str
    served_model_name: str
    log_file: str
    run_dir: str
    #: The engine's argv (never contains the key) and the environment it was given on top
    #: of deploy's own (values of secret variables redacted).
    argv: tuple[str, ...]
    env: dict[str, str]
    started_at: float
    key_file: str | None = None
    pid: int | None = None
    #: Process group (== pid: the server leads its own session).
    pgid: int | None = None
    #: The process's start time, to tell our server from a later process given the same pid.
    create_time: float | None = None
    ready_at: float | None = None
    error: str | None = None
    tls: bool = False
    #: A short temp dir made for the engine outside the run dir (unix socket path limit).
    scratch_dir: str | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    #: Flags the user passed through to the engine (`deploy up … -- FLAGS`).
    engine_args: tuple[str, ...] = ()
    schema: int = RECORD_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["argv"] = tuple(kw.get("argv", ()))
        kw["engine_args"] = tuple(kw.get("engine_args", ()))
        return cls(**kw)


def check_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise UsageError(
            f"bad run name {name!r}: use letters, digits and . _ : @ + - (at most 128)",
            hint="deploy up MODEL --name my-server",
        )
    return name


def dir_name(name: str) -> str:
    """Directory for a run name (':' and '@' are fine on Linux, not everywhere)."""
    return name.replace(":", "_").replace("@", "_")


def runs_root() -> Path:
    return settings.runs_dir()


def run_dir(name: str) -> Path:
    return runs_root() / dir_name(check_name(name))


@contextmanager
def lock() -> Iterator[None]:
    """Exclusive lock over all run records (blocking; held for milliseconds)."""
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves nothing half-written
        raise


def save(record: RunRecord) -> None:
    write_json_atomic(Path(record.run_dir) / RECORD_FILE, record.to_dict())


def update(record: RunRecord, **changes: Any) -> RunRecord:
    new = replace(record, **changes)
    save(new)
    return new


def find(name: str) -> RunRecord | None:
    path = run_dir(name) / RECORD_FILE
    if not path.exists():
        return None
    return _read(path)


def _read(path: Path) -> RunRecord:
    """The record at path; a damaged one (edited, truncated, not ours) comes back as a
    stand-in in state "unreadable", with the server process it still names if one is
    alive, so `ps` shows it and `stop` can end it."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return RunRecord.from_dict(data)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return unreadable(path.parent, f"{path} is unreadable ({type(exc).__name__})")


def unreadable(rdir: Path, why: str) -> RunRecord:
    """A stand-in for a run whose record cannot be read: the server is found by the run
    directory or key file it was started with (in its argv or environment)."""
    from toolkit import keys

    name = rdir.name
    pid, created = _server_using(rdir, keys.key_path(name))
    return RunRecord(
        name=name,
        model="?",
        variant_id="?",
        engine="?",
        engine_version=None,
        state="unreadable",
        host="?",
        port=0,
        base_url="?",
        served_model_name="?",
        log_file=str(rdir / LOG_FILE),
        run_dir=str(rdir),
        argv=(),
        env={},
        started_at=created or 0.0,
        pid=pid,
        pgid=pid,
        create_time=created,
        error=why,
    )


def _server_using(rdir: Path, key_file: Path) -> tuple[int | None, float | None]:
    """(pid, start time) of a process that leads its own session and names the run's
    directory or key file in its argv or environment; (None, None) when there is none."""
    import os

    import psutil

    marks = (str(rdir), str(key_file))
    for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
        try:
            if os.getsid(proc.pid) != proc.pid:
                continue
            text = " ".join(proc.info["cmdline"] or ())
            if not any(m in text for m in marks):
                env = proc.environ()
                text = " ".join(env.values())
                if not any(m in text for m in marks):
                    continue
            return proc.pid, proc.info["create_time"]
        except (psutil.Error, OSError):
            continue
    return None, None


def load(name: str) -> RunRecord:
    record = find(name)
    if record is None:
        names = [r.name for r in all_records()]
        known = ", ".join(names) if names else "none"
        raise NotFound(f"no run named {name!r} (runs: {known})", hint="deploy ps")
    return record


def all_records() -> list[RunRecord]:
    root = runs_root()
    if not root.exists():
        return []
    # Records are replaced atomically (write_json_atomic), so a read sees a whole one; one
    # that does not parse was damaged and is listed as "unreadable".
    out = [_read(path) for path in sorted(root.glob(f"*/{RECORD_FILE}"))]
    return sorted(out, key=lambda r: r.started_at)


def remove(record: RunRecord) -> None:
    """Forget a run: its record goes; the log stays (`deploy logs` still reads it)."""
    (Path(record.run_dir) / RECORD_FILE).unlink(missing_ok=True)
