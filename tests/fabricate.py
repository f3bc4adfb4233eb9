"""Full-size model files at no disk cost, for tests and benchmarks (shared helpers).

- `write_gguf(path, arch, ftype=...)`: a real GGUF written with the `gguf` package: the
  metadata llama.cpp reads for that architecture, a tokenizer (byte tokens included, so
  the engines accept any text), and the tensor table of `toolkit.inspect.ggufmix` (the
  names, shapes and llama-quantize types of a real file). The data section is a sparse
  hole: a 290 GB file takes a few MB of disk; its weights read as zeros, which llama.cpp
  loads and runs (same buffers, same memory as real weights). `split_max_bytes` writes
  `-0000N-of-0000M` parts the way gguf-split does.
- `write_safetensors_dir(dir, config, tensors)`: config.json, safetensors files (8-byte
  header length + JSON header + sparse data) and `model.safetensors.index.json` when
  sharded. `hf_tensors(arch, fmt)` lists a checkpoint's tensors in bf16, FP8 (e4m3
  weights + f32 `weight_scale_inv` per 128×128 block, as DeepSeek/Qwen FP8 repos store
  them) or MXFP4 (gpt-oss `*_blocks` u8 + `*_scales` u8 for the experts).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from toolkit.catalog.schema import Architecture
from toolkit.inspect.ggufmix import gguf_quant_tensors
from toolkit.inspect.params import is_moe_layer

#: catalog model_type → general.architecture
GGUF_ARCH = {
    "llama": "llama",
    "mistral": "llama",
    "mixtral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "qwen2_moe": "qwen2moe",
    "qwen3_moe": "qwen3moe",
    "qwen3_next": "qwen3next",
    "gemma3": "gemma3",
    "deepseek_v3": "deepseek2",
    "deepseek_v2": "deepseek2",
    "kimi_k2": "deepseek2",
    "gpt_oss": "gpt-oss",
    "glm4_moe": "glm4moe",
    "granitemoehybrid": "granitehybrid",
}
ALIGN = 32


def _pad(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


def _arch_metadata(w: Any, arch: Architecture, context_length: int) -> None:
    """The `{arch}.*` keys llama.cpp's loader reads (src/llama-model.cpp load_hparams)."""
    w.add_context_length(context_length)
    w.add_embedding_length(arch.hidden_size)
    w.add_block_count(arch.layers + arch.mtp_layers)
    local = arch.local_attention
    mamba = local.mamba if local is not None else None
    if arch.intermediate_size:
        w.add_feed_forward_length(arch.intermediate_size)
    elif mamba is not None and arch.moe is not None:
        # granitehybrid sizes its experts from feed_forward_length
        w.add_feed_forward_length(arch.moe.expert_intermediate_size)
    w.add_head_count(arch.heads)
    if mamba is not None:
        # A layer is recurrent iff its head_count_kv is 0 (granite-hybrid.cpp)
        glob = set(arch.global_layer_indices())
        w.add_head_count_kv([arch.kv_heads if i in glob else 0 for i in range(arch.layers)])
    else:
        w.add_head_count_kv(arch.kv_heads if arch.mla is None else 1)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1_000_000.0)
    w.add_vocab_size(arch.vocab_size)
    if arch.mla is not None:
        m = arch.mla
        w.add_key_length(m.kv_lora_rank + m.qk_rope_head_dim)
        w.add_value_length(m.kv_lora_rank)
        w.add_key_length_mla(m.qk_nope_head_dim + m.qk_rope_head_dim)
        w.add_value_length_mla(m.v_head_dim)
        w.add_kv_lora_rank(m.kv_lora_rank)
        if m.q_lora_rank:
            w.add_q_lora_rank(m.q_lora_rank)
        w.add_rope_dimension_count(m.qk_rope_head_dim)
        w.add_uint32(f"{w.arch}.expert_gating_func", 2)  # sigmoid: DeepSeek V3
        w.add_expert_weights_scale(2.5)
        w.add_expert_weights_norm(True)
    else:
        w.add_key_length(arch.head_dim)
        w.add_value_length(arch.head_dim)
        w.add_rope_dimension_count(arch.head_dim)
    moe = arch.moe
    if moe is not None:
        w.add_expert_count(moe.experts)
        w.add_expert_used_count(moe.experts_per_token)
        w.add_expert_feed_forward_length(moe.expert_intermediate_size)
        if moe.shared_experts:
            w.add_expert_shared_count(moe.shared_experts)
            if moe.shared_expert_intermediate_size:
                w.add_expert_shared_feed_forward_length(moe.shared_expert_intermediate_size)
        if moe.first_dense_layers:
            w.add_leading_dense_block_count(moe.first_dense_layers)
        if moe.layer_step > 1:
            w.add_interleave_moe_layer_step(moe.layer_step)
    if arch.mtp_layers:
        w.add_nextn_predict_layers(arch.mtp_layers)
    if local is not None and local.kind == "sliding" and local.window:
        w.add_sliding_window(local.window)
        if local.global_every is not None and local.global_first == local.global_every - 1:
            w.add_sliding_window_pattern(local.global_every)
        else:
            glob = set(arch.global_layer_indices())
            w.add_sliding_window_pattern([i not in glob for i in range(arch.layers)])
    if mamba is not None:
        w.add_ssm_conv_kernel(mamba.conv_kernel)
        w.add_ssm_state_size(mamba.state_size)
        w.add_ssm_group_count(mamba.groups)
        w.add_ssm_time_step_rank(mamba.heads)
        w.add_ssm_inner_size(mamba.heads * mamba.head_dim)
    if local is not None and local.kind == "linear" and local.linear is not None:
        lin = local.linear
        w.add_ssm_conv_kernel(lin.conv_kernel)
        w.add_ssm_state_size(lin.key_head_dim)
        w.add_ssm_group_count(lin.key_heads)
        w.add_ssm_time_step_rank(lin.value_heads)
        w.add_ssm_inner_size(lin.value_heads * lin.value_head_dim)
        if local.global_every:
            w.add_full_attention_interval(local.global_every)


