"""Local Hugging Face folders: config.json → Architecture, safetensors headers → exact bytes.

The folders are fabricated at full size (real headers, sparse data): Qwen3-Coder-30B in
bf16 (13 shards + index), DeepSeek V3 in FP8 (weights + 128×128 block scales, MTP layer),
gpt-oss-120b in MXFP4. Configs carry the keys the real config.json files use.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fabricate import hf_tensors, write_safetensors_dir
from test_inspect_params import (
    DEEPSEEK_V3,
    GPT_OSS_20B,
    GPT_OSS_120B,
    QWEN3_CODER_30B,
    QWEN3_NEXT,
)

from toolkit.catalog.schema import Architecture
from toolkit.errors import NotFound
from toolkit.inspect import load_model_source
from toolkit.inspect.hf import read_model_dir
from toolkit.inspect.hfconfig import architecture_from_config, format_from_config
from toolkit.inspect.layout import estimate_layout
from toolkit.inspect.params import param_breakdown
from toolkit.inspect.quant import bits_per_weight

QWEN3_CODER_30B_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "hidden_size": 2048,
    "intermediate_size": 5472,
    "moe_intermediate_size": 768,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "vocab_size": 151936,
    "max_position_embeddings": 262144,
    "rope_theta": 10000000,
    "sliding_window": None,
    "use_sliding_window": False,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
DEEPSEEK_V3_CONFIG: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_experts_per_tok": 8,
    "first_k_dense_replace": 3,
    "moe_layer_freq": 1,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "num_nextn_predict_layers": 1,
    "vocab_size": 129280,
    "max_position_embeddings": 163840,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "quantization_config": {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [128, 128],
    },
}
GPT_OSS_120B_CONFIG: dict[str, Any] = {
    "architectures": ["GptOssForCausalLM"],
    "model_type": "gpt_oss",
    "hidden_size": 2880,
    "intermediate_size": 2880,
    "num_hidden_layers": 36,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "num_local_experts": 128,
    "num_experts_per_tok": 4,
    "experts_per_token": 4,
    "vocab_size": 201088,
    "sliding_window": 128,
    "layer_types": ["sliding_attention", "full_attention"] * 18,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "quantization_config": {"quant_method": "mxfp4"},
}
GEMMA3_27B_CONFIG: dict[str, Any] = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "model_type": "gemma3",
    "text_config": {
        "model_type": "gemma3_text",
        "hidden_size": 5376,
        "intermediate_size": 21504,
        "num_hidden_layers": 62,
        "num_attention_heads": 32,
        "num_key_value_heads": 16,
        "head_dim": 128,
        "sliding_window": 1024,
        "sliding_window_pattern": 6,
        "vocab_size": 262208,
        "max_position_embeddings": 131072,
    },
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152},
    "torch_dtype": "bfloat16",
}
QWEN3_NEXT_CONFIG: dict[str, Any] = {
    "model_type": "qwen3_next",
    "hidden_size": 2048,
    "intermediate_size": 5120,
    "moe_intermediate_size": 512,
    "shared_expert_intermediate_size": 512,
    "num_hidden_layers": 48,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "head_dim": 256,
    "num_experts": 512,
    "num_experts_per_tok": 10,
    "full_attention_interval": 4,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 32,
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "linear_conv_kernel_dim": 4,
    "vocab_size": 151936,
    "max_position_embeddings": 262144,
    "tie_word_embeddings": False,
}


def _plain(arch: Architecture) -> Architecture:
    return arch.model_copy(update={"source": None})


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (QWEN3_CODER_30B_CONFIG, QWEN3_CODER_30B),
        (DEEPSEEK_V3_CONFIG, DEEPSEEK_V3),
        (GPT_OSS_120B_CONFIG, GPT_OSS_120B.model_copy(update={"local_attention": None})),
        (QWEN3_NEXT_CONFIG, QWEN3_NEXT),
    ],
    ids=["qwen3-coder-30b", "deepseek-v3", "gpt-oss-120b", "qwen3-next"],
)
def test_config_json_gives_the_architecture(config: dict[str, Any], expected: Architecture) -> None:
    arch = _plain(architecture_from_config(config))
    if expected.model_type == "gpt_oss":
        # layer_types names the full layers explicitly: the same layers as every-2nd-from-1
        assert arch.global_layer_indices() == GPT_OSS_120B.global_layer_indices()
        assert arch.local_attention is not None and arch.local_attention.window == 128
        arch = arch.model_copy(update={"local_attention": None})
    assert arch == expected


def test_gemma3_text_config_inside_the_multimodal_wrapper() -> None:
    arch = architecture_from_config(GEMMA3_27B_CONFIG)
    assert arch.model_type == "gemma3"
    assert arch.layers == 62 and arch.hidden_size == 5376 and arch.head_dim == 128
    assert arch.tied_embeddings  # Gemma's class default
    assert arch.global_layer_indices()[:3] == (5, 11, 17)
    assert len(arch.global_layer_indices()) == 10
    local = arch.local_attention
    assert local is not None and local.kind == "sliding" and local.window == 1024


def test_weight_formats_from_quantization_config() -> None:
    assert format_from_config(QWEN3_CODER_30B_CONFIG) == "bf16"
    assert format_from_config(DEEPSEEK_V3_CONFIG) == "fp8"
    assert format_from_config(GPT_OSS_120B_CONFIG) == "mxfp4"
    assert format_from_config({"quantization_config": {"quant_method": "awq"}}) == "awq"
    assert format_from_config({"torch_dtype": "float16"}) == "fp16"
    nvfp4 = {"quantization_config": {"quant_method": "modelopt", "quant_algo": "NVFP4"}}
    assert format_from_config(nvfp4) == "nvfp4"


def test_bf16_checkpoint_is_two_bytes_per_parameter(tmp_path: Path) -> None:
    arch = QWEN3_CODER_30B
    shards = write_safetensors_dir(tmp_path, QWEN3_CODER_30B_CONFIG, hf_tensors(arch))
    assert len(shards) == 13
    assert (tmp_path / "model.safetensors.index.json").is_file()
    started = time.perf_counter()
    h = read_model_dir(tmp_path)
    assert time.perf_counter() - started < 5
    layout = h.layout
    assert layout is not None and layout.exact
    assert layout.dtype_bytes == {"BF16": 2 * param_breakdown(arch).total}
    assert layout.total_bytes == 2 * 30_532_122_624
    assert layout.per_layer_bytes == tuple(2 * p for p in param_breakdown(arch).per_layer)
    assert h.format == "bf16"
    assert h.context_length == 262144
    assert h.file_bytes == sum(p.stat().st_size for p in shards)
    est = estimate_layout(arch, bits_per_weight("bf16"))
    assert est.total_bytes == layout.total_bytes


def test_fp8_checkpoint_counts_block_scales_and_leaves_mtp_out(tmp_path: Path) -> None:
    write_safetensors_dir(tmp_path, DEEPSEEK_V3_CONFIG, hf_tensors(DEEPSEEK_V3, "fp8"))
    h = read_model_dir(tmp_path)
    layout = h.layout
    assert layout is not None
    assert h.format == "fp8"
    assert set(layout.dtype_bytes) == {"F8_E4M3", "F32", "BF16"}
    # the 128x128 f32 scales: 4 bytes per 16,384 weights
    scales, weights = layout.dtype_bytes["F32"], layout.dtype_bytes["F8_E4M3"]
    assert 0.0002 < scales / weights < 0.0003
    # layer 61 is the MTP module: on disk, not loaded
    assert layout.unloaded_bytes > 10e9
    assert len(layout.per_layer_bytes) == 61
    assert layout.expert_bytes_per_layer[:3] == (0, 0, 0)
    # the bits-per-weight table (fp8 = 8 + 32/16384) with 16-bit embeddings is within 0.1%
    est = estimate_layout(DEEPSEEK_V3, bits_per_weight("fp8"), embedding_bits=16)
    assert abs(est.total_bytes / layout.total_bytes - 1) < 0.001


@pytest.mark.parametrize(
    ("arch", "config_layers", "gib"),
    [(GPT_OSS_120B, 36, 60.8), (GPT_OSS_20B, 24, 12.8)],
    ids=["gpt-oss-120b", "gpt-oss-20b"],
)
def test_mxfp4_checkpoint_matches_the_published_size(
    tmp_path: Path, arch: Architecture, config_layers: int, gib: float
) -> None:
    config = dict(GPT_OSS_120B_CONFIG)
    config["num_hidden_layers"] = config_layers
    config["num_local_experts"] = arch.moe.experts if arch.moe else 0
    config["layer_types"] = ["sliding_attention", "full_attention"] * (config_layers // 2)
    write_safetensors_dir(tmp_path, config, hf_tensors(arch, "mxfp4"))
    h = read_model_dir(tmp_path)
    assert h.format == "mxfp4"
    assert h.file_bytes is not None
    # gpt-oss model card: checkpoint size 60.8 GiB (120b) and 12.8 GiB (20b)
    assert round(h.file_bytes / 2**30, 1) == gib
    layout = h.layout
    assert layout is not None and set(layout.dtype_bytes) == {"U8", "BF16"}
    # experts are 4.25 bits per weight (e2m1 + one e8m0 scale per 32)
    experts = sum(layout.expert_bytes_per_layer)
    expert_params = param_breakdown(arch).routed_experts
    assert abs(experts * 8 / expert_params / 4.25 - 1) < 0.002


def test_config_only_folder_has_no_layout(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        __import__("json").dumps(QWEN3_CODER_30B_CONFIG), encoding="utf-8"
    )
    h = read_model_dir(tmp_path)
    assert h.layout is None
    assert h.params.total == 30_532_122_624
    src = load_model_source(str(tmp_path))
    assert src.kind == "hf-dir"
    assert src.layout is None
    assert src.variant.format == "bf16"
    assert src.model.params.active is not None


def test_missing_shards_and_missing_config_are_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"config\.json"):
        read_model_dir(tmp_path)
    shards = write_safetensors_dir(
        tmp_path, QWEN3_CODER_30B_CONFIG, hf_tensors(QWEN3_CODER_30B), shard_bytes=20 * 10**9
    )
    shards[-1].unlink()
    with pytest.raises(NotFound, match="missing"):
        read_model_dir(tmp_path)


def test_load_model_source_on_an_fp8_folder(tmp_path: Path) -> None:
    write_safetensors_dir(
        tmp_path / "DeepSeek-V3", DEEPSEEK_V3_CONFIG, hf_tensors(DEEPSEEK_V3, "fp8")
    )
    src = load_model_source(str(tmp_path / "DeepSeek-V3"))
    assert src.model.id == "deepseek-v3"
    assert src.model.repo == "local/deepseek-v3"
    assert src.variant.format == "fp8" and src.variant.quant == "fp8"
    assert src.variant.bits_per_weight is not None and 8.0 < src.variant.bits_per_weight < 8.2
    assert src.model.context.native == 163840
    assert src.layout is not None and src.layout.exact


def test_vision_tower_layers_are_not_decoder_layers(tmp_path: Path) -> None:
    arch = architecture_from_config(GEMMA3_27B_CONFIG)
    text = [(f"language_model.{n}", d, s) for n, d, s in hf_tensors(arch)]
    tower = [
        (f"vision_tower.vision_model.encoder.layers.{i}.mlp.fc1.weight", "BF16", (4304, 1152))
        for i in range(27)
    ]
    tower.append(("multi_modal_projector.mm_input_projection_weight", "BF16", (1152, 5376)))
    write_safetensors_dir(tmp_path, GEMMA3_27B_CONFIG, text + tower)
    layout = read_model_dir(tmp_path).layout
    assert layout is not None
    text_layers = tuple(2 * p for p in param_breakdown(arch).per_layer)
    assert layout.per_layer_bytes == text_layers
    assert layout.other_bytes == 2 * (27 * 4304 * 1152 + 1152 * 5376)
    assert layout.unloaded_bytes == 0
