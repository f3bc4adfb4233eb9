"""`deploy --help` and `deploy plan` start fast: they never import the engines, the hub
client, HTTP or numerical libraries (each costs tens to thousands of milliseconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Modules `deploy --help` and `deploy plan` must not import.
HEAVY = (
    "torch",
    "vllm",
    "llama_cpp",
    "huggingface_hub",
    "openai",
    "httpx",
    "requests",
    "numpy",
    "gguf",
    "psutil",
    "transformers",
)

CHILD = """
import json, sys
from toolkit.cli.main import main
try:
    main(sys.argv[2:])
except SystemExit:
    pass
with open(sys.argv[1], "w") as f:
    json.dump(sorted(sys.modules), f)
"""


def _modules(tmp_path: Path, *args: str) -> set[str]:
    out = tmp_path / "modules.json"
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), *args], capture_output=True, text=True
    )
    assert out.exists(), res.stderr
    return {name.split(".")[0] for name in json.loads(out.read_text())}


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("plan", "--help"),
        ("plan", "qwen3-coder", "--hw", "1xrtx4090,ram=64G"),
        ("plan", "qwen3-coder", "--hw", "1xrtx4090,ram=64G", "--json"),
    ],
)
def test_no_heavy_imports(tmp_path: Path, args: tuple[str, ...]) -> None:
    loaded = _modules(tmp_path, *args)
    assert "toolkit" in loaded
    assert sorted(loaded.intersection(HEAVY)) == []


def test_help_imports_neither_pydantic_nor_yaml(tmp_path: Path) -> None:
    loaded = _modules(tmp_path, "--help")
    assert sorted(loaded.intersection({"pydantic", "yaml", "rich"})) == []


def test_plan_with_a_warm_catalog_cache_does_not_parse_recipes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recipes parse once; then the cached catalog serves `deploy plan` (no PyYAML for
    recipes; the GPU table may still read its own YAML, so check the loader instead)."""
    child = CHILD.replace(
        "from toolkit.cli.main import main",
        "from toolkit.catalog import loader\n"
        "loader._RACY_S = 0.0\n"
        "parsed = []\n"
        "real = loader.parse_recipe\n"
        "loader.parse_recipe = lambda p: parsed.append(p.name) or real(p)\n"
        "from toolkit.cli.main import main",
    ).replace("json.dump(sorted(sys.modules), f)", "json.dump(parsed, f)")
    out = tmp_path / "parsed.json"
    args = [sys.executable, "-c", child, str(out), "plan", "qwen3-coder", "--json"]
    args += ["--hw", "1xrtx4090,ram=64G"]
    first = subprocess.run(args, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert json.loads(out.read_text())  # parsed and cached
    second = subprocess.run(args, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert json.loads(out.read_text()) == []
    assert json.loads(second.stdout) == json.loads(first.stdout)


def test_plan_from_the_warm_caches_imports_neither_pydantic_nor_yaml(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recipes are validated (pydantic) and GPU specs parsed (PyYAML) once; later plans read
    the compiled records and the remembered GGUF layouts."""
    monkeypatch.delenv("DEPLOY_CACHE_DIR", raising=False)
    args = ("plan", "qwen3-coder", "--hw", "1xrtx4090,ram=64G")
    first = _modules(tmp_path, *args)
    assert "pydantic" in first  # built the catalog
    assert (isolated_env / "cache" / "gguf-layouts.pickle").is_file()
    warm = _modules(tmp_path, *args)
    assert sorted(warm.intersection({"pydantic", "yaml"})) == []
    assert "toolkit" in warm
