"""Planner inputs other than recipes: a config-only folder (any --quant) and a hub repo read
through huggingface_hub against a loopback hub (headers only, no weights downloaded)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.clihelp import run
from tests.hubserver import HubServer
from toolkit.api.plan import make_plans

GiB = 1024**3

#: Llama-3.1-8B's config.json (meta-llama/Llama-3.1-8B-Instruct, 8.03 B parameters).
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "rms_norm_eps": 1e-5,
}


def test_config_only_folder_in_any_format(tmp_path: Path) -> None:
    folder = tmp_path / "llama-8b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA31_8B))
    res = run("estimate", str(folder), "--quant", "q4_k_m", "--hw", "1xrtx4090,ram=64G", "--json")
    assert res.exit_code == 0, res.stderr
    q4 = json.loads(res.stdout)
    assert q4["engine"] == "llamacpp"
    # 8.03 B parameters × 4.86 bits
    assert q4["weights_bytes"] == pytest.approx(8.03e9 * 4.86 / 8, rel=0.02)
    assert q4["kv_bytes_per_token"] == 32 * 2 * 8 * 128 * 2
    res = run("estimate", str(folder), "--quant", "fp8", "--hw", "1xrtx4090,ram=64G", "--json")
    fp8 = json.loads(res.stdout)
    assert fp8["engine"] == "vllm" and "w8a8" in fp8["kernel"]
    assert fp8["weights_bytes"] < q4["weights_bytes"] * 2


def _safetensors_header(tensors: dict[str, tuple[str, list[int]]]) -> tuple[bytes, int]:
    size = {"BF16": 2, "F32": 4}
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = size[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob, offset


def test_hub_repo_is_planned_from_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {
        **LLAMA31_8B,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "vocab_size": 1024,
        "max_position_embeddings": 4096,
    }
    h, f, v, kv = 256, 512, 1024, 2 * 64
    tensors: dict[str, tuple[str, list[int]]] = {
        "model.embed_tokens.weight": ("BF16", [v, h]),
        "lm_head.weight": ("BF16", [v, h]),
        "model.norm.weight": ("BF16", [h]),
    }
    for i in range(2):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": ("BF16", [h, h]),
            p + "self_attn.k_proj.weight": ("BF16", [kv, h]),
            p + "self_attn.v_proj.weight": ("BF16", [kv, h]),
            p + "self_attn.o_proj.weight": ("BF16", [h, h]),
            p + "mlp.gate_proj.weight": ("BF16", [f, h]),
            p + "mlp.up_proj.weight": ("BF16", [f, h]),
            p + "mlp.down_proj.weight": ("BF16", [h, f]),
            p + "input_layernorm.weight": ("BF16", [h]),
            p + "post_attention_layernorm.weight": ("BF16", [h]),
        }
    head, data_bytes = _safetensors_header(tensors)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(head)
    with weights.open("r+b") as fh:
        fh.truncate(len(head) + data_bytes)
    with HubServer() as hub:
        hub.add_repo(
            "acme/tiny-llama",
            {"config.json": json.dumps(cfg).encode(), "model.safetensors": weights},
        )
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        result = make_plans("acme/tiny-llama", hw="1xrtx4090,ram=64G", calibration=[])
        body_gets = [r for r in hub.gets("model.safetensors") if r.range is None or "0-" in r.range]
    plan = result.plans[0]
    assert plan.engine == "vllm" and plan.weights_bytes == data_bytes
    # only headers were read: no request fetched the tensor data in full
    assert all(r.range is not None for r in body_gets)
