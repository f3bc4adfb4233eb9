"""Downloads that survive the process: resume a file where an earlier `deploy pull` stopped.

huggingface_hub 2.x writes each download to a process-unique temporary file and deletes it
when the process fails, so a pull killed at 90% of a 50 GB shard starts that shard over.
For files served over plain HTTP (the hub's LFS/CDN path and most mirrors) deploy does the
transfer itself with huggingface_hub's own pieces (`get_hf_file_metadata` for the ETag,
size and final location; `http_get` for the ranged, retried, progress-reporting GET) into
`blobs/<etag>.deploy-partial` in the standard cache, under the same per-blob lock file
huggingface_hub uses. A later pull continues from the partial file's size with a Range
request. The file is verified BEFORE it becomes a blob, then linked into the snapshot
exactly as huggingface_hub would. Xet-backed files (hf_xet installed and the hub offering
Xet) go through `hf_hub_download` instead: `fetch` returns None for them.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from toolkit import settings
from toolkit.store import cache

PARTIAL_SUFFIX = ".deploy-partial"
_ETAG = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")


@contextmanager
def blob_lock(repo_folder: Path, etag: str) -> Iterator[None]:
    """The lock file huggingface_hub takes for this blob (`.locks/<repo>/<etag>.lock`)."""
    path = settings.hf_hub_cache() / ".locks" / repo_folder.name / f"{etag}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def fetch(
    repo: str,
    name: str,
    revision: str,
    *,
    endpoint: str,
    token: str | None,
    check: Callable[[Path], None],
    tqdm_class: Any = None,
) -> Path | None:
    """Download one file into the cache, resuming a partial one; None = use hf_hub_download.

    `check(path)` verifies the complete download (raises to refuse it; the partial file is
    then deleted). Hub errors (gated, not found, connection) propagate unchanged.
    """
    from huggingface_hub import file_download, get_hf_file_metadata, hf_hub_url

    http_get = getattr(file_download, "http_get", None)
    if http_get is None:  # a huggingface_hub without it: let it do everything
        return None
    url = hf_hub_url(repo, name, revision=revision, endpoint=endpoint)
    meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
    if meta.xet_file_data is not None:
        from huggingface_hub.utils._runtime import is_xet_available

        if is_xet_available():
            return None
    etag, size = meta.etag, meta.size
    if etag is None or not _ETAG.match(etag):
        return None
    folder = cache.repo_folder(repo)
    blob = folder / "blobs" / etag
    if not blob.is_file():
        blob.parent.mkdir(parents=True, exist_ok=True)
        with blob_lock(folder, etag):
            if not blob.is_file():
                _download(http_get, meta.location, url, blob, size, name, token, check, tqdm_class)
    return cache.link_into_snapshot(repo, revision, name, blob)


def _download(
    http_get: Any,
    location: str,
    url: str,
    blob: Path,
    size: int | None,
    name: str,
    token: str | None,
    check: Callable[[Path], None],
    tqdm_class: Any,
) -> None:
    from huggingface_hub.utils._headers import build_hf_headers

    partial = blob.with_name(blob.name + PARTIAL_SUFFIX)
    resume = partial.stat().st_size if partial.is_file() else 0
    if size is not None and resume > size:
        partial.unlink()
        resume = 0
    headers = build_hf_headers(token=token)
    if _origin(location) != _origin(url):
        headers.pop("authorization", None)  # a signed CDN URL: never send the token there
    with partial.open("ab") as f:
        http_get(
            location,
            f,
            resume_size=resume,
            headers=headers,
            expected_size=size,
            displayed_filename=name,
            tqdm_class=tqdm_class,
        )
    try:
        check(partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.chmod(partial, 0o644)
    os.replace(partial, blob)
