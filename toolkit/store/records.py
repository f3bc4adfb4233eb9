"""deploy's own records about the store: what was verified, when, at which revision.

One JSON file per variant under `$DEPLOY_HOME/store/records/`, written atomically.
The files themselves stay in the Hugging Face cache; a record only says what deploy
checked (each file's size and sha256, the hub revision, where it came from).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from toolkit import settings
from toolkit.catalog.schema import PypiSource
from toolkit.store import cache

Source = Literal["hf", "pypi"]


@dataclass(frozen=True)
class StoredFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Record:
    variant_id: str
    model_id: str
    source: Source
    files: tuple[StoredFile, ...]
    #: "pull" or "import".
    origin: str
    repo: str | None = None
    revision: str | None = None
    pypi: dict[str, str] | None = None
    verified_at: str | None = None
    #: Result of the last full re-hash: True (all match), False (a mismatch), None (never).
    verified_ok: bool | None = None
    mismatches: tuple[str, ...] = field(default_factory=tuple)

    def path_of(self, f: StoredFile) -> Path:
        if self.source == "pypi":
            assert self.pypi is not None
            return cache.pypi_dir(PypiSource(**self.pypi)) / cache.check_relpath(f.name)
        assert self.repo is not None and self.revision is not None
        return cache.snapshot_dir(self.repo, self.revision) / cache.check_relpath(f.name)

    def paths(self) -> list[Path]:
        return [self.path_of(f) for f in self.files]

    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Record:
        files = tuple(StoredFile(**f) for f in doc.get("files", []))
        return cls(**{**doc, "files": files, "mismatches": tuple(doc.get("mismatches", ()))})


def records_dir() -> Path:
    return settings.store_dir() / "records"


def record_path(variant_id: str) -> Path:
    return records_dir() / (quote(variant_id, safe="") + ".json")


def load(variant_id: str) -> Record | None:
    try:
        doc = json.loads(record_path(variant_id).read_text())
    except (OSError, ValueError):
        return None
    return Record.from_json(doc)


def save(record: Record) -> None:
    path = record_path(record.variant_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".rec-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(record.to_json(), f, indent=2)
    os.replace(tmp, path)


def delete(variant_id: str) -> None:
    record_path(variant_id).unlink(missing_ok=True)


def all_records() -> list[Record]:
    out: list[Record] = []
    d = records_dir()
    if not d.is_dir():
        return out
    for p in sorted(d.glob("*.json")):
        try:
            out.append(Record.from_json(json.loads(p.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return out
