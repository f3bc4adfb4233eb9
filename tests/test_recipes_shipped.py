"""The shipped recipes: every file validates, and the memory facts match model-facts.yaml.

The expected KV figures are COPIED from shared/reference/model-facts.yaml (`derived:`) and
the errata at the end of model-facts.md, not computed from the recipes: a wrong layer
count, head count or layer pattern in a recipe makes these tests fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clihelp import run
from toolkit.catalog import load_catalog, parse_recipe
from toolkit.catalog.loader import Catalog, shipped_recipes_dir
from toolkit.catalog.schema import variant_id
from toolkit.planner.kv import global_kv_bytes_per_token, local_kv_bytes

SHIPPED = sorted(shipped_recipes_dir().glob("*.yaml"))

#: f16 KV bytes per token of the layers that keep a full-context cache (B/token).
#: model-facts.yaml `derived.kv_bytes_per_token_bf16` per model / per size; for sliding and
#: chunked models the figure of the global layers only; errata where they override.
EXPECTED_KV_F16: dict[str, int] = {
    # Qwen3-Coder
    "qwen3-coder-480b-a35b": 253_952,
    "qwen3-coder-30b-a3b": 98_304,
    "qwen3-coder-next": 24_576,  # 12 gated-attention layers of 48
    # DeepSeek (MLA: 61 x (512 + 64) x 2)
    "deepseek-r1": 70_272,
    "deepseek-r1-0528": 70_272,
    "deepseek-v3.1": 70_272,
    "deepseek-v3.1-terminus": 70_272,
    "deepseek-v3-0324": 70_272,
    "deepseek-v3.2": 85_888,  # errata: + the 128-element indexer key per layer
    "deepseek-r1-0528-qwen3-8b": 147_456,  # a Qwen3-8B distill: the qwen3-8b figure
    # MiniMax M2.x: full attention in all 62 layers
    "minimax-m2": 253_952,
    "minimax-m2.1": 253_952,
    "minimax-m2.5": 253_952,
    "minimax-m2.7": 253_952,
    # Llama 4: 12 global NoPE layers (kv_bytes_per_token_bf16_global_layers)
    "llama-4-scout": 49_152,
    "llama-4-maverick": 49_152,
    # gpt-oss: full-attention layers only (sliding window 128 in the others)
    "gpt-oss-20b": 24_576,
    "gpt-oss-120b": 36_864,
    # GLM
    "glm-4.5": 376_832,
    "glm-4.6": 376_832,
    "glm-4.7": 376_832,
    "glm-4.5-air": 188_416,
    "glm-4.7-flash": 54_144,  # errata: glm4_moe_lite MLA, 47 x 576 x 2
    # Kimi K2 (MLA)
    "kimi-k2-instruct": 70_272,
    "kimi-k2-thinking": 70_272,
    # Qwen3
    "qwen3-8b": 147_456,
    "qwen3-32b": 262_144,
    "qwen3-235b-a22b": 192_512,
    "qwen3-235b-a22b-instruct-2507": 192_512,
    "qwen3-235b-a22b-thinking-2507": 192_512,
    "qwen3-next-80b-a3b-instruct": 24_576,
    "qwen3-next-80b-a3b-thinking": 24_576,
    # Gemma 3: global layers only (window 1024 in the others)
    "gemma-3-4b": 20_480,
    "gemma-3-12b": 65_536,
    "gemma-3-27b": 81_920,
    # Mistral Small (derived for the 24B shapes)
    "mistral-small-3.2": 163_840,
    "devstral-small-2": 163_840,  # its text decoder: 40 x 2 x 8 x 128 x 2
    # Granite 4.0 H: 4 attention layers of 40 (the rest Mamba2): 4 x 2 x 4 x 128 x 2
    "granite-4.0-h-tiny": 8_192,
    "qwen3-embedding-0.6b": 114_688,  # 28 x 2 x 8 x 128 x 2
    "mistral-small-24b-2501": 163_840,
    # Llama 3.1 / 3.3
    "llama-3.1-8b": 131_072,
    "llama-3.1-70b": 327_680,
    "llama-3.3-70b": 327_680,
    # Phi-4
    "phi-4": 204_800,
    # SmolLM2
    "smollm2-135m": 23_040,
    "smollm2-360m": 40_960,
    "smollm2-1.7b": 196_608,
}

#: Models shipped without an architecture, each for a stated reason (see the recipe note).
NO_ARCHITECTURE = {
    "deepseek-v4-flash": "compressed attention (CSA+HCA) not expressible",
    "deepseek-v4-flash-0731": "compressed attention (CSA+HCA) not expressible",
    "devstral-2": "no source gives its intermediate_size and vocab_size",
}

#: Families the catalog must cover (issue 2).
FAMILIES = {
    "qwen3-coder",
    "minimax",
    "llama4",
    "deepseek",
    "gpt-oss",
    "glm",
    "kimi",
    "qwen3",
    "gemma3",
    "mistral",
    "llama3",
    "phi",
    "smollm2",
}


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    """Only the shipped recipes (no user dirs)."""
    return load_catalog(())


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_recipe_validates(path: Path) -> None:
    recipe = parse_recipe(path)
    assert recipe.models or recipe.unavailable
    res = run("recipes", "validate", str(path))
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith(f"ok  {path}")


def test_validate_without_arguments_checks_every_shipped_file() -> None:
    res = run("recipes", "validate")
    assert res.exit_code == 0, res.stderr
    assert len(res.stdout.splitlines()) == len(SHIPPED)


def test_catalog_covers_the_families(shipped: Catalog) -> None:
    assert set(shipped.families) >= FAMILIES


@pytest.mark.parametrize("model_id", sorted(EXPECTED_KV_F16))
def test_global_kv_bytes_per_token_matches_model_facts(shipped: Catalog, model_id: str) -> None:
    arch = shipped.models[model_id].model.architecture
    assert arch is not None, f"{model_id} has no architecture"
    assert global_kv_bytes_per_token(arch, "f16") == EXPECTED_KV_F16[model_id]


def test_every_architecture_has_an_expected_figure(shipped: Catalog) -> None:
    """A new model with an architecture must add its model-facts figure above."""
    with_arch = {m for m, e in shipped.models.items() if e.model.architecture is not None}
    assert with_arch == set(EXPECTED_KV_F16)
    without = {m for m, e in shipped.models.items() if e.model.architecture is None}
    assert without == set(NO_ARCHITECTURE)
    for mid in without:
        assert shipped.models[mid].model.note, f"{mid} must say why it has no architecture"


def test_mtp_layer_adds_one_cached_layer(shipped: Catalog) -> None:
    """Errata: MTP layers add one cached layer when used (DeepSeek V3 71,424; GLM-4.5 380,928)."""
    for mid, expected in {"deepseek-r1": 71_424, "glm-4.5": 380_928}.items():
        arch = shipped.models[mid].model.architecture
        assert arch is not None
        per_layer = global_kv_bytes_per_token(arch, "f16") / arch.layers
        assert (arch.layers + arch.mtp_layers) * per_layer == expected


def test_llama4_chunked_layers_fixed_cache(shipped: Catalog) -> None:
    """Errata: chunked layers add ≈1.125 GiB per sequence at ≥ 8192 tokens (f16)."""
    for mid in ("llama-4-scout", "llama-4-maverick"):
        arch = shipped.models[mid].model.architecture
        assert arch is not None
        assert arch.global_layer_indices() == tuple(range(3, 48, 4))
        assert local_kv_bytes(arch, 8192, "f16") == 1.125 * 2**30
        assert local_kv_bytes(arch, 100_000, "f16") == 1.125 * 2**30


def test_layer_patterns(shipped: Catalog) -> None:
    """gpt-oss: full layers are the odd ones; Gemma 3: 5, 11, 17, …; Qwen3-Next: 3, 7, …."""
    gpt = shipped.models["gpt-oss-20b"].model.architecture
    gemma = shipped.models["gemma-3-27b"].model.architecture
    nxt = shipped.models["qwen3-next-80b-a3b-instruct"].model.architecture
    assert gpt is not None and gemma is not None and nxt is not None
    assert gpt.global_layer_indices() == tuple(range(1, 24, 2))
    assert gemma.global_layer_indices() == (5, 11, 17, 23, 29, 35, 41, 47, 53, 59)
    assert nxt.global_layer_indices() == tuple(range(3, 48, 4))


def test_same_architecture_as_borrows_the_architecture(shipped: Catalog) -> None:
    m21 = shipped.models["minimax-m2.1"]
    assert m21.architecture_from == "minimax-m2.5"
    assert m21.model.architecture == shipped.models["minimax-m2.5"].model.architecture
    distill = shipped.models["deepseek-r1-0528-qwen3-8b"]
    assert distill.architecture_from == "qwen3-8b"  # across files


def test_variant_ids_unique_across_catalog(shipped: Catalog) -> None:
    seen: dict[str, str] = {}
    for mid, entry in shipped.models.items():
        for v in entry.model.variants:
            vid = variant_id(entry.model, v)
            assert vid not in seen, f"{vid} in {mid} and {seen[vid]}"
            seen[vid] = mid


def test_published_sizes(shipped: Catalog) -> None:
    """Exact GGUF bytes from model-facts.yaml (LlamaBarn / llama.app catalogs)."""
    expected = {
        "qwen3-coder-30b-a3b:q4_k_m": 18_556_689_568,
        "gpt-oss-20b:mxfp4": 12_109_566_560,
        "gpt-oss-120b:mxfp4": 63_387_346_464,
        "gemma-3-4b:q4_0": 2_526_080_992,
        "gemma-3-12b:q4_0": 7_131_017_792,
        "gemma-3-27b:q4_0": 15_908_791_488,
        "qwen3-235b-a22b-instruct-2507:q4_k_m": 142_154_074_880,
        "qwen3-235b-a22b-instruct-2507:q8_0": 249_940_106_336,
        "devstral-small-2:q8_0": 25_055_308_352,
        "devstral-small-2:q4_k_m": 14_334_446_752,
        "devstral-2:q8_0": 132_854_938_656,
        "devstral-2:q4_k_m": 74_897_662_400,
        "glm-4.7-flash:q8_0": 31_842_799_232,
    }
    sizes = {
        variant_id(e.model, v): v.total_size()
        for e in shipped.models.values()
        for v in e.model.variants
    }
    for vid, size in expected.items():
        assert sizes[vid] == size, vid


def test_split_gguf_lists_every_part(shipped: Catalog) -> None:
    entry = shipped.models["gpt-oss-120b"]
    gguf = next(v for v in entry.model.variants if v.format == "gguf")
    assert [f.name for f in gguf.files] == [
        f"gpt-oss-120b-mxfp4-0000{i}-of-00003.gguf" for i in (1, 2, 3)
    ]


def test_vllm_constraints(shipped: Catalog) -> None:
    def fp8(mid: str) -> tuple[int | None, int | None]:
        v = next(v for v in shipped.models[mid].model.variants if v.quant == "fp8")
        assert v.vllm is not None
        return v.vllm.max_tp, v.vllm.tp_divides

    assert fp8("qwen3-coder-480b-a35b") == (4, 20)
    assert fp8("qwen3-235b-a22b") == (4, 12)
    assert fp8("minimax-m2.5") == (4, 12)


def test_deepseek_r2_is_unavailable_with_real_suggestions(shipped: Catalog) -> None:
    gone = shipped.unavailable["deepseek-r2"]
    assert gone.suggest == ("deepseek-v3.2", "deepseek-v4-flash")
    assert all(s in shipped.models for s in gone.suggest)
    assert "deepseek-r2" not in shipped.models