def gpt2_byte_chars() -> list[str]:
    """GPT-2's byte → printable character map (every byte-level BPE vocabulary holds these)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs, strict=True))
    return [chr(table[b]) for b in range(256)]


def _tokenizer(w: Any, vocab: int, kind: str) -> None:
    """A vocabulary the engines accept, so any text tokenizes.

    kind "llama" (SentencePiece): <unk> <s> </s>, the 256 `<0xNN>` byte tokens, fillers.
    kind "gpt2" (byte-level BPE as Qwen and Llama 3 use): the 256 byte characters, then
    tokens built by merges ("a b" → "ab", "ab c" → "abc"), every merge result in the
    vocabulary, two control tokens at the end.
    """
    if kind == "llama":
        tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
        types = [2, 3, 3] + [6] * 256
        i = 0
        while len(tokens) < vocab:
            tokens.append(f"▁t{i}")
            types.append(1)
            i += 1
        tokens, types = tokens[:vocab], types[:vocab]
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_scores([0.0] * vocab)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        return
    chars = gpt2_byte_chars()
    tokens = list(chars)
    merges: list[str] = []
    letters = [c for c in chars if c.isalnum()][:90]
    want = vocab - 2
    pairs = ((a, b) for a in letters for b in letters)
    for a, b in pairs:
        if len(tokens) >= want:
            break
        tokens.append(a + b)
        merges.append(f"{a} {b}")
    for stem in list(tokens[256:]):
        for c in letters:
            if len(tokens) >= want:
                break
            tokens.append(stem + c)
            merges.append(f"{stem} {c}")
        if len(tokens) >= want:
            break
    tokens = [*tokens[:want], "<|im_start|>", "<|endoftext|>"]
    types = [1] * want + [3, 3]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(vocab - 1)
    w.add_bos_token_id(vocab - 1)
    w.add_add_bos_token(False)


def write_gguf(
    path: Path,
    arch: Architecture,
    *,
    ftype: str = "Q4_K_M",
    context_length: int = 4096,
    name: str = "fabricated",
    tokenizer: str = "gpt2",
    split_max_bytes: int = 0,
    extra: dict[str, Any] | None = None,
) -> list[Path]:
    """Write a GGUF (all parts) whose data is a sparse hole; returns the part paths."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType

    gguf_arch = GGUF_ARCH[arch.model_type]
    w = GGUFWriter(path, gguf_arch, split_max_size=split_max_bytes)
    w.add_name(name)
    w.add_file_type(LlamaFileType[f"MOSTLY_{ftype}" if ftype != "ALL_F32" else ftype].value)
    w.add_quantization_version(2)
    _arch_metadata(w, arch, context_length)
    _tokenizer(w, arch.vocab_size, tokenizer)
    for key, value in (extra or {}).items():
        w.add_key_value(key, value[0], value[1])
    for spec, type_name, nbytes in gguf_quant_tensors(arch, ftype):
        w.add_tensor_info(
            spec.name,
            tuple(reversed(spec.shape)),
            np.dtype(np.float32),
            nbytes,
            raw_dtype=GGMLQuantizationType[type_name],
        )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    assert w.fout is not None
    paths: list[Path] = []
    for fout, tensors in zip(w.fout, w.tensors, strict=True):
        header_end = fout.tell()
        fout.close()
        size = _pad(header_end) + sum(_pad(ti.nbytes) for ti in tensors.values())
        os.truncate(fout.name, size)
        paths.append(Path(fout.name))
    w.fout = None
    return paths


