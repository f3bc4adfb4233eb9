"""vLLM's GPU memory budget, as the version in use computes it.

vLLM sizes its KV pool at start from a profiling run (vllm/v1/worker/gpu_worker.py,
Worker.determine_available_memory; V0: vllm/worker/worker.py):

    KV = requested − weights − activation peak − non-torch increase − CUDA graphs

where each term depends on the version (docs/planner.md "vLLM memory, version by
version" has the table with the source of every rule):

- requested: gpu_memory_utilization × device total (deploy always passes the utilization).
- activation peak: the profiling forward pass over max_num_batched_tokens tokens plus the
  sampler over min(max_num_seqs, tokens) rows × vocabulary. The
  sampler's logits are gathered to every TP rank (not divided by TP); its bytes per
  logit depend on the top-k/top-p path (FlashInfer by default up to 0.11, PyTorch's
  sort from 0.12). The defaults of both batch sizes change with the GPU's memory and
  the version (`batch_defaults`). V0 without chunked prefill (max_model_len ≤ 32768)
  profiles a whole-context prompt.
- non-torch increase: CUDA/cuBLAS workspaces; NCCL and custom all-reduce buffers count
  when the memory snapshot is taken before distributed init (V0 and 0.9.1–0.10.x), and
  from 0.11 what NCCL allocates lazily during the profiling run.
- CUDA graphs: captured after the pool is allocated; subtracted as an estimate from
  0.20 (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS default on).
- from 0.27 the runner's persistent buffers are charged too (total_consumed).

The pool is then cut into blocks per KV cache group (`kv_layout`): layers of one kind
(full attention, sliding window, Mamba/linear state) are grouped in equal-size groups
and share one block pool, so a sliding-window layer holds only its window and a state
layer one block per sequence, while only full-attention layers grow with the context.

The constants a source does not fix (bytes per sampler logit, non-torch, CUDA-graph
scale) are fitted on published startup logs (tests/data/vllm_logs.yaml) by
`scripts/bench/vllm_accuracy.py --write-params`, stored in toolkit/planner/vllm_params.json.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.planner.kv import KV_DTYPE_BYTES, linear_layer_state_bytes

if TYPE_CHECKING:
    from toolkit.catalog.schema import Architecture

MiB = 1024**2
GiB = 1024**3

Version = tuple[int, int, int]

#: The version planned for when none is installed and none is asked for: the newest
#: release whose accounting is modelled here.
NEWEST: Version = (0, 34, 0)

#: Fallback constants (GiB or bytes per logit), replaced by the fitted ones.
DEFAULT_PARAMS: dict[str, float] = {
    # bytes per (sequence × vocabulary entry) of the profiled sampler
    # (V1 native: Qwen3-8B on an H100, 1024 × 151,936 logits, peak 3.04 GiB, vllm#48037)
    "sampler_v0": 8.0,
    "sampler_flashinfer": 8.0,
    "sampler_native": 21.0,
    # multiplier on the forward-pass activation per token
    "forward_scale": 1.0,
    # non-torch memory charged at TP 1, and per rank on top with TP/PP > 1 when NCCL
    # buffers fall inside the snapshot (GiB)
    "non_torch_gib": 0.25,
    "nccl_gib": 1.0,
    # from 0.11 NCCL's init buffers are outside the snapshot, but what it allocates
    # lazily during the profiling run is still charged (0.19 logs: 2.07-2.17 GiB of
    # non-torch at TP 2 and 4 against 0.25 at TP 1 on H100s, llm-d-planner's logs)
    "nccl_lazy_gib": 1.8,
    # CUDA-graph estimate: multiplier on the scaled published capture (0.20+)
    "graph_scale": 1.0,
    # persistent runner buffers charged from 0.27 (GiB)
    "runner_gib": 0.3,
    # bytes per (sequence × vocabulary entry × speculative token) of the profiled
    # rejection sampler: Qwen3-8B with 7 speculative tokens on an H100, peak activation
    # 3.04 -> 7.12 GiB at 1024 sequences (vllm#48037): 4.08 GiB / (1024 × 151,936 × 7)
    "spec_sampler": 4.0,
}


@cache
def params() -> dict[str, float]:
    """The fitted constants (toolkit/planner/vllm_params.json), defaults where absent."""
    out = dict(DEFAULT_PARAMS)
    try:
        text = Path(__file__).with_name("vllm_params.json").read_text("utf-8")
    except FileNotFoundError:
        return out
    doc = json.loads(text)
    out.update({k: float(v) for k, v in doc.get("params", {}).items() if k in out})
    return out


def parse_version(text: str | None) -> Version | None:
    """'0.10.1' → (0, 10, 1); '~0.13' → (0, 13, 0); '0.6.4.post1' → (0, 6, 4);
    None or no version number → None."""
    if not text:
        return None
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def version_text(v: Version) -> str:
    return ".".join(str(x) for x in v)


def is_v1(v: Version) -> bool:
    """The V1 engine is the default from 0.8.0; V0 is gone after 0.10."""
    return v >= (0, 8, 0)


def default_util(v: Version) -> float:
    """gpu_memory_utilization when none is passed: 0.90 up to 0.19, 0.92 from 0.20
    (vllm/config/cache.py@v0.20.0); 0.34 takes all memory with its extensible cache."""
    if v >= (0, 34, 0):
        return 1.0
    return 0.92 if v >= (0, 20, 0) else 0.90


def _tier(gpu_total: int, gpu_name: str) -> str:
    name = gpu_name.lower()
    if gpu_total >= 160 * GiB:
        return "xl"
    if gpu_total >= 70 * GiB and "a100" not in name:
        return "big"
    if gpu_total >= 70 * GiB:
        return "a100"
    return "small"


def batch_defaults(
    v: Version, gpu_total: int, gpu_name: str = "", *, v0: bool | None = None
) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) of `vllm serve` when neither is passed
    (EngineArgs._set_default_args_v1 ≤ 0.11, get_batch_defaults ≥ 0.12,
    vllm/engine/arg_utils.py): 8192/1024 on ≥ 70 GiB GPUs, 2048/256 below; A100s moved
    to the small tier in 0.9.0; ≥ 160 GiB GPUs batch 16384 tokens from 0.28. V0: 2048
    tokens (chunked prefill) and 256 sequences."""
    if v0 if v0 is not None else not is_v1(v):
        return 2048, 256
    tier = _tier(gpu_total, gpu_name)
    if tier == "a100" and v < (0, 9, 0):
        tier = "big"
    if tier == "xl":
        return (16384 if v >= (0, 28, 0) else 8192), 1024
    if tier == "big":
        return 8192, 1024
    return 2048, 256


