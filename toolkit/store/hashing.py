"""sha256 of files, as fast as the machine allows.

hashlib releases the GIL and runs OpenSSL's SHA-256 (SHA-NI / AVX2 where the CPU has
them); reading into one reused 4 MiB buffer with `readinto` avoids a copy per chunk.
`scripts/bench/sha256_bench.py` measures this against coreutils `sha256sum`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

BUFFER = 4 * 1024 * 1024


def sha256_file(path: Path, *, progress: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file's bytes. `progress(n)` is called with each chunk's length."""
    digest = hashlib.sha256()
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
            if progress is not None:
                progress(n)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git blob id of a file (what the hub uses as ETag for small, non-LFS files)."""
    size = path.stat().st_size
    digest = hashlib.sha1(b"blob %d\0" % size)
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()
