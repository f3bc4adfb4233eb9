"""Shared set-up for the store tests: a test recipe and a loopback hub serving SmolLM2.

The hub repos hold the real SmolLM2-135M GGUF (fixture `smollm2_gguf`):
- `test-org/Tiny-GGUF`: the file under its real name (the recipe lists name, size, sha256);
- `test-org/Tiny-Split-GGUF`: the same bytes cut into a 3-way `-0000N-of-00003` split set,
  beside decoys the quant resolver must not pick (another quant, an `UD-` quant, an mmproj);
- `gated-org/Tiny-Gated-GGUF`: gated, readable with the token `hf_granted`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hubserver import HubServer

SMOL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SIZE = 98362432
SMOL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
TOKEN = "hf_granted"

RECIPE = f"""\
schema_version: 1
family: storetest
models:
  - id: storetest-tiny
    name: Store test model (SmolLM2-135M bytes)
    repo: test-org/Tiny
    params: {{total: 135e6}}
    context: {{native: 8192}}
    variants:
      - quant: q4_1
        format: gguf
        repo: test-org/Tiny-GGUF
        files: [{{name: {SMOL_NAME}, size: {SMOL_SIZE}, sha256: {SMOL_SHA256}}}]
      - quant: q4_k_m
        format: gguf
        repo: test-org/Tiny-Split-GGUF
      - quant: q8_0
        format: gguf
        repo: gated-org/Tiny-Gated-GGUF
      - quant: bf16
        format: bf16
        repo: test-org/Tiny-ST
      - quant: q4_0
        format: gguf
        repo: test-org/Tiny-Q4-GGUF
"""

#: A safetensors repo: what a bf16 pull must take, and what it must leave.
ST_WANTED = {
    "model-00001-of-00002.safetensors": b"ST1" * 1000,
    "model-00002-of-00002.safetensors": b"ST2" * 1000,
    "model.safetensors.index.json": b'{"weight_map": {}}',
    "config.json": b'{"model_type": "llama"}',
    "generation_config.json": b"{}",
    "tokenizer.json": b'{"version": "1.0"}',
    "tokenizer_config.json": b'{"model_max_length": 8192}',
    "special_tokens_map.json": b'{"eos_token": "<|im_end|>"}',
}
ST_UNWANTED = {
    "README.md": b"# readme",
    "consolidated.safetensors": b"dup" * 1000,
    "onnx/model.onnx": b"onnx",
    "pytorch_model.bin": b"bin",
    ".gitattributes": b"*.safetensors filter=lfs",
}

SPLIT_NAMES = [f"Tiny-Q4_K_M-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]


def split_parts(data: bytes) -> list[bytes]:
    third = len(data) // 3
    return [data[:third], data[third : 2 * third], data[2 * third :]]


@pytest.fixture
def test_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "recipes"
    d.mkdir()
    (d / "storetest.yaml").write_text(RECIPE)
    monkeypatch.setenv("DEPLOY_RECIPES_PATH", str(d))
    return d


@pytest.fixture
def hub(
    smollm2_gguf: Path, test_recipe: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[HubServer]:
    data = smollm2_gguf.read_bytes()
    with HubServer() as server:
        server.add_repo("test-org/Tiny-GGUF", {SMOL_NAME: smollm2_gguf, "README.md": b"# Tiny\n"})
        split: dict[str, Path | bytes] = dict(zip(SPLIT_NAMES, split_parts(data), strict=True))
        split["Tiny-Q8_0.gguf"] = b"GGUF-q8-decoy"
        split["Tiny-UD-Q4_K_M.gguf"] = b"GGUF-ud-decoy"
        split["mmproj-Tiny-Q4_K_M.gguf"] = b"GGUF-mmproj-decoy"
        split["config.json"] = b"{}"
        server.add_repo("test-org/Tiny-Split-GGUF", split)
        server.add_repo(
            "gated-org/Tiny-Gated-GGUF",
            {"Tiny-Q8_0.gguf": b"GGUF-gated"},
            gated=True,
            tokens=(TOKEN,),
        )
        server.add_repo("test-org/Tiny-ST", {**ST_WANTED, **ST_UNWANTED})
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server
