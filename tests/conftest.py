"""Test-wide fixtures.

Every test runs with DEPLOY_HOME, HF_HOME and the user recipe path pointed at fresh
temporary directories (STYLE habit 7), so nothing touches the developer's own state.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


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