def profiled_tokens(v: Version, mnbt: int, seqs: int, max_model_len: int, *, v0: bool) -> int:
    """Tokens of the profiling forward pass. V0 turns chunked prefill on only above 32K
    context, and without it profiles max(max_model_len, mnbt) tokens; V1 from 0.12 caps
    the default at max_num_seqs × max_model_len."""
    if v0 and max_model_len <= 32768:
        return max(mnbt, max_model_len)
    if v >= (0, 12, 0):
        return min(mnbt, seqs * max_model_len)
    return mnbt


def forward_bytes(arch: Architecture, tokens: int, tp: int, p: dict[str, float]) -> int:
    """Activation peak of the profiling forward over `tokens` tokens on one rank: dense,
    tokens × (3·intermediate/tp + 3·hidden) × 2 bytes (MLP gate/up output, activation,
    residual stream; fitted on RTX 3090 logs of Llama-3.1-8B, vllm#10517); MoE (fused_moe
    workspaces), tokens × top_k × (3·n_ff_expert/tp + hidden) × 2 + the residual."""
    h = arch.hidden_size
    if arch.moe is not None:
        per_tok = arch.moe.experts_per_token * (3 * arch.moe.expert_intermediate_size / tp + h)
        per_tok += 3 * h
    else:
        per_tok = 3 * (arch.intermediate_size or 4 * h) / tp + 3 * h
    return int(tokens * per_tok * 2 * p["forward_scale"])


def sampler_bytes(
    arch: Architecture,
    v: Version,
    rows: int,
    p: dict[str, float],
    *,
    v0: bool,
    flashinfer: bool | None = None,
) -> int:
    """The profiled sampler: rows × vocabulary logits (not split by TP: V1 gathers them to
    every rank), at the bytes per logit of the top-k/top-p path: up to 0.11 FlashInfer's
    when it is installed (`flashinfer` None: assumed installed, as vLLM's CUDA wheels pull
    it in), from 0.12 PyTorch's sort unless opted in."""
    if flashinfer is None:
        flashinfer = v < (0, 12, 0)
    if v0:
        per = p["sampler_v0"]
    elif flashinfer:
        per = p["sampler_flashinfer"]
    else:
        per = p["sampler_native"]
    return int(rows * arch.vocab_size * per)


