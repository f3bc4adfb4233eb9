"""Engine memory terms, per layer and per device. Pure arithmetic; every term documented.

llama.cpp (what it logs at start: model / KV / compute buffer sizes per backend):
- KV cells: full-attention layers hold n_ctx cells (ctx per slot × slots); sliding-window
  layers hold PAD(min(n_ctx, n_swa × n_seq + n_ubatch), 256) cells
  (src/llama-kv-cache-iswa.cpp); linear-attention layers hold a fixed state per sequence.
- Compute buffer: the attention mask plus the largest phase of the worst-case prompt
  graph (see `llamacpp_compute_bytes`), checked against the engine's own logs.
vLLM (GPU): see `toolkit.planner.vllm_memory`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.planner.kv import KV_DTYPE_BYTES, linear_state_bytes

if TYPE_CHECKING:
    from toolkit.catalog.schema import Architecture

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
    return int(mask + max(attn, ffn, out, _mamba_phase(arch, ub, slots)))


#: ggml's scheduler keeps this many copies of each graph split's inputs when llama.cpp
#: pipelines micro-batches over several devices (GGML_SCHED_MAX_COPIES).
SCHED_COPIES = 4


def llamacpp_pipeline_bytes(
    arch: Architecture, *, n_ctx: int, ubatch: int, flash_attn: bool, slots: int = 1
) -> int:
    """What pipeline parallelism adds to each GPU's compute buffer.

    llama.cpp pipelines micro-batches when the model is split by layers over several
    devices with every layer and the output offloaded and no tensor overrides
    (llama_context: `pipeline parallelism enabled`); ggml's scheduler then holds
    SCHED_COPIES copies of each split's inputs, here the hidden state (ubatch × n_embd,
    f32) and the attention mask. Checked on llama-server split over two rpc-server
    devices (SmolLM2-135M, n_ctx 1024, ubatch 512, flash-attn): +7.53 MiB logged per
    device, 6.38 MiB from these two inputs (the other 0.4 MiB per copy is not
    accounted for), tests/test_rpc.py."""
    ub = min(ubatch, n_ctx)
    n_kv = stream_cells(n_ctx, slots, unified=False)
    mask = ub * n_kv * (2 if flash_attn else 4)
    return (SCHED_COPIES - 1) * (4 * ub * arch.hidden_size + mask)


def _mamba_phase(arch: Architecture, ub: int, slots: int) -> int:
    """A Mamba2 layer's working set (llm_build_mamba_base, f32): per token the in_proj
    output (z, x, B, C, dt) and four inner-width tensors (scan output, the D skip, the
    gate, the group norm); per sequence about four copies of the SSM state (the scan's
    state output and its copies). Fitted on llama-server logs of four fabricated
    granitehybrid shapes at ubatch 256 and 512: within 8 % there, 10 % in
    tests/test_planner_llamacpp.py, and 14 % low for Granite-4.0-H-Tiny's own shape
    (50.6 MiB predicted, 59.0 logged at ubatch 512 with flash-attn): an approximation of
    ggml's allocator, not a derivation."""
    local = arch.local_attention
    if local is None or local.mamba is None:
        return 0
    m = local.mamba
    inner = m.heads * m.head_dim
    in_proj = 2 * inner + 2 * m.groups * m.state_size + m.heads
    return 4 * (ub * (in_proj + 4 * inner) + 4 * m.state_size * inner * max(1, slots))


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