# -- safetensors ---------------------------------------------------------------------------

_ST_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1, "U8": 1, "I32": 4, "F8_E8M0": 1}


def hf_tensors(arch: Architecture, fmt: str = "bf16") -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, dtype, shape) of a transformers checkpoint of `arch` in bf16, fp8 or mxfp4.

    Names follow the Llama/Qwen/DeepSeek layout (`model.layers.N.self_attn.q_proj.weight`,
    `mlp.experts.E.gate_proj.weight`, `mlp.shared_experts.*`), MLA projections for MLA
    models, gpt-oss fused experts (`mlp.experts.gate_up_proj_blocks`) for gpt_oss.
    FP8: every linear weight except the router and lm_head is F8_E4M3 with an F32
    `weight_scale_inv` of ceil(out/128) × ceil(in/128).
    """
    h = arch.hidden_size
    out: list[tuple[str, str, tuple[int, ...]]] = []

    def linear(name: str, n_out: int, n_in: int) -> None:
        if fmt == "fp8":
            out.append((f"{name}.weight", "F8_E4M3", (n_out, n_in)))
            out.append((f"{name}.weight_scale_inv", "F32", (-(-n_out // 128), -(-n_in // 128))))
        else:
            out.append((f"{name}.weight", "BF16", (n_out, n_in)))

    def norm(name: str, n: int) -> None:
        out.append((f"{name}.weight", "BF16", (n,)))

    out.append(("model.embed_tokens.weight", "BF16", (arch.vocab_size, h)))
    for i in range(arch.layers + arch.mtp_layers):
        p = f"model.layers.{i}"
        norm(f"{p}.input_layernorm", h)
        norm(f"{p}.post_attention_layernorm", h)
        if arch.model_type in ("gemma2", "gemma3"):
            norm(f"{p}.pre_feedforward_layernorm", h)
            norm(f"{p}.post_feedforward_layernorm", h)
        a = f"{p}.self_attn"
        if arch.mla is not None:
            m = arch.mla
            qk = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank:
                linear(f"{a}.q_a_proj", m.q_lora_rank, h)
                norm(f"{a}.q_a_layernorm", m.q_lora_rank)
                linear(f"{a}.q_b_proj", arch.heads * qk, m.q_lora_rank)
            else:
                linear(f"{a}.q_proj", arch.heads * qk, h)
            linear(f"{a}.kv_a_proj_with_mqa", m.kv_lora_rank + m.qk_rope_head_dim, h)
            norm(f"{a}.kv_a_layernorm", m.kv_lora_rank)
            linear(
                f"{a}.kv_b_proj", arch.heads * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank
            )
            linear(f"{a}.o_proj", h, arch.heads * m.v_head_dim)
        else:
            q, kv = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
            linear(f"{a}.q_proj", q, h)
            linear(f"{a}.k_proj", kv, h)
            linear(f"{a}.v_proj", kv, h)
            linear(f"{a}.o_proj", h, q)
            if arch.model_type in ("qwen3", "qwen3_moe", "gemma3"):
                norm(f"{a}.q_norm", arch.head_dim)
                norm(f"{a}.k_norm", arch.head_dim)
        moe = arch.moe
        layer_is_moe = is_moe_layer(arch, min(i, arch.layers - 1))
        if moe is None or not layer_is_moe:
            ff = arch.intermediate_size or 4 * h
            linear(f"{p}.mlp.gate_proj", ff, h)
            linear(f"{p}.mlp.up_proj", ff, h)
            linear(f"{p}.mlp.down_proj", h, ff)
            continue
        ff = moe.expert_intermediate_size
        if arch.model_type == "gpt_oss":
            out.append((f"{p}.mlp.router.weight", "BF16", (moe.experts, h)))
            out.append((f"{p}.mlp.router.bias", "BF16", (moe.experts,)))
            e = moe.experts
            if fmt == "mxfp4":
                out.append((f"{p}.mlp.experts.gate_up_proj_blocks", "U8", (e, 2 * ff, h // 32, 16)))
                out.append((f"{p}.mlp.experts.gate_up_proj_scales", "U8", (e, 2 * ff, h // 32)))
                out.append((f"{p}.mlp.experts.down_proj_blocks", "U8", (e, h, ff // 32, 16)))
                out.append((f"{p}.mlp.experts.down_proj_scales", "U8", (e, h, ff // 32)))
            else:
                out.append((f"{p}.mlp.experts.gate_up_proj", "BF16", (e, h, 2 * ff)))
                out.append((f"{p}.mlp.experts.down_proj", "BF16", (e, ff, h)))
            out.append((f"{p}.mlp.experts.gate_up_proj_bias", "BF16", (e, 2 * ff)))
            out.append((f"{p}.mlp.experts.down_proj_bias", "BF16", (e, h)))
            continue
        out.append((f"{p}.mlp.gate.weight", "BF16", (moe.experts, h)))
        if arch.model_type in ("deepseek_v3", "kimi_k2", "glm4_moe"):
            out.append((f"{p}.mlp.gate.e_score_correction_bias", "F32", (moe.experts,)))
        for e in range(moe.experts):
            linear(f"{p}.mlp.experts.{e}.gate_proj", ff, h)
            linear(f"{p}.mlp.experts.{e}.up_proj", ff, h)
            linear(f"{p}.mlp.experts.{e}.down_proj", h, ff)
        if moe.shared_experts:
            sh = moe.shared_expert_intermediate_size or ff * moe.shared_experts
            linear(f"{p}.mlp.shared_experts.gate_proj", sh, h)
            linear(f"{p}.mlp.shared_experts.up_proj", sh, h)
            linear(f"{p}.mlp.shared_experts.down_proj", h, sh)
    norm("model.norm", h)
    if not arch.tied_embeddings:
        out.append(("lm_head.weight", "BF16", (arch.vocab_size, h)))
    return out


def _nbytes(dtype: str, shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n * _ST_BYTES[dtype]


def write_safetensors(path: Path, tensors: Iterable[tuple[str, str, tuple[int, ...]]]) -> int:
    """One safetensors file with a real header and a sparse data section; returns its size."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in tensors:
        n = _nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
    size = 8 + len(blob) + offset
    os.truncate(path, size)
    return size


