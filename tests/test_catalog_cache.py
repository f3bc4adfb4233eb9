"""The compiled catalog cache: used when nothing changed, rebuilt when a recipe file (or
the loader/schema code) changed, never hiding a recipe error, never in the way."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from toolkit import filecache, settings
from toolkit.catalog import loader
from toolkit.catalog.loader import load_catalog, parse_recipe
from toolkit.errors import RecipeError

RECIPE = """\
family: mine
models:
  - id: my-model
    name: {name}
    repo: me/my-model
    same_architecture_as: qwen3-8b
    params: {{total: 8.2e9}}
    context: {{native: 32768}}
    variants:
      - quant: q4_k_m
        format: gguf
        repo: me/my-model-GGUF
        files: [{{name: m-Q4_K_M.gguf, size: 5000000000}}]
"""
OLD = time.time() - 3600


@pytest.fixture
def user_dir(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user recipe dir; files here are trusted to their timestamps at once (tests write
    and rewrite faster than the racy-timestamp guard would allow)."""
    monkeypatch.delenv(settings.DEPLOY_CACHE_DIR, raising=False)
    monkeypatch.setattr(filecache, "RACY_S", 0.0)
    d = isolated_env / "my-recipes"
    d.mkdir(parents=True)
    return d


def _write(path: Path, text: str, mtime: float | None = OLD) -> None:
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def _cache(isolated_env: Path) -> Path:
    return isolated_env / "cache" / "catalog.pickle"


def _no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path: Path) -> None:
        raise AssertionError(f"parsed {path.name}: the cache was not used")

    monkeypatch.setattr(loader, "parse_recipe", fail)