def graph_sizes(v: Version, seqs: int, mnbt: int) -> int:
    """How many batch sizes vLLM captures CUDA graphs for (VllmConfig._set_cudagraph_sizes):
    [1, 2, 4] + multiples of 8 up to 2·max_num_seqs (≤ 512), from 0.12 steps of 16 above
    256 and capped by max_num_batched_tokens."""
    top = min(2 * seqs, 512)
    if v >= (0, 12, 0):
        top = min(top, mnbt)
        return 3 + len(range(8, min(256, top + 1), 8)) + len(range(256, top + 1, 16))
    return 3 + len(range(8, top + 1, 8))


def graph_bytes(arch: Architecture, v: Version, seqs: int, mnbt: int, p: dict[str, float]) -> int:
    """CUDA-graph memory on one rank, scaled from a published capture: Llama-3.2-1B (16
    layers, hidden 2048), 35 sizes, "Graph capturing finished in 14 secs, took 0.21 GiB"
    (vllm-project/vllm#11349), by the number of sizes and the square root of layers ×
    hidden: captured graphs share one memory pool whose size follows the largest batch's
    buffers more than the model's depth (published captures: 0.67 GiB for a 7B and
    2.24 GiB for an 8B at 67 sizes, 2.37 GiB per rank for an 80B MoE at TP 2; the
    reference range for dense models up to 70B is 0.3–1 GiB per GPU at default sizes)."""
    sizes = graph_sizes(v, seqs, mnbt)
    scale = math.sqrt(arch.layers * arch.hidden_size / (16 * 2048))
    return int(0.21 * GiB * scale * sizes / 35 * p["graph_scale"])


# --- KV cache groups ----------------------------------------------------------------------


