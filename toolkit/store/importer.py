"""`deploy import`: bring a bundle into the store, trusting nothing until it is checked.

The tar is read once, as a stream. `manifest.json` must come first and is validated
(paths, repo ids, revisions, hashes). Every later member must be a regular file listed in
the manifest, appear once, have the listed size, and hash to the listed sha256; anything
else (path traversal, absolute paths, symlinks, hard links, devices, FIFOs, directories,
duplicates, extra or missing files) refuses the whole bundle with exit 6. Members are
written to a private staging directory under numbered names (a member's path never
becomes a file-system path before it is checked). Only when the whole tar checked out
are files moved into the Hugging Face cache (blobs + snapshot links), deploy's pypi store
and engines dir; a failure while moving rolls back what was placed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import settings
from toolkit.catalog.schema import PypiSource
from toolkit.errors import Conflict, IntegrityError
from toolkit.store import cache, records
from toolkit.store.manifest import MANIFEST, MAX_MANIFEST, FileEntry, check_manifest
from toolkit.store.pull import check_disk, now

CHUNK = 4 * 1024 * 1024


def _refuse(msg: str) -> IntegrityError:
    return IntegrityError(
        f"bundle refused: {msg}; nothing was imported",
        hint="make the bundle again on the connected machine (deploy bundle MODEL -o FILE.tar)",
    )


def _kind(m: tarfile.TarInfo) -> str | None:
    """Why a member type is refused, or None for a regular file."""
    if m.issym():
        return f"symlink ({m.name} -> {m.linkname})"
    if m.islnk():
        return f"hard link ({m.name} -> {m.linkname})"
    if m.ischr() or m.isblk():
        return f"device file ({m.name})"
    if m.isfifo():
        return f"FIFO ({m.name})"
    if m.isdir():
        return f"directory entry ({m.name})"
    if not m.isreg():
        return f"special member ({m.name})"
    return None


@dataclass
class _Staged:
    files: dict[str, Path]
    manifest: dict[str, Any]


def _stage(path: Path, staging: Path) -> _Staged:
    try:
        with tarfile.open(path, mode="r|*") as tar:
            return _stage_members(tar, staging)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _refuse(f"could not read {path.name} as a complete tar ({exc})") from exc


def _stage_members(tar: tarfile.TarFile, staging: Path) -> _Staged:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isreg():
        raise _refuse(f"the first member must be {MANIFEST}")
    if first.size > MAX_MANIFEST:
        raise _refuse(f"{MANIFEST} is larger than {MAX_MANIFEST} bytes")
    fobj = tar.extractfile(first)
    assert fobj is not None
    try:
        manifest = json.loads(fobj.read())
    except ValueError as exc:
        raise _refuse(f"{MANIFEST} is not JSON ({exc})") from exc
    try:
        listed: dict[str, FileEntry] = check_manifest(manifest)
    except IntegrityError as exc:
        raise _refuse(exc.message) from exc
    check_disk(
        sum(e.size for e in listed.values()),
        staging,
        "this bundle",
        retry="deploy import BUNDLE.tar",
    )
    staged: dict[str, Path] = {}
    index = 0
    while (member := tar.next()) is not None:
        index += 1
        name = member.name
        why = _kind(member)
        if why is not None:
            raise _refuse(why)
        try:
            cache.check_relpath(name)
        except IntegrityError as exc:
            raise _refuse(exc.message) from exc
        if name == MANIFEST or name in staged:
            raise _refuse(f"duplicate entry {name!r}")
        entry = listed.get(name)
        if entry is None:
            raise _refuse(f"{name!r} is not listed in the manifest")
        if member.size != entry.size:
            raise _refuse(f"{name}: {member.size} bytes, the manifest says {entry.size}")
        src = tar.extractfile(member)
        assert src is not None
        dst = staging / f"{index:06d}"
        digest = hashlib.sha256()
        written = 0
        with dst.open("wb") as out:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                written += len(chunk)
        if written != entry.size:
            raise _refuse(f"{name}: truncated ({written} of {entry.size} bytes)")
        if digest.hexdigest() != entry.sha256:
            raise _refuse(
                f"{name}: sha256 {digest.hexdigest()} does not match the manifest's {entry.sha256}"
            )
        os.chmod(dst, entry.mode)
        staged[name] = dst
    missing = sorted(set(listed) - set(staged))
    if missing:
        raise _refuse(f"files listed in the manifest are missing from the tar: {missing[:5]}")
    return _Staged(staged, manifest)


class _Placer:
    """Moves staged files into place, remembering how to undo each step."""

    def __init__(self) -> None:
        self.undo: list[tuple[Path, Path | None]] = []

    def place(self, src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        backup: Path | None = None
        if dst.exists() or dst.is_symlink():
            backup = dst.with_name(f".{dst.name}.import-backup")
            os.replace(dst, backup)
        self.undo.append((dst, backup))
        try:
            os.replace(src, dst)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            tmp = dst.with_name(f".{dst.name}.import-tmp")
            try:
                shutil.copy2(src, tmp)
                os.replace(tmp, dst)
            finally:
                tmp.unlink(missing_ok=True)  # never left behind to keep a disk full

    def link(self, repo: str, revision: str, name: str, blob: Path) -> None:
        target = cache.snapshot_dir(repo, revision) / name
        backup: Path | None = None
        if target.exists() or target.is_symlink():
            backup = target.with_name(f".{target.name}.import-backup")
            os.replace(target, backup)
        self.undo.append((target, backup))
        cache.link_into_snapshot(repo, revision, name, blob)

    def rollback(self) -> None:
        for dst, backup in reversed(self.undo):
            if dst.is_symlink() or dst.is_file():
                dst.unlink()
            if backup is not None:
                os.replace(backup, dst)

    def commit(self) -> None:
        for _, backup in self.undo:
            if backup is not None and (backup.exists() or backup.is_symlink()):
                backup.unlink()


#: variant id → {file name: (size, sha256)} the local recipe pins, or None when the variant
#: is not in the catalog (or pins nothing).
Pinned = Callable[[str], dict[str, tuple[int | None, str | None]] | None]


def _check_models(staged: _Staged, pinned: Pinned | None, replace_existing: bool) -> list[str]:
    """Before anything moves: every blob's name is its content's hash, no existing file
    is replaced by other content, each file matches what the local recipe pins for that
    variant, and a variant already in the store is replaced only on request. Returns the
    notes for what --replace replaced."""
    from toolkit.store.hashing import git_blob_sha1

    notes: list[str] = []
    for m in staged.manifest.get("models", []):
        vid = m["variant_id"]
        pins = pinned(vid) if pinned is not None else None
        for f in m["files"]:
            src = staged.files[f["path"]]
            if pins and f["name"] in pins:
                size, sha = pins[f["name"]]
                if (size is not None and size != f["size"]) or (
                    sha is not None and sha != f["sha256"]
                ):
                    raise _refuse(
                        f"{f['name']} is not the file the {vid} recipe pins "
                        f"(size {size}, sha256 {str(sha)[:12]}…; the bundle has size "
                        f"{f['size']}, sha256 {f['sha256'][:12]}…)"
                    )
            if m["source"] != "hf":
                dest = cache.pypi_dir(PypiSource(**m["pypi"])) / f["name"]
                if dest.is_file() and not _holds(dest, f) and not replace_existing:
                    raise _exists(vid, dest)
                continue
            name = f.get("blob", f["sha256"])
            if len(name) == 64 and name != f["sha256"]:
                raise _refuse(f"blob {name[:12]}… of {f['name']} is not its content's sha256")
            if len(name) == 40 and git_blob_sha1(src) != name:
                raise _refuse(f"blob {name[:12]}… of {f['name']} is not its content's git hash")
            blob = cache.repo_folder(m["repo"]) / "blobs" / name
            if blob.is_file() and not _holds(blob, f):
                # A blob's name says what it holds; one that holds something else already
                # is damage to report, not to paper over.
                raise _refuse(f"the store's blob {blob} holds other content than its name")
        old = records.load(vid)
        if old is not None:
            same = {(x.name, x.sha256) for x in old.files} == {
                (f["name"], f["sha256"]) for f in m["files"]
            }
            if not same and not replace_existing:
                raise _exists(vid, None)
            if not same:
                notes.append(f"{vid}: replaced the files that were in the store (--replace)")
    return notes


def _holds(path: Path, entry: dict[str, Any]) -> bool:
    """The file at path has the manifest entry's size and sha256 (the size first: a file
    of another size is not hashed)."""
    from toolkit.store.hashing import sha256_file

    return bool(path.stat().st_size == entry["size"] and sha256_file(path) == entry["sha256"])


def _exists(vid: str, path: Path | None) -> Conflict:
    where = f" ({path})" if path is not None else ""
    return Conflict(
        f"{vid} is already in the store with other files{where}; nothing was imported",
        hint="deploy import FILE --replace   (after checking which copy is right: deploy verify)",
    )


def _install_models(staged: _Staged, placer: _Placer) -> list[records.Record]:
    out: list[records.Record] = []
    for m in staged.manifest.get("models", []):
        stored: list[records.StoredFile] = []
        for f in m["files"]:
            src = staged.files[f["path"]]
            if m["source"] == "hf":
                blob = cache.repo_folder(m["repo"]) / "blobs" / f.get("blob", f["sha256"])
                if not blob.is_file():  # an existing blob was checked to hold this content
                    placer.place(src, blob)
                placer.link(m["repo"], m["revision"], f["name"], blob)
            else:
                dest = cache.pypi_dir(PypiSource(**m["pypi"])) / f["name"]
                placer.place(src, dest)
            stored.append(records.StoredFile(f["name"], f["size"], f["sha256"]))
        if m["source"] == "hf" and cache.read_ref(m["repo"]) is None:
            cache.write_ref(m["repo"], "main", m["revision"])
        out.append(
            records.Record(
                variant_id=m["variant_id"],
                model_id=m["model_id"],
                source=m["source"],
                files=tuple(stored),
                origin="import",
                repo=m.get("repo"),
                revision=m.get("revision"),
                pypi=m.get("pypi"),
                verified_at=now(),
                verified_ok=True,
            )
        )
    return out


def _install_engine(staged: _Staged, placer: _Placer) -> str | None:
    engine = staged.manifest.get("engine")
    if not engine:
        return None
    home = settings.engines_dir() / engine["name"]
    if (home / "engine.json").exists():
        return f"engine {engine['name']}: kept the one already installed in {home}"
    old_home = Path(engine["home"])
    for f in engine["files"]:
        placer.place(staged.files[f["path"]], home / f["rel"])
    record = home / "engine.json"
    if record.is_file():
        doc = json.loads(record.read_text())
        for key in ("path", "python"):
            value = doc.get(key)
            if isinstance(value, str) and Path(value).is_relative_to(old_home):
                doc[key] = str(home / Path(value).relative_to(old_home))
        if "home" in doc:
            doc["home"] = str(home)
        tmp = record.with_name(".engine.json.tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        os.replace(tmp, record)
    return f"engine {engine['name']}: installed in {home}"


def _install_wheels(staged: _Staged, placer: _Placer) -> str | None:
    toolkit = staged.manifest.get("toolkit")
    if not toolkit:
        return None
    dest = settings.home() / "wheels"
    for arc in toolkit["wheels"]:
        placer.place(staged.files[arc], dest / Path(arc).name)
    return f"toolkit wheels: {dest} (pip install --no-index --find-links {dest} deploy-toolkit)"


def _save_plan(staged: _Staged, bundle: Path) -> str | None:
    """The bundle's plan, written where `deploy up --plan` can take it."""
    plan = staged.manifest.get("plan")
    if plan is None:
        return None
    dest = settings.home() / "plans" / f"{bundle.name.split('.')[0] or 'bundle'}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(json.dumps(plan, indent=2))
    os.replace(tmp, dest)
    return f"plan: {dest} (run it: deploy up --plan {dest})"


def import_bundle(
    path: Path, *, pinned: Pinned | None = None, replace_existing: bool = False
) -> dict[str, Any]:
    root = settings.hf_hub_cache()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".deploy-import-", dir=root))
    placer = _Placer()
    try:
        staged = _stage(path, staging)
        replaced = _check_models(staged, pinned, replace_existing)
        try:
            recs = _install_models(staged, placer)
            notes: list[str | None] = [*replaced]
            notes += [_install_engine(staged, placer), _install_wheels(staged, placer)]
            for rec in recs:
                records.save(rec)
            notes.append(_save_plan(staged, path))
        except BaseException:
            placer.rollback()
            raise
        placer.commit()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "bundle": str(path),
        "models": [
            {
                "variant_id": r.variant_id,
                "size": r.total_size(),
                "paths": [str(x) for x in r.paths()],
            }
            for r in recs
        ],
        "installed": [n for n in notes if n],
        "plan": staged.manifest.get("plan"),
        "toolkit_version": staged.manifest.get("toolkit_version"),
    }
