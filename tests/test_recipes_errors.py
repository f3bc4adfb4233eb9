"""Broken recipes: one line naming the file and the key path, and a non-zero exit.

Each case breaks ONE thing in a copy of the real shipped qwen3-coder.yaml, so the rest of
the file is known to be valid and the error can only come from the break.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.clihelp import run
from toolkit.catalog.loader import shipped_recipes_dir

Data = dict[str, Any]


def _shipped() -> Data:
    data: Data = yaml.safe_load((shipped_recipes_dir() / "qwen3-coder.yaml").read_text())
    return data


def _negative_size(d: Data) -> None:
    d["models"][1]["variants"][3]["size"] = -5


def _missing_key(d: Data) -> None:
    del d["models"][1]["repo"]


def _wrong_type(d: Data) -> None:
    d["models"][0]["architecture"]["layers"] = "forty-eight"


def _duplicate_id(d: Data) -> None:
    d["models"][2]["id"] = d["models"][0]["id"]


def _unknown_format(d: Data) -> None:
    d["models"][0]["variants"][2]["format"] = "gguff"


def _unknown_key(d: Data) -> None:
    d["models"][0]["context"]["nativ"] = d["models"][0]["context"].pop("native")


def _duplicate_variant(d: Data) -> None:
    d["models"][0]["variants"].append(copy.deepcopy(d["models"][0]["variants"][0]))


def _bad_global_layer(d: Data) -> None:
    d["models"][2]["architecture"]["local_attention"] = {
        "kind": "linear",
        "global_layers": [3, 99],
        "linear": d["models"][2]["architecture"]["local_attention"]["linear"],
    }


def _huge_layers(d: Data) -> None:
    d["models"][0]["architecture"]["layers"] = 100_000_000_000


def _host_flag(d: Data) -> None:
    d["models"][0]["serving"]["llamacpp"]["flags"]["--host"] = "0.0.0.0"


def _key_flag(d: Data) -> None:
    d["models"][0]["serving"]["vllm"]["flags"]["--api_key=letmein"] = True


def _variant_model_flag(d: Data) -> None:
    d["models"][0]["variants"][0]["flags"] = {"llamacpp": {"-m": "/tmp/other.gguf"}}


def _offline_env(d: Data) -> None:
    d["models"][0]["serving"]["vllm"]["env"] = {"HF_HUB_OFFLINE": "0"}


CASES: list[tuple[str, Callable[[Data], None], str, str]] = [
    # (case, break it, key path, words the problem must contain)
    ("negative size", _negative_size, "models[1].variants[3].size", "greater than 0"),
    ("missing key", _missing_key, "models[1].repo", "required key is missing"),
    ("wrong type", _wrong_type, "models[0].architecture.layers", "valid integer"),
    ("duplicate id", _duplicate_id, "models[2].id", "duplicate id 'qwen3-coder-30b-a3b'"),
    ("unknown format", _unknown_format, "models[0].variants[2].format", "unknown format 'gguff'"),
    ("unknown key", _unknown_key, "models[0].context.nativ", "did you mean 'native'"),
    ("duplicate variant", _duplicate_variant, "models[0]", "two variants with quant 'q4_k_m'"),
    ("layer out of range", _bad_global_layer, "models[2].architecture", "beyond layers (48)"),
    ("huge layers", _huge_layers, "models[0].architecture.layers", "less than or equal to 10000"),
    # Recipes may not change what deploy owns: listen address, key, weights, offline mode.
    ("host flag", _host_flag, "models[0].serving.llamacpp", "flag '--host' is set by deploy"),
    ("key flag", _key_flag, "models[0].serving.vllm", "'--api_key=letmein' is set by deploy"),
    ("model flag", _variant_model_flag, "models[0].variants[0]", "flag '-m' is set by deploy"),
    ("offline env", _offline_env, "models[0].serving.vllm", "'HF_HUB_OFFLINE' is set by deploy"),
]


def _write(tmp_path: Path, data: Data) -> Path:
    path = tmp_path / "qwen3-coder.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_unbroken_copy_validates(tmp_path: Path) -> None:
    """The baseline: the copy with nothing broken passes, so each case tests its break."""
    res = run("recipes", "validate", str(_write(tmp_path, _shipped())))
    assert res.exit_code == 0, res.stderr


@pytest.mark.parametrize(("case", "mutate", "key", "words"), CASES, ids=[c[0] for c in CASES])
def test_broken_recipe_one_line_error(
    tmp_path: Path, case: str, mutate: Callable[[Data], None], key: str, words: str
) -> None:
    data = _shipped()
    mutate(data)
    path = _write(tmp_path, data)
    res = run("recipes", "validate", str(path))
    assert res.exit_code == 2, case
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"qwen3-coder.yaml: {key}: "), lines[0]
    assert words in lines[0]
    assert "ok " not in res.stdout


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("family: broken\nmodels:\n  - id: a\n    name: [unclosed\n")
    res = run("recipes", "validate", str(path))
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("broken.yaml: line ")
    assert "invalid YAML" in lines[0]


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- just\n- a list\n")
    res = run("recipes", "validate", str(path))
    assert res.exit_code == 2
    assert res.stderr.strip() == "list.yaml: a recipe must be a mapping with 'family' and 'models'"


def test_good_and_bad_files_together(tmp_path: Path) -> None:
    """Every file is reported; one bad file makes the exit non-zero."""
    good = tmp_path / "good"
    good.mkdir()
    _write(good, _shipped())
    bad_data = _shipped()
    _negative_size(bad_data)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    _write(bad_dir, bad_data)
    res = run("recipes", "validate", str(good), str(bad_dir / "qwen3-coder.yaml"), "--json")
    assert res.exit_code == 2
    rows = json.loads(res.stdout)
    assert [r["error"] is None for r in rows] == [True, False]
    assert rows[0]["models"] == 3
    assert rows[1]["error"].startswith("qwen3-coder.yaml: models[1].variants[3].size: ")


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    res = run("recipes", "validate", str(tmp_path / "nope.yaml"))
    assert res.exit_code == 4
    assert "no such file" in res.stderr


def test_same_architecture_as_unknown_model(tmp_path: Path) -> None:
    data = _shipped()
    model = data["models"][0]
    del model["architecture"]
    model["same_architecture_as"] = "no-such-model"
    res = run("recipes", "validate", str(_write(tmp_path, data)))
    assert res.exit_code == 2
    assert res.stderr.strip().startswith(
        "qwen3-coder.yaml: models[0].same_architecture_as: no model 'no-such-model'"
    )


def test_same_architecture_as_other_file_validates(tmp_path: Path) -> None:
    """A user recipe may borrow a shipped model's architecture."""
    path = tmp_path / "mine.yaml"
    path.write_text(
        "family: mine\n"
        "models:\n"
        "  - id: my-qwen3-8b-finetune\n"
        "    name: My fine-tune\n"
        "    repo: me/qwen3-8b-ft\n"
        "    same_architecture_as: qwen3-8b\n"
        "    params: {total: 8.2e9}\n"
        "    context: {native: 32768}\n"
        "    variants: [{quant: bf16, format: bf16, repo: me/qwen3-8b-ft}]\n"
    )
    res = run("recipes", "validate", str(path))
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == f"ok  {path}: 1 models, 1 variants"


def test_broken_user_recipe_stops_other_commands(tmp_path: Path, isolated_env: Path) -> None:
    """A broken file in the user config dir is named by every command that loads recipes."""
    user = isolated_env / "config" / "recipes"
    user.mkdir(parents=True)
    data = _shipped()
    _unknown_format(data)
    _write(user, data)
    res = run("recipes", "show", "qwen3-coder")
    assert res.exit_code == 2
    assert res.stderr.startswith("Error: qwen3-coder.yaml: models[0].variants[2].format: ")
    assert "deploy recipes validate" in res.stderr