@dataclass(frozen=True)
class KvLayout:
    """How vLLM cuts its KV pool on one rank (vllm/v1/core/kv_cache_utils.py)."""

    #: Tokens per block (16, 64 from 0.34; raised for Mamba hybrids).
    block_size: int
    #: Bytes of one block of one layer.
    page_bytes: int
    #: Layers per group (every group has this many, padded).
    group_size: int
    full_groups: int
    sliding_groups: int
    state_groups: int
    #: Sliding window (or attention chunk) in tokens, when sliding groups exist.
    window: int = 0

    @property
    def block_bytes(self) -> int:
        return self.page_bytes * self.group_size

    def blocks(self, kv_bytes: int) -> int:
        return max(0, kv_bytes) // self.block_bytes if self.block_bytes else 0

    def request_blocks(self, length: int, mnbt: int) -> int:
        """Blocks one request of `length` tokens holds (the max_memory_usage_bytes of each
        group's spec): full attention all of it, a sliding window (window − 1 + one
        scheduler step) + 1 block, a state layer one block."""
        bs = self.block_size
        blocks = self.full_groups * -(-length // bs)
        if self.sliding_groups:
            span = min(self.window - 1 + mnbt, length)
            blocks += self.sliding_groups * (-(-span // bs) + 1)
        return blocks + self.state_groups

    def bytes_per_token(self) -> float:
        """Pool bytes per token of context (the full-attention groups only)."""
        return self.full_groups * self.block_bytes / self.block_size

    def fixed_blocks(self, mnbt: int) -> int:
        """Blocks one request holds whatever its length: its sliding windows (taken at the
        longest, window − 1 + one scheduler step) and one state block per state group."""
        if not self.sliding_groups:
            return self.state_groups
        span = -(-(self.window - 1 + mnbt) // self.block_size) + 1
        return self.sliding_groups * span + self.state_groups

    def max_length(self, kv_bytes: int, mnbt: int, sequences: int = 1) -> int:
        """The longest context each of `sequences` requests can hold in `kv_bytes`."""
        if self.full_groups == 0 or sequences < 1:
            return 0
        free = self.blocks(kv_bytes) - sequences * self.fixed_blocks(mnbt)
        if free <= 0:
            return 0
        return free // (sequences * self.full_groups) * self.block_size


def _attn_elems(arch: Architecture, tp: int) -> int:
    """Cached elements per token of one attention layer on one rank: KV heads split over
    TP (replicated when TP exceeds them); MLA latents are replicated."""
    if arch.mla is not None:
        return arch.mla.kv_lora_rank + arch.mla.qk_rope_head_dim + (arch.index_head_dim or 0)
    heads = max(1, arch.kv_heads // tp) if tp <= arch.kv_heads else 1
    return 2 * heads * arch.head_dim


def kv_layout(
    arch: Architecture,
    *,
    version: Version,
    tp: int,
    pp: int,
    kv_dtype: str,
    hybrid_manager: bool = True,
    extra_full_layers: int = 0,
) -> KvLayout:
    """vLLM's KV cache groups on one rank of a PP stage.

    Layers by kind: full attention, sliding window / chunked local, and state layers
    (Mamba2, Gated DeltaNet). Groups hold `group_size` = the smallest count of any kind
    (from 0.18 the largest when it is under 1.5 × the smallest), each kind padded to whole
    groups. With state layers the attention block grows until its page holds one state
    (HybridAttentionMambaModelConfig). Versions or settings without the hybrid manager
    (0.8.x; Llama 4 chunked attention in 0.10.2–0.13) treat every attention layer as
    full."""
    kinds = _kinds(arch)
    full = kinds.count("global")
    sliding = kinds.count("sliding")
    state = kinds.count("linear")
    chunked = arch.local_attention is not None and arch.local_attention.kind == "chunked"
    if (
        not hybrid_manager
        or version < (0, 9, 0)
        or (chunked and (0, 10, 2) <= version < (0, 14, 0))
    ):
        full, sliding = full + sliding, 0
    # Speculative decoding with MTP layers caches them as full-attention layers too.
    full += extra_full_layers
    full, sliding, state = (-(-n // pp) for n in (full, sliding, state))
    dtype = KV_DTYPE_BYTES[kv_dtype]
    block = 64 if version >= (0, 34, 0) else 16
    page = int(block * _attn_elems(arch, tp) * dtype)
    counts = [n for n in (full, sliding, state) if n]
    group = min(counts) if counts else 1
    if version >= (0, 18, 0) and counts and max(counts) < 1.5 * min(counts):
        group = max(counts)
    if state:
        state_page = int(linear_layer_state_bytes(arch, dtype_bytes=2.0) / tp)
        if page < state_page:
            per_tok = _attn_elems(arch, tp) * dtype
            block = -(-state_page // int(per_tok * 16)) * 16
            page = int(block * per_tok)
        page = max(page, state_page)
    window = arch.local_attention.window if arch.local_attention is not None else None
    return KvLayout(
        block_size=block,
        page_bytes=page,
        group_size=group,
        full_groups=-(-full // group),
        sliding_groups=-(-sliding // group) if sliding else 0,
        state_groups=-(-state // group) if state else 0,
        window=window or 0,
    )


def _kinds(arch: Architecture) -> list[str]:
    glob = set(arch.global_layer_indices())
    local = arch.local_attention
    kind = "sliding" if local is None or local.kind != "linear" else "linear"
    return ["global" if i in glob else kind for i in range(arch.layers)]


# --- the budget ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VllmTerms:
    """vLLM's memory terms for one GPU (bytes), and the pool cut into blocks."""

    version: Version
    budget: int
    weights: int
    activation: int
    non_torch: int
    #: CUDA graphs: inside the budget from 0.20 (an estimate vLLM subtracts), else
    #: captured afterwards in the headroom the utilization leaves.
    cuda_graphs: int
    graphs_in_budget: bool
    kv_cache: int
    layout: KvLayout
    max_num_batched_tokens: int
    max_num_seqs: int
    #: "GPU KV cache size" as the version logs it (tokens).
    kv_tokens: int
    #: Bytes per token of context (full-attention layers on this rank).
    kv_bytes_per_token: int

    def max_length(self, sequences: int = 1) -> int:
        return self.layout.max_length(self.kv_cache, self.max_num_batched_tokens, sequences)


def vllm_terms(
    arch: Architecture,
    *,
    gpu_total: int,
    weights_per_gpu: int,
    util: float,
    tp: int,
    pp: int,
    kv_dtype: str,
    version: Version = NEWEST,
    gpu_name: str = "",
    batched_tokens: int | None = None,
    max_num_seqs: int | None = None,
    max_model_len: int = 8192,
    enforce_eager: bool = False,
    v0: bool | None = None,
    hybrid_manager: bool = True,
    flashinfer: bool | None = None,
    spec_tokens: int = 0,
    p: dict[str, float] | None = None,
) -> VllmTerms:
    """vLLM on one GPU: the KV pool left by the version's profiling, in blocks."""
    p = p or params()
    old = v0 if v0 is not None else not is_v1(version)
    mnbt_d, seqs_d = batch_defaults(version, gpu_total, gpu_name, v0=old)
    mnbt = batched_tokens or mnbt_d
    seqs = max_num_seqs or seqs_d
    budget = math.ceil(util * gpu_total) if version >= (0, 14, 0) else int(util * gpu_total)
    tokens = profiled_tokens(version, mnbt, seqs, max_model_len, v0=old)
    # The sampler runs on the forward's last hidden states while the allocator still
    # holds the forward's blocks: published peaks match the sum (Llama-3-8B V0 on an
    # H100: 1.26 GiB logged, 0.84 + 0.24 summed; Qwen3-8B V1: 3.04 GiB).
    act = forward_bytes(arch, tokens, tp, p) + sampler_bytes(
        arch, version, min(seqs, tokens), p, v0=old, flashinfer=flashinfer
    )
    if spec_tokens:
        act += int(min(seqs, tokens) * arch.vocab_size * spec_tokens * p["spec_sampler"])
    non_torch = p["non_torch_gib"] * GiB
    nccl_inside = old or (0, 9, 1) <= version < (0, 11, 0)
    if tp * pp > 1:
        non_torch += (p["nccl_gib"] if nccl_inside else p["nccl_lazy_gib"]) * GiB
    if version >= (0, 27, 0) and not old:
        non_torch += p["runner_gib"] * GiB
    graphs = 0 if enforce_eager else graph_bytes(arch, version, seqs, mnbt, p)
    in_budget = (0, 20, 0) <= version < (0, 34, 0) and not old
    kv = budget - weights_per_gpu - act - int(non_torch) - (graphs if in_budget else 0)
    if version >= (0, 34, 0) and not old:
        # 0.34's extensible cache measures the graphs before sizing the pool, and when the
        # device's memory (not the utilization) is the limit it keeps max(1 GiB, 0.75 ×
        # peak) for transients on top of the peak (vllm/v1/worker/extensible_kv_cache.py).
        kv -= graphs
        context = int(0.5 * GiB)
        cap = gpu_total - context - weights_per_gpu - int(non_torch) - graphs - act
        kv = min(kv, cap - max(GiB, int(0.75 * act)))
    layout = kv_layout(
        arch,
        version=version,
        tp=tp,
        pp=pp,
        kv_dtype=kv_dtype,
        hybrid_manager=hybrid_manager,
        extra_full_layers=arch.mtp_layers if spec_tokens else 0,
    )
    blocks = layout.blocks(kv)
    groups = layout.full_groups + layout.sliding_groups + layout.state_groups
    if (0, 9, 0) <= version < (0, 22, 0) and groups > 1:
        reported = blocks // groups * layout.block_size
    elif version >= (0, 22, 0) and groups > 1:
        per_req = layout.request_blocks(max_model_len, mnbt)
        reported = int(blocks / per_req * max_model_len) if per_req else 0
    else:
        reported = blocks * layout.block_size
    return VllmTerms(
        version=version,
        budget=budget,
        weights=weights_per_gpu,
        activation=act,
        non_torch=int(non_torch),
        cuda_graphs=graphs,
        graphs_in_budget=in_budget,
        kv_cache=kv,
        layout=layout,
        max_num_batched_tokens=mnbt,
        max_num_seqs=seqs,
        kv_tokens=max(0, reported),
        kv_bytes_per_token=int(layout.bytes_per_token()),
    )


def describe(t: VllmTerms) -> dict[str, Any]:
    """The terms as a plan shows them (bytes)."""
    return {
        "version": version_text(t.version),
        "budget": t.budget,
        "weights": t.weights,
        "activation": t.activation,
        "non_torch": t.non_torch,
        "cuda_graphs": t.cuda_graphs,
        "cuda_graphs_in_budget": t.graphs_in_budget,
        "kv_cache": t.kv_cache,
        "block_size": t.layout.block_size,
        "kv_groups": {
            "full": t.layout.full_groups,
            "sliding": t.layout.sliding_groups,
            "state": t.layout.state_groups,
            "layers_per_group": t.layout.group_size,
        },
        "max_num_batched_tokens": t.max_num_batched_tokens,
        "max_num_seqs": t.max_num_seqs,
    }