def test_cache_lives_under_deploy_home_and_serves_the_same_catalog(
    user_dir: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(user_dir / "mine.yaml", RECIPE.format(name="First"))
    fresh = load_catalog([user_dir])
    assert _cache(isolated_env).is_file()
    assert settings.cache_dir() == isolated_env / "cache"

    _no_parsing(monkeypatch)
    cached = load_catalog([user_dir])
    assert cached.models.keys() == fresh.models.keys()
    assert cached.models["my-model"] == fresh.models["my-model"]
    assert cached.models["my-model"].model.architecture is not None  # linked before caching
    assert cached.families == fresh.families
    assert cached.family_files == fresh.family_files
    assert cached.unavailable == fresh.unavailable


def test_changed_user_recipe_is_seen(user_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = user_dir / "mine.yaml"
    _write(path, RECIPE.format(name="First"))
    assert load_catalog([user_dir]).models["my-model"].model.name == "First"

    # An ordinary edit (new size, new mtime).
    _write(path, RECIPE.format(name="Second one"), mtime=None)
    assert load_catalog([user_dir]).models["my-model"].model.name == "Second one"

    # Same size and the old mtime put back (`touch -r`, a restore): the ctime still moved.
    time.sleep(0.02)
    _write(path, RECIPE.format(name="Second two"))
    assert load_catalog([user_dir]).models["my-model"].model.name == "Second two"

    # A file added to, then removed from, a recipe dir.
    _write(user_dir / "more.yaml", RECIPE.format(name="X").replace("my-model", "other"))
    assert "other" in load_catalog([user_dir]).models
    (user_dir / "more.yaml").unlink()
    assert "other" not in load_catalog([user_dir]).models


def test_other_user_dirs_are_another_catalog(user_dir: Path, isolated_env: Path) -> None:
    _write(user_dir / "mine.yaml", RECIPE.format(name="First"))
    assert "my-model" in load_catalog([user_dir]).models
    assert "my-model" not in load_catalog([isolated_env / "empty"]).models
    assert "my-model" in load_catalog([user_dir]).models


def test_recipe_errors_are_reported_every_time_and_never_cached(
    user_dir: Path, isolated_env: Path
) -> None:
    path = user_dir / "mine.yaml"
    _write(path, RECIPE.format(name="Good"))
    load_catalog([user_dir])
    _write(path, RECIPE.format(name="Bad").replace("total: 8.2e9", "totl: 8.2e9"), mtime=None)
    with pytest.raises(RecipeError) as direct:
        parse_recipe(path)
    for _ in range(2):
        with pytest.raises(RecipeError) as exc:
            load_catalog([user_dir])
        assert str(exc.value) == str(direct.value)
        assert "did you mean 'total'" in str(exc.value)
    _write(path, RECIPE.format(name="Good again"), mtime=None)
    assert load_catalog([user_dir]).models["my-model"].model.name == "Good again"


def test_a_broken_cache_file_means_an_ordinary_load(user_dir: Path, isolated_env: Path) -> None:
    _write(user_dir / "mine.yaml", RECIPE.format(name="First"))
    load_catalog([user_dir])
    for junk in (b"", b"not a pickle", _cache(isolated_env).read_bytes()[:100]):
        _cache(isolated_env).write_bytes(junk)
        assert load_catalog([user_dir]).models["my-model"].model.name == "First"
    assert len(_cache(isolated_env).read_bytes()) > 100  # rewritten


def test_an_unwritable_cache_dir_is_no_error(
    user_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(settings.DEPLOY_CACHE_DIR, str(blocker / "cache"))
    _write(user_dir / "mine.yaml", RECIPE.format(name="First"))
    assert load_catalog([user_dir]).models["my-model"].model.name == "First"
    assert load_catalog([user_dir]).models["my-model"].model.name == "First"


def test_recently_changed_files_are_not_trusted_to_their_timestamps(
    user_dir: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filecache, "RACY_S", 3600.0)
    _write(user_dir / "mine.yaml", RECIPE.format(name="First"), mtime=None)
    load_catalog([user_dir])
    assert not _cache(isolated_env).exists()


def test_a_code_change_invalidates(
    user_dir: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(user_dir / "mine.yaml", RECIPE.format(name="First"))
    load_catalog([user_dir])
    monkeypatch.setattr(loader, "CACHE_FORMAT", loader.CACHE_FORMAT + 1)
    calls: list[Path] = []
    real = loader.parse_recipe

    def counting(path: Path) -> object:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(loader, "parse_recipe", counting)
    load_catalog([user_dir])
    assert calls  # rebuilt


def test_memo_computes_once_across_processes_until_its_code_changes(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(settings.DEPLOY_CACHE_DIR, raising=False)
    monkeypatch.setattr(filecache, "RACY_S", 0.0)
    code = tmp_path / "code.py"
    _write(code, "v1")
    calls: list[int] = []

    def compute() -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    assert filecache.memo("t", [code], ("a", 1), compute) == {"n": 1}
    assert filecache.memo("t", [code], ("a", 1), compute) == {"n": 1}
    monkeypatch.setattr(filecache, "_tables", {})  # as a new process sees it
    assert filecache.memo("t", [code], ("a", 1), compute) == {"n": 1}
    assert filecache.memo("t", [code], ("b", 1), compute) == {"n": 2}
    monkeypatch.setattr(filecache, "_tables", {})
    assert filecache.memo("t", [code], ("b", 1), compute) == {"n": 2}
    assert len(calls) == 2

    _write(code, "v2 changed", mtime=OLD + 10)
    monkeypatch.setattr(filecache, "_tables", {})
    assert filecache.memo("t", [code], ("a", 1), compute) == {"n": 3}

    (isolated_env / "cache" / "t.pickle").write_bytes(b"junk")
    monkeypatch.setattr(filecache, "_tables", {})
    assert filecache.memo("t", [code], ("a", 1), compute) == {"n": 4}


def test_memo_without_a_writable_cache_dir_still_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(settings.DEPLOY_CACHE_DIR, str(blocker / "cache"))
    monkeypatch.setattr(filecache, "_tables", {})
    code = tmp_path / "code.py"
    _write(code, "v1")
    assert filecache.memo("t", [code], "k", lambda: 7) == 7
    monkeypatch.setattr(filecache, "_tables", {})
    assert filecache.memo("t", [code], "k", lambda: 8) == 8


def test_a_full_memo_table_starts_afresh(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(settings.DEPLOY_CACHE_DIR, raising=False)
    monkeypatch.setattr(filecache, "RACY_S", 0.0)
    monkeypatch.setattr(filecache, "MEMO_MAX", 3)
    monkeypatch.setattr(filecache, "_tables", {})
    code = tmp_path / "code.py"
    _write(code, "v1")
    for k in range(5):
        assert filecache.memo("t", [code], k, lambda k=k: k * 10) == k * 10
    monkeypatch.setattr(filecache, "_tables", {})
    calls: list[int] = []
    assert filecache.memo("t", [code], 4, lambda: calls.append(1) or 40) == 40
    assert calls == []  # the newest entries were kept
    assert filecache.memo("t", [code], 0, lambda: calls.append(1) or 0) == 0
    assert calls == [1]  # the oldest went with the reset
