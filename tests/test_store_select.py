"""Which files make up a variant when the recipe does not list them (repo listings)."""

from __future__ import annotations

import pytest

from toolkit.catalog.schema import Variant
from toolkit.errors import NotFound, UsageError
from toolkit.store.select import select_files, select_gguf


def gguf(quant: str) -> Variant:
    return Variant(quant=quant, format="gguf", repo="o/r")


LISTING = [
    "README.md",
    "Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf",
    "Qwen3-Coder-30B-A3B-Instruct-UD-Q4_K_XL.gguf",
    "Qwen3-Coder-30B-A3B-Instruct-UD-Q4_K_M.gguf",
    "Qwen3-Coder-30B-A3B-Instruct-Q4_K_S.gguf",
    "Qwen3-Coder-30B-A3B-Instruct-Q8_0.gguf",
    "Q8_0/Big-Q8_0-00002-of-00002.gguf",
    "Q8_0/Big-Q8_0-00001-of-00002.gguf",
    "BF16/Big-BF16-00001-of-00003.gguf",
    "BF16/Big-BF16-00002-of-00003.gguf",
    "mmproj-F16.gguf",
]


@pytest.mark.parametrize(
    ("quant", "expected"),
    [
        ("q4_k_m", ["Qwen3-Coder-30B-A3B-Instruct-Q4_K_M.gguf"]),
        ("ud-q4_k_xl", ["Qwen3-Coder-30B-A3B-Instruct-UD-Q4_K_XL.gguf"]),
        ("ud-q4_k_m", ["Qwen3-Coder-30B-A3B-Instruct-UD-Q4_K_M.gguf"]),
        ("q4_k_s", ["Qwen3-Coder-30B-A3B-Instruct-Q4_K_S.gguf"]),
    ],
)
def test_quant_names_match_between_separators(quant: str, expected: list[str]) -> None:
    assert select_gguf(LISTING, quant, "o/r") == expected


def test_single_file_and_split_set_for_the_same_quant_is_ambiguous() -> None:
    with pytest.raises(UsageError) as exc:
        select_gguf(LISTING, "q8_0", "o/r")
    assert "several GGUF sets" in exc.value.message


def test_split_set_in_a_folder_is_returned_in_shard_order() -> None:
    listing = [n for n in LISTING if "Instruct-Q8_0" not in n]
    assert select_gguf(listing, "q8_0", "o/r") == [
        "Q8_0/Big-Q8_0-00001-of-00002.gguf",
        "Q8_0/Big-Q8_0-00002-of-00002.gguf",
    ]


def test_incomplete_split_set_is_not_a_match() -> None:
    with pytest.raises(NotFound):
        select_gguf(LISTING, "bf16", "o/r")


def test_projector_is_never_weights() -> None:
    with pytest.raises(NotFound):
        select_gguf(["mmproj-Q4_K_M.gguf"], "q4_k_m", "o/r")


def test_recipe_listed_files_win() -> None:
    v = Variant.model_validate(
        {"quant": "q4_k_m", "format": "gguf", "repo": "o/r", "files": [{"name": "x.gguf"}]}
    )
    assert select_files(v, LISTING, "o/r") == ["x.gguf"]


def test_safetensors_without_weights_is_not_found() -> None:
    v = Variant(quant="bf16", format="bf16", repo="o/r")
    with pytest.raises(NotFound):
        select_files(v, ["config.json", "model.gguf"], "o/r")
