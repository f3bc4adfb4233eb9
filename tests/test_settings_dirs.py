"""deploy's default state and cache dirs are platformdirs' (spelled out for Linux and macOS
so `deploy plan` need not import it)."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from toolkit import settings


@pytest.mark.parametrize("xdg", [None, "", "  ", "/srv/xdg"])
def test_default_dirs_are_platformdirs(
    xdg: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(settings.DEPLOY_HOME, raising=False)
    monkeypatch.delenv(settings.DEPLOY_CACHE_DIR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME"):
        if xdg is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, xdg)
    assert settings.home() == Path(platformdirs.user_data_dir("deploy", appauthor=False))
    assert settings.cache_dir() == Path(platformdirs.user_cache_dir("deploy", appauthor=False))


def test_deploy_home_and_cache_dir_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.DEPLOY_HOME, str(tmp_path / "h"))
    monkeypatch.delenv(settings.DEPLOY_CACHE_DIR, raising=False)
    assert (settings.home(), settings.cache_dir()) == (tmp_path / "h", tmp_path / "h" / "cache")
    monkeypatch.setenv(settings.DEPLOY_CACHE_DIR, str(tmp_path / "c"))
    assert settings.cache_dir() == tmp_path / "c"
