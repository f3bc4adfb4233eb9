"""Engine memory terms, per layer and per device. Pure arithmetic; every term documented.

llama.cpp (what it logs at start: model / KV / compute buffer sizes per backend):
- KV cells: full-attention layers hold n_ctx cells (ctx per slot × slots); sliding-window
  layers hold PAD(min(n_ctx, n_swa × n_seq + n_ubatch), 256) cells
  (src/llama-kv-cache-iswa.cpp); linear-attention layers hold a fixed state per sequence.
- Compute buffer: the attention mask plus the largest phase of the worst-case prompt
  graph (see `llamacpp_compute_bytes`), checked against the engine's own logs.
vLLM (GPU): see `vllm_terms`.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.catalog.schema import Architecture
from toolkit.planner.kv import KV_DTYPE_BYTES, linear_state_bytes

MiB = 1024**2
GiB = 1024**3


def _pad(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def stream_cells(n_ctx: int, slots: int, *, unified: bool = False) -> int:
    """Full-attention cells one KV stream holds: all n_ctx with one slot or unified KV,
    else n_ctx / slots (llama-server's default split KV, one stream per slot)."""
    return n_ctx if unified or slots <= 1 else n_ctx // slots


def layer_token_elems(arch: Architecture) -> int:
    """Cached elements per token in one attention layer (K + V, or the MLA latent)."""
    if arch.mla is not None:
        return arch.mla.kv_lora_rank + arch.mla.qk_rope_head_dim + (arch.index_head_dim or 0)
    return 2 * arch.kv_heads * arch.head_dim


def layer_kinds(arch: Architecture) -> list[str]:
    """'global', 'sliding' (or chunked) or 'linear' for each layer."""
    glob = set(arch.global_layer_indices())
    local = arch.local_attention
    kind = "sliding" if local is None or local.kind != "linear" else "linear"
    return ["global" if i in glob else kind for i in range(arch.layers)]


def llamacpp_kv_per_layer(
    arch: Architecture,
    *,
    n_ctx: int,
    slots: int,
    ubatch: int,
    kv_dtype: str,
    unified: bool = False,
) -> list[int]:
    """KV bytes llama.cpp allocates for each layer (n_ctx is the total over all slots).

    Split KV (one stream per slot; llama-server's default, logged as kv_unified = false)
    holds per slot n_ctx / slots full-attention cells and PAD(n_swa + ubatch, 256)
    sliding-window cells; unified KV (`--kv-unified`) holds n_ctx cells and
    PAD(n_swa × slots + ubatch, 256) sliding-window cells in one buffer."""
    elem = layer_token_elems(arch) * KV_DTYPE_BYTES[kv_dtype]
    kinds = layer_kinds(arch)
    n_linear = kinds.count("linear")
    state = linear_state_bytes(arch) * slots / n_linear if n_linear else 0.0
    local = arch.local_attention
    out: list[int] = []
    for kind in kinds:
        if kind == "global":
            out.append(int(elem * n_ctx))
        elif kind == "sliding":
            assert local is not None and local.window is not None
            if unified:
                cells = min(n_ctx, _pad(min(n_ctx, local.window * slots + ubatch), 256))
            else:
                per = n_ctx // slots
                cells = slots * min(per, _pad(min(per, local.window + ubatch), 256))
            out.append(int(elem * cells))
        else:
            out.append(int(state))
    return out


def llamacpp_compute_bytes(
    arch: Architecture,
    *,
    n_ctx: int,
    ubatch: int,
    flash_attn: bool,
    with_output: bool = True,
    n_outputs: int | None = None,
    slots: int = 1,
    unified: bool = False,
) -> int:
    """The compute buffer of one backend that runs the whole graph.

    llama.cpp sizes it once at start by reserving the worst-case prompt graph
    (src/llama-context.cpp: graph_reserve with n_tokens = min(n_ctx, n_ubatch) and the KV
    cache simulated full); ggml's allocator reuses memory between ops, so the buffer is
    the attention mask (a graph input, alive throughout) plus the largest phase (f32):
      mask   = ubatch × (n_kv + sliding-window cells of one KV stream) × (2 bytes with
               flash-attn, else 4)
      attn   = [no flash-attn: ubatch × n_kv × n_head (KQ)] + ubatch × (3·n_embd +
               2·max(n_embd, n_head·head_dim) + 2·kv_heads·head_dim) (q, k, v,
               attention output, residual); MLA:
               ubatch × (6·n_embd + n_head·(2·kv_lora_rank + qk_nope + v_head))
      ffn    = ubatch × (3·n_ff + 3·n_embd)   (MoE: top_k × n_ff_exp + shared experts)
      output = n_outputs × n_vocab (logits) + ubatch × n_embd
    n_outputs: llama-server reserves logits for one token per sequence (`slots`);
    llama-cpp-python for every token of the ubatch (pass n_outputs=ubatch).
    Checked against llama-server logs for dense/GQA, MoE and sliding-window GGUFs at
    n_ctx 512–8192 with flash-attn on and off (tests/test_planner_llamacpp.py), and
    against llama-cpp-python's log for SmolLM2 (tests/test_planner.py)."""
    ub = min(ubatch, n_ctx)
    n_embd = arch.hidden_size
    # Split KV: each of the `slots` streams sees its own cells and ubatch/slots tokens, so
    # the mask totals ubatch × (cells of one stream).
    n_kv = stream_cells(n_ctx, slots, unified=unified)
    kinds = layer_kinds(arch)
    swa_cells = 0
    local = arch.local_attention
    if "sliding" in kinds and local is not None and local.window is not None:
        per = local.window * (slots if unified else 1) + ubatch
        swa_cells = min(n_kv, _pad(min(n_kv, per), 256))
    mask = ub * (n_kv + swa_cells) * (2 if flash_attn else 4)
    if arch.mla is not None:
        # MLA (deepseek2 graph): per head the absorbed query and the latent attention output
        # (2 × kv_lora_rank) plus the decompressed nope key and value; fitted on llama-server
        # logs for three MLA shapes (heads 8/16, kv_lora_rank 256/512), exact to 0.05 MiB.
        m = arch.mla
        extra = 6 * n_embd + arch.heads * (2 * m.kv_lora_rank + m.qk_nope_head_dim + m.v_head_dim)
    else:
        # q and the attention output are heads × head_dim wide, which is not n_embd in
        # Qwen3 or Gemma 3 (fabricated shapes with a wider q logged 2 × (q − n_embd) more)
        q = max(n_embd, arch.heads * arch.head_dim)
        extra = 3 * n_embd + 2 * q + 2 * arch.kv_heads * arch.head_dim
    if arch.model_type.startswith("gemma"):
        extra += n_embd // 2  # sandwich norms: one more residual-sized tensor alive
    attn = 4 * ub * extra + (0 if flash_attn else 4 * ub * n_kv * arch.heads)
    if arch.moe is not None:
        moe = arch.moe
        shared = moe.shared_expert_intermediate_size or (
            moe.expert_intermediate_size * moe.shared_experts
        )
        n_ff = moe.experts_per_token * moe.expert_intermediate_size + shared
    else:
        n_ff = arch.intermediate_size or 4 * n_embd
    ffn = 4 * ub * (3 * n_ff + 3 * n_embd)
    outs = ub if n_outputs is None else min(n_outputs, ub)
    out = 4 * outs * arch.vocab_size + 4 * ub * n_embd if with_output else 0
    return int(mask + max(attn, ffn, out))


def llamacpp_host_compute_bytes(arch: Architecture, *, ubatch: int) -> int:
    """Host-side (CUDA_Host) compute buffer when every layer runs on GPUs. Published CUDA
    logs show 12.01 MiB at ubatch 512 for models as different as GLM-4.5 (n_embd 4096,
    ggml-org/llama.cpp#14939) and a Gemma-2 class model (n_embd 2304, SciSharp/LLamaSharp
    #1099), so it is taken as 12 MiB per 512 ubatch tokens, not as a function of size."""
    del arch
    return int(12.01 * MiB * ubatch / 512)


#: llama-server's resident memory outside every buffer it logs, apart from the tokenizer:
#: the binary and shared libraries (13.5–14.1 MiB resident for the x86-64 CPU build of
#: 0c1e570), thread stacks, allocator arenas and graph metadata. Measured with
#: scripts/bench/planner_accuracy.py on seven GGUFs (vocabularies 4,096–262,144).
LLAMACPP_PROCESS_BASE = 18 * MiB
#: Heap per vocabulary entry (token text, the text → id map, the piece cache): 47.9 MiB
#: for Gemma 3's 262,144 tokens and 2.1 MiB for 4,096 at start, in the same runs.
LLAMACPP_VOCAB_BYTES = 180
#: Per layer (tensor and graph metadata): 48 layers measured 3 MiB above 6–8 layers.
LLAMACPP_LAYER_BYTES = 64 * 1024
#: Per context cell (the slot's token lists and request bookkeeping; the heap grew by
#: 0.7–1.1 KiB per prompt token in the same runs).
LLAMACPP_CTX_BYTES = 1024
#: Context checkpoints llama-server may keep per slot for sliding-window and recurrent
#: models when deploy launches it (`--ctx-checkpoints`; the engine's own default is 32).
#: Each request makes two near the end of its prompt (4 + ubatch and 4 tokens before it),
#: and the one 4 tokens before the end is what the next turn of a chat rolls back to.
LLAMACPP_CHECKPOINTS = 2


def llamacpp_process_bytes(arch: Architecture, *, n_ctx: int) -> int:
    """The llama-server process itself: binary, libraries, threads, tokenizer tables,
    per-layer metadata and per-token bookkeeping (n_ctx: cells over all slots)."""
    return (
        LLAMACPP_PROCESS_BASE
        + LLAMACPP_VOCAB_BYTES * arch.vocab_size
        + LLAMACPP_LAYER_BYTES * arch.layers
        + LLAMACPP_CTX_BYTES * n_ctx
    )


def llamacpp_cpu_work_bytes(
    arch: Architecture, *, n_ctx: int, slots: int, ubatch: int, flash_attn: bool
) -> int:
    """ggml's CPU work buffer (malloc'd outside the logged compute buffer, kept for the
    life of the process). Without flash attention its largest user is the attention
    product KQ·V: the f32 scores [n_kv, ubatch, heads] are converted to V's f16 first,
    so it holds n_kv × ubatch × heads × 2 bytes (n_kv: cells of one KV stream). With
    flash attention the work buffer is a per-thread scratch of a few hundred KiB."""
    if flash_attn:
        return 0
    return min(ubatch, n_ctx) * stream_cells(n_ctx, slots) * arch.heads * 2


def llamacpp_checkpoint_bytes(arch: Architecture, *, n_ctx: int, slots: int, kv_dtype: str) -> int:
    """One context checkpoint of one slot: the part of the memory that cannot be rolled
    back, copied to RAM by llama-server (tools/server: create_checkpoint). Sliding-window
    layers: the cells inside the window; recurrent layers: the state of one sequence.
    0 for models with neither (no checkpoints are made)."""
    kinds = layer_kinds(arch)
    elem = layer_token_elems(arch) * KV_DTYPE_BYTES[kv_dtype]
    local = arch.local_attention
    total = 0.0
    if "sliding" in kinds and local is not None and local.window is not None:
        cells = min(local.window, stream_cells(n_ctx, slots))
        total += kinds.count("sliding") * cells * elem
    if "linear" in kinds:
        total += linear_state_bytes(arch)
    return int(total)


# --- vLLM --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VllmTerms:
    """vLLM's memory-profiling terms for one GPU (bytes)."""

    budget: int
    weights: int
    activation: int
    non_torch: int
    cuda_graphs: int
    kv_cache: int
    kv_bytes_per_token: int
    kv_tokens: int


def _high_end(gpu_total_bytes: int, gpu_name: str) -> bool:
    return gpu_total_bytes >= 70 * GiB and "a100" not in gpu_name.lower()


def default_batched_tokens(gpu_total_bytes: int, gpu_name: str = "") -> int:
    """vLLM's default max_num_batched_tokens for the OpenAI server: 8192 on GPUs with
    ≥ 70 GiB that are not A100 (H100/H200/MI300 class), else 2048
    (vllm/engine/arg_utils.py, EngineArgs.get_batch_defaults)."""
    return 8192 if _high_end(gpu_total_bytes, gpu_name) else 2048


def default_max_num_seqs(gpu_total_bytes: int, gpu_name: str = "") -> int:
    """vLLM's default max_num_seqs for the OpenAI server: 1024 on the same GPUs, else 256."""
    return 1024 if _high_end(gpu_total_bytes, gpu_name) else 256


def vllm_activation_bytes(
    arch: Architecture, *, batched_tokens: int, max_num_seqs: int, tp: int, act_bytes: int = 2
) -> int:
    """Peak activation of vLLM's profiling forward pass on one GPU.

    Dense: batched_tokens × (3·intermediate/tp + 3·hidden) × 2 bytes (MLP gate/up output,
    activation, residual stream), fitted on published RTX 3090 logs of Llama-3.1-8B
    (2.07 GiB at 20,000 tokens, 2.99 GiB at 29,000: 111 kB/token; formula 110.6 kB).
    MoE (fused_moe workspaces): batched_tokens × top_k × (3·n_ff_exp/tp + hidden) × 2.
    Plus the sampler's logits for max_num_seqs sequences in fp32 (×2: logits and probs).
    """
    h = arch.hidden_size
    if arch.moe is not None:
        per_tok = arch.moe.experts_per_token * (3 * arch.moe.expert_intermediate_size / tp + h)
        per_tok += 3 * h
    else:
        per_tok = 3 * (arch.intermediate_size or 4 * h) / tp + 3 * h
    tokens = batched_tokens * per_tok * act_bytes
    logits = max_num_seqs * arch.vocab_size * 4 * 2
    return int(tokens + logits)


#: Memory outside PyTorch's allocator on one GPU (CUDA context, cuBLAS/NCCL workspaces),
#: as vLLM's profiler reports it. Single GPU: 0.2 GiB (published 0.20 GiB on a 24 GiB
#: card, vllm#14447). With TP/PP the NCCL and custom all-reduce buffers add more.
def vllm_non_torch_bytes(world_size: int) -> int:
    if world_size <= 1:
        return int(0.2 * GiB)
    return int(0.2 * GiB + 0.5 * GiB)


def vllm_cuda_graph_bytes(arch: Architecture, *, enforce_eager: bool, max_num_seqs: int) -> int:
    """CUDA graphs are captured after the KV pool is allocated, in the headroom that
    gpu_memory_utilization leaves. Estimate scaled by layers × hidden size from a published
    log: Llama-3.2-1B (16 layers, hidden 2048), 35 batch shapes, "Graph capturing finished
    in 14 secs, took 0.21 GiB" (vllm-project/vllm#11349). Fewer shapes when max_num_seqs
    is below 256."""
    if enforce_eager:
        return 0
    shapes = min(1.0, max_num_seqs / 256)
    return int(0.21 * GiB * arch.layers * arch.hidden_size / (16 * 2048) * max(shapes, 0.25))


def vllm_kv_bytes_per_token(arch: Architecture, *, tp: int, pp: int, kv_dtype: str) -> int:
    """Bytes per token of KV on one GPU: kv heads split over TP (replicated when TP exceeds
    them); MLA latents are replicated; layers split over PP. Sliding-window layers are
    charged at full rate (vLLM pages them, the pool still sizes by the full layer count
    of the largest group); linear layers hold no per-token KV."""
    kinds = layer_kinds(arch)
    cached = sum(1 for k in kinds if k != "linear")
    per_stage = -(-cached // pp)
    if arch.mla is not None:
        elems = layer_token_elems(arch)
    else:
        heads = max(1, arch.kv_heads // tp) if tp <= arch.kv_heads else 1
        elems = 2 * heads * arch.head_dim
    return int(per_stage * elems * KV_DTYPE_BYTES[kv_dtype])


def vllm_terms(
    arch: Architecture,
    *,
    gpu_total: int,
    weights_per_gpu: int,
    util: float,
    tp: int,
    pp: int,
    kv_dtype: str,
    batched_tokens: int,
    max_num_seqs: int,
    enforce_eager: bool = False,
    block_size: int = 16,
) -> VllmTerms:
    """vLLM (V1) on one GPU: budget = util × total; KV pool = budget − weights − activation
    peak − non-torch memory; tokens = whole blocks of `block_size` the pool holds."""
    budget = int(util * gpu_total)
    act = vllm_activation_bytes(
        arch, batched_tokens=batched_tokens, max_num_seqs=max_num_seqs, tp=tp
    )
    non_torch = vllm_non_torch_bytes(tp * pp)
    graphs = vllm_cuda_graph_bytes(arch, enforce_eager=enforce_eager, max_num_seqs=max_num_seqs)
    kv = budget - weights_per_gpu - act - non_torch
    per_tok = vllm_kv_bytes_per_token(arch, tp=tp, pp=pp, kv_dtype=kv_dtype)
    tokens = 0
    if kv > 0 and per_tok > 0:
        tokens = kv // (per_tok * block_size) * block_size
    return VllmTerms(
        budget=budget,
        weights=weights_per_gpu,
        activation=act,
        non_torch=non_torch,
        cuda_graphs=graphs,
        kv_cache=kv,
        kv_bytes_per_token=per_tok,
        kv_tokens=tokens,
    )
