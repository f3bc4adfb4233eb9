"""Names people type resolve through the real `deploy recipes show/list` (JSON output)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.clihelp import run


def _show(name: str) -> Any:
    res = run("recipes", "show", name, "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


def test_family_name_gives_all_sizes() -> None:
    docs = _show("qwen3-coder")
    assert [d["id"] for d in docs] == [
        "qwen3-coder-30b-a3b",
        "qwen3-coder-480b-a35b",
        "qwen3-coder-next",
    ]
    assert all(d["family"] == "qwen3-coder" for d in docs)


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("qwen3-coder:30b", "qwen3-coder-30b-a3b"),
        ("qwen3-coder:480b", "qwen3-coder-480b-a35b"),
        ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "qwen3-coder-30b-a3b"),
        ("qwen/qwen3-coder-30b-a3b-instruct", "qwen3-coder-30b-a3b"),
        ("Qwen3-Coder-30B-A3B-Instruct", "qwen3-coder-30b-a3b"),
        ("QWEN3 Coder 30B A3B", "qwen3-coder-30b-a3b"),
        ("qwen3_coder_30b_a3b", "qwen3-coder-30b-a3b"),
        ("Qwen3Coder30BA3B", "qwen3-coder-30b-a3b"),
        ("  qwen3-coder-30b-a3b  ", "qwen3-coder-30b-a3b"),
        ("openai/gpt-oss-120b", "gpt-oss-120b"),
        ("gpt-oss:20b", "gpt-oss-20b"),
        ("MiniMax M2.5", "minimax-m2.5"),
        ("MiniMaxAI/MiniMax-M2.1", "minimax-m2.1"),
        ("llama4:maverick", "llama-4-maverick"),
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "llama-4-scout"),
        ("DeepSeek-V3.2", "deepseek-v3.2"),
        ("gemma3:12b", "gemma-3-12b"),
        ("kimi-k2", "kimi-k2-instruct"),
        ("GLM 4.7 Flash", "glm-4.7-flash"),
        ("phi4:14b", "phi-4"),
    ],
)
def test_model_names(name: str, model_id: str) -> None:
    doc = _show(name)
    assert isinstance(doc, dict)
    assert doc["id"] == model_id


@pytest.mark.parametrize(
    ("name", "variant", "repo"),
    [
        ("qwen3-coder-30b-a3b:q4_k_m", "qwen3-coder-30b-a3b:q4_k_m", "unsloth/"),
        ("qwen3-coder-30b-a3b:Q4_K_M", "qwen3-coder-30b-a3b:q4_k_m", "unsloth/"),
        ("qwen3-coder-30b-a3b:q4_k_m@unsloth", "qwen3-coder-30b-a3b:q4_k_m", "unsloth/"),
        (
            "qwen3-coder-30b-a3b:q4_k_m@lmstudio-community",
            "qwen3-coder-30b-a3b:q4_k_m@lmstudio-community",
            "lmstudio-community/",
        ),
        ("Qwen3-Coder-30B-A3B:FP8", "qwen3-coder-30b-a3b:fp8", "Qwen/"),
        ("qwen3-coder:30b:q8_0", "qwen3-coder-30b-a3b:q8_0", "unsloth/"),
        ("gpt-oss-20b:mxfp4", "gpt-oss-20b:mxfp4", "ggml-org/"),
        ("gpt-oss-20b:mxfp4@openai", "gpt-oss-20b:mxfp4@openai", "openai/"),
    ],
)
def test_variant_names(name: str, variant: str, repo: str) -> None:
    doc = _show(name)
    assert [v["id"] for v in doc["variants"]] == [variant]
    assert doc["variants"][0]["repo"].startswith(repo)


def test_variant_document_carries_files_and_sizes() -> None:
    doc = _show("qwen3-coder-30b-a3b:q4_k_m")
    (v,) = doc["variants"]
    assert v["format"] == "gguf"
    assert v["files"] == [
        {"name": "Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf", "size": 18_556_689_568}
    ]
    assert v["total_size"] == 18_556_689_568


def test_deepseek_r2_not_found_with_closest_real_models() -> None:
    res = run("recipes", "show", "deepseek-r2")
    assert res.exit_code == 4
    assert res.stdout == ""
    assert "DeepSeek-R2 has no public weights" in res.stderr
    assert "Closest real models: deepseek-v3.2 (deepseek-ai/DeepSeek-V3.2)" in res.stderr
    assert "deepseek-v4-flash (deepseek-ai/DeepSeek-V4-Flash)" in res.stderr


@pytest.mark.parametrize("name", ["DeepSeek R2", "deepseek-ai/DeepSeek-R2", "deepseek:r2"])
def test_deepseek_r2_spellings(name: str) -> None:
    res = run("recipes", "show", name)
    assert res.exit_code == 4
    assert "no public weights" in res.stderr


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("qwen3-coderr", "'qwen3-coder'"),
        ("qwen3-coder-31b", "'qwen3-coder-30b-a3b'"),
        ("deepseek-r3", "'deepseek-r1'"),
        ("gemma-3-72b", "'gemma-3-27b'"),
    ],
)
def test_unknown_name_did_you_mean(name: str, suggestion: str) -> None:
    res = run("recipes", "show", name)
    assert res.exit_code == 4
    assert f"no recipe matches {name!r}" in res.stderr
    assert "Did you mean" in res.stderr
    assert suggestion in res.stderr


def test_nothing_close_points_to_list() -> None:
    res = run("recipes", "show", "zzzzzz")
    assert res.exit_code == 4
    assert "Try: deploy recipes list" in res.stderr


def test_unknown_quant_lists_the_variants() -> None:
    res = run("recipes", "show", "llama-4-scout:q3_k_s")
    assert res.exit_code == 4
    assert "llama-4-scout has no variant 'q3_k_s'" in res.stderr
    assert "llama-4-scout:fp8" in res.stderr


def test_list_json() -> None:
    res = run("recipes", "list", "--json")
    assert res.exit_code == 0, res.stderr
    rows = json.loads(res.stdout)
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows)
    row = by_id["qwen3-coder-30b-a3b"]
    assert row == {
        "id": "qwen3-coder-30b-a3b",
        "family": "qwen3-coder",
        "name": "Qwen3-Coder-30B-A3B-Instruct",
        "params_total": 30.5e9,
        "params_active": 3.3e9,
        "formats": ["bf16", "fp8", "gguf"],
        "context": 262144,
        "variants": 6,
    }
    assert "deepseek-r2" not in by_id
    assert {"gpt-oss-120b", "minimax-m2.5", "phi-4", "llama-4-maverick"} <= set(by_id)


def test_list_table() -> None:
    res = run("recipes", "list")
    assert res.exit_code == 0
    assert "qwen3-coder-30b-a3b" in res.stdout
    assert "256K" in res.stdout


def test_show_json_reports_borrowed_architecture() -> None:
    doc = _show("minimax-m2")
    assert doc["same_architecture_as"] == "minimax-m2.5"
    assert doc["architecture_from"] == "minimax-m2.5"
    assert doc["architecture"]["layers"] == 62
    assert doc["derived"] == {"kv_bytes_per_token_f16": 253_952, "global_layers": 62}


def test_show_text() -> None:
    res = run("recipes", "show", "gpt-oss-120b")
    assert res.exit_code == 0, res.stderr
    text = " ".join(res.stdout.split())  # the console wraps long lines
    assert "gpt-oss-120b:mxfp4@openai" in text
    assert "sliding 128 + global layers" in text
    assert "--tool-call-parser openai" in text
    assert "59.0 GiB" in text  # 63,387,346,464 bytes
    assert "KV cache (f16): 36,864 bytes/token in 18 full-context layers" in text
