"""User recipes: DEPLOY_RECIPES_PATH and $DEPLOY_HOME/config/recipes extend or override."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.clihelp import run
from toolkit.catalog.loader import shipped_recipes_dir

MY_MODEL = """\
family: mine
aliases: [my-models]
models:
  - id: my-qwen3-8b-ft
    name: My Qwen3 8B fine-tune
    repo: me/qwen3-8b-ft
    aliases: ["mine:8b"]
    same_architecture_as: qwen3-8b
    params: {total: 8.2e9, source: the base model}
    context: {native: 32768}
    variants:
      - quant: q4_k_m
        format: gguf
        repo: me/qwen3-8b-ft-GGUF
        files: [{name: ft-Q4_K_M.gguf, size: 5000000000}]
"""


def _show(name: str) -> Any:
    res = run("recipes", "show", name, "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


def _coder_with_context(native: int) -> str:
    """The shipped qwen3-coder family with the 30B model's context changed."""
    data = yaml.safe_load((shipped_recipes_dir() / "qwen3-coder.yaml").read_text())
    data["models"][0]["context"] = {"native": native, "source": "my own measurement"}
    return yaml.safe_dump(data, sort_keys=False)


def test_config_dir_adds_a_model(isolated_env: Path) -> None:
    user = isolated_env / "config" / "recipes"
    user.mkdir(parents=True)
    (user / "mine.yaml").write_text(MY_MODEL)
    doc = _show("mine:8b")
    assert doc["id"] == "my-qwen3-8b-ft"
    assert doc["file"] == str(user / "mine.yaml")
    assert "overrides" not in doc
    assert doc["architecture_from"] == "qwen3-8b"
    assert doc["architecture"]["layers"] == 36
    rows = json.loads(run("recipes", "list", "--json").stdout)
    ids = {r["id"] for r in rows}
    assert "my-qwen3-8b-ft" in ids and "qwen3-coder-30b-a3b" in ids


def test_env_path_overrides_shipped_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "env-recipes"
    user.mkdir()
    (user / "coder.yaml").write_text(_coder_with_context(65536))
    monkeypatch.setenv("DEPLOY_RECIPES_PATH", str(user))
    doc = _show("qwen3-coder:30b")
    assert doc["context"]["native"] == 65536
    assert doc["file"] == str(user / "coder.yaml")
    assert doc["overrides"] == str(shipped_recipes_dir() / "qwen3-coder.yaml")
    res = run("recipes", "show", "qwen3-coder-30b-a3b")
    text = " ".join(res.stdout.split())
    assert f"overrides shipped recipe {shipped_recipes_dir() / 'qwen3-coder.yaml'}" in text


def test_user_model_in_another_family_overrides_one_model(isolated_env: Path) -> None:
    """A user file that redefines one shipped model id replaces just that model."""
    data = yaml.safe_load((shipped_recipes_dir() / "qwen3-coder.yaml").read_text())
    model = data["models"][0]
    model["context"] = {"native": 32768}
    user = isolated_env / "config" / "recipes"
    user.mkdir(parents=True)
    (user / "pinned.yaml").write_text(yaml.safe_dump({"family": "pinned", "models": [model]}))
    doc = _show("qwen3-coder-30b-a3b")
    assert doc["family"] == "pinned"
    assert doc["context"]["native"] == 32768
    assert doc["overrides"] == str(shipped_recipes_dir() / "qwen3-coder.yaml")
    family = _show("qwen3-coder")
    assert [d["id"] for d in family] == ["qwen3-coder-480b-a35b", "qwen3-coder-next"]


def test_env_beats_config_dir_and_first_env_dir_wins(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = isolated_env / "config" / "recipes"
    config.mkdir(parents=True)
    (config / "coder.yaml").write_text(_coder_with_context(1000))
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "coder.yaml").write_text(_coder_with_context(2000))
    (second / "coder.yaml").write_text(_coder_with_context(3000))
    monkeypatch.setenv("DEPLOY_RECIPES_PATH", os.pathsep.join([str(first), str(second)]))
    doc = _show("qwen3-coder-30b-a3b")
    assert doc["context"]["native"] == 2000
    assert doc["file"] == str(first / "coder.yaml")
    monkeypatch.setenv("DEPLOY_RECIPES_PATH", str(second))
    assert _show("qwen3-coder-30b-a3b")["context"]["native"] == 3000
    monkeypatch.delenv("DEPLOY_RECIPES_PATH")
    assert _show("qwen3-coder-30b-a3b")["context"]["native"] == 1000


def test_missing_env_dir_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_RECIPES_PATH", str(tmp_path / "does-not-exist"))
    assert _show("qwen3-coder-30b-a3b")["context"]["native"] == 262144


def test_docs_example_is_a_valid_user_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example in docs/recipes.md validates and resolves as documented."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "recipes.md").read_text()
    match = re.search(r"config/recipes/mine\.yaml`:\n\n```yaml\n(.*?)```", docs, re.S)
    assert match is not None
    (tmp_path / "mine.yaml").write_text(match.group(1))
    res = run("recipes", "validate", str(tmp_path / "mine.yaml"))
    assert res.exit_code == 0, res.stderr
    monkeypatch.setenv("DEPLOY_RECIPES_PATH", str(tmp_path))
    doc = _show("mine:8b")
    assert doc["architecture_from"] == "qwen3-8b"
    assert [v["id"] for v in doc["variants"]] == ["my-qwen3-8b-ft:q4_k_m", "my-qwen3-8b-ft:bf16"]