def write_safetensors_dir(
    folder: Path,
    config: dict[str, Any],
    tensors: list[tuple[str, str, tuple[int, ...]]],
    *,
    shard_bytes: int = 5 * 10**9,
) -> list[Path]:
    """config.json + shards (model-0000N-of-0000M.safetensors) + index, or one file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    shards: list[list[tuple[str, str, tuple[int, ...]]]] = [[]]
    size = 0
    for t in tensors:
        n = _nbytes(t[1], t[2])
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += n
    if len(shards) == 1:
        p = folder / "model.safetensors"
        write_safetensors(p, shards[0])
        return [p]
    paths: list[Path] = []
    weight_map: dict[str, str] = {}
    total = 0
    for i, shard in enumerate(shards, 1):
        p = folder / f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(p, shard)
        paths.append(p)
        for name, dtype, shape in shard:
            weight_map[name] = p.name
            total += _nbytes(dtype, shape)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    return paths


def write_lora_gguf(
    path: Path,
    *,
    hidden: int,
    layers: int,
    kv_dim: int,
    rank: int = 8,
    scale: float = 0.05,
    seed: int = 0,
) -> Path:
    """A LoRA adapter in llama.cpp's GGUF form (general.type "adapter", adapter.type
    "lora") for a llama-architecture model, on every layer's attn_q and attn_v, with
    random but fixed weights (`seed`): lora_a is [rank, n_in], lora_b [n_out, rank] in
    numpy order, as llama.cpp's loader checks (src/llama-adapter.cpp)."""
    import numpy as np
    from gguf import GGUFWriter

    rng = np.random.default_rng(seed)
    w = GGUFWriter(path, "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(rank))
    for i in range(layers):
        for name, n_out in (("attn_q", hidden), ("attn_v", kv_dim)):
            a = (rng.standard_normal((rank, hidden)) * scale).astype(np.float32)
            b = (rng.standard_normal((n_out, rank)) * scale).astype(np.float32)
            w.add_tensor(f"blk.{i}.{name}.weight.lora_a", a)
            w.add_tensor(f"blk.{i}.{name}.weight.lora_b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
