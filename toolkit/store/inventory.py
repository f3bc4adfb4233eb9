"""What is in the store: list, re-hash (verify), remove."""

from __future__ import annotations

from dataclasses import dataclass, replace

from toolkit import settings
from toolkit.errors import NotFound
from toolkit.store import cache, records
from toolkit.store.hashing import sha256_file
from toolkit.store.pull import now


@dataclass(frozen=True)
class FileCheck:
    variant_id: str
    name: str
    path: str
    expected_size: int
    expected_sha256: str
    #: "ok", "missing", "size" (wrong size) or "sha256" (wrong content).
    status: str
    actual_sha256: str | None = None


def state(rec: records.Record) -> str:
    """Cheap presence check (no hashing): complete, missing files, or changed sizes."""
    for f in rec.files:
        p = rec.path_of(f)
        if not p.is_file():
            return "missing"
        if p.stat().st_size != f.size:
            return "modified"
    return "present"


def list_models() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for rec in records.all_records():
        rows.append(
            {
                "variant": rec.variant_id,
                "model": rec.model_id,
                "source": rec.source,
                "repo": rec.repo,
                "revision": rec.revision,
                "files": len(rec.files),
                "size": rec.total_size(),
                "state": state(rec),
                "verified": {True: "ok", False: "MISMATCH", None: "never"}[rec.verified_ok],
                "verified_at": rec.verified_at,
                "origin": rec.origin,
                "paths": [str(p) for p in rec.paths()],
            }
        )
    return rows


def check_record(rec: records.Record) -> list[FileCheck]:
    """Re-hash every file of one record; the record is updated with the result."""
    out: list[FileCheck] = []
    for f in rec.files:
        p = rec.path_of(f)
        status, actual = "ok", None
        if not p.is_file():
            status = "missing"
        elif p.stat().st_size != f.size:
            status = "size"
        else:
            actual = sha256_file(p)
            if actual != f.sha256:
                status = "sha256"
        out.append(FileCheck(rec.variant_id, f.name, str(p), f.size, f.sha256, status, actual))
    bad = tuple(c.name for c in out if c.status != "ok")
    records.save(replace(rec, verified_at=now(), verified_ok=not bad, mismatches=bad))
    return out


def verify(variant_ids: list[str] | None = None) -> list[FileCheck]:
    """Re-hash the named variants (default: everything recorded in the store)."""
    if variant_ids is None:
        recs = records.all_records()
    else:
        recs = []
        for vid in variant_ids:
            rec = records.load(vid)
            if rec is None:
                raise NotFound(f"{vid} is not in the store", hint=f"deploy pull {vid}")
            recs.append(rec)
    out: list[FileCheck] = []
    for rec in recs:
        out.extend(check_record(rec))
    return out


def remove(variant_id: str) -> int:
    """Delete a variant's files (blobs shared with another snapshot stay). Returns bytes freed."""
    rec = records.load(variant_id)
    if rec is None:
        raise NotFound(f"{variant_id} is not in the store", hint="deploy models")
    freed = 0
    if rec.source == "hf":
        assert rec.repo is not None and rec.revision is not None
        freed = cache.remove_snapshot_files(rec.repo, rec.revision, [f.name for f in rec.files])
    else:
        for p in rec.paths():
            if p.is_file():
                freed += p.stat().st_size
                p.unlink()
        d = rec.paths()[0].parent if rec.files else None
        while d is not None and d != settings.store_dir():
            if not d.is_dir() or any(d.iterdir()):
                break
            d.rmdir()
            d = d.parent
    records.delete(variant_id)
    return freed
