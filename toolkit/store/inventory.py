"""What is in the store: list, re-hash (verify), remove."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from toolkit import settings
from toolkit.errors import NotFound
from toolkit.store import cache, records
from toolkit.store.hashing import git_blob_sha1, sha256_file
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


@dataclass(frozen=True)
class CachedFile:
    """A file in the HF cache that no deploy record covers (another tool downloaded it)."""

    repo: str
    revision: str
    name: str
    path: Path
    #: The blob's name: the sha256 (LFS files) or git blob sha1 (small files) of its bytes.
    etag: str


def unrecorded_files() -> list[CachedFile]:
    """Snapshot files in the HF cache that deploy has no record of."""
    covered = {
        (r.repo, r.revision, f.name)
        for r in records.all_records()
        if r.source == "hf"
        for f in r.files
    }
    root = settings.hf_hub_cache()
    out: list[CachedFile] = []
    if not root.is_dir():
        return out
    for folder in sorted(root.glob("models--*--*")):
        repo = folder.name.removeprefix("models--").replace("--", "/", 1)
        snapshots = folder / "snapshots"
        if not snapshots.is_dir():
            continue
        for snap in sorted(p for p in snapshots.iterdir() if p.is_dir()):
            for link in sorted(snap.rglob("*")):
                if not link.is_file():
                    continue
                name = link.relative_to(snap).as_posix()
                if (repo, snap.name, name) in covered:
                    continue
                etag = link.resolve().name
                out.append(CachedFile(repo, snap.name, name, link, etag))
    return out


def list_models() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    others: dict[tuple[str, str], list[CachedFile]] = {}
    for cf in unrecorded_files():
        others.setdefault((cf.repo, cf.revision), []).append(cf)
    for (repo, revision), files in others.items():
        rows.append(
            {
                "variant": None,
                "model": None,
                "source": "hf-cache",
                "repo": repo,
                "revision": revision,
                "files": len(files),
                "size": sum(f.path.stat().st_size for f in files),
                "state": "present",
                "verified": "never",
                "verified_at": None,
                "origin": "another tool",
                "paths": [str(f.path) for f in files],
            }
        )
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
    if variant_ids is None:
        out.extend(check_unrecorded())
    return out


def check_unrecorded() -> list[FileCheck]:
    """Files other tools put in the cache, checked against their blob names (the hub's
    sha256 for LFS files, git blob sha1 for small ones)."""
    out: list[FileCheck] = []
    for cf in unrecorded_files():
        size = cf.path.stat().st_size
        if len(cf.etag) == 64:
            actual = sha256_file(cf.path)
        elif len(cf.etag) == 40:
            actual = git_blob_sha1(cf.path)
        else:
            continue  # not a hub etag: nothing to compare with
        status = "ok" if actual == cf.etag else "sha256"
        label = f"{cf.repo}@{cf.revision[:12]}"
        out.append(FileCheck(label, cf.name, str(cf.path), size, cf.etag, status, actual))
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
        from toolkit.store.pull import clear_leftovers

        for p in rec.paths():
            if p.is_file():
                freed += p.stat().st_size
                p.unlink()
        d = rec.paths()[0].parent if rec.files else None
        if d is not None:
            clear_leftovers(d)  # what a killed pull left beside the files
        while d is not None and d != settings.store_dir():
            if not d.is_dir() or any(d.iterdir()):
                break
            d.rmdir()
            d = d.parent
    records.delete(variant_id)
    return freed
