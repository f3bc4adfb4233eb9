"""The Plan: a frozen, versioned document of settings BY MEANING (not argv).

`deploy plan --json` writes one; `deploy up --plan FILE` executes it unchanged later; the
engine module renders argv for the engine version installed at launch time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from toolkit.errors import UsageError
from toolkit.hardware.model import Hardware

PLAN_SCHEMA = 1

Engine = Literal["llamacpp", "vllm"]
Placement = Literal[
    "gpu",  # whole model on one GPU
    "tensor_parallel",  # vLLM TP (optionally with expert parallel)
    "pipeline_parallel",  # vLLM PP (or TP×PP)
    "data_parallel",  # vLLM data-parallel attention with expert-parallel experts
    "layer_split",  # llama.cpp layers split across GPUs
    "partial_offload",  # llama.cpp: some layers on GPU(s), the rest on CPU
    "expert_offload",  # llama.cpp: MoE experts of some/all layers on CPU (--n-cpu-moe)
    "cpu",  # CPU only
    "unified",  # Apple/Jetson unified memory
]
KvDtype = Literal["f16", "bf16", "fp8", "q8_0", "q4_0", "f32"]


@dataclass(frozen=True)
class DeviceMemory:
    """Predicted use of one device: 'cuda:0', 'cpu' (RAM)."""

    id: str
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    overhead_bytes: int
    total_bytes: int
    #: What the engine may use there (vLLM: utilization × total; llama.cpp: free − reserve).
    capacity_bytes: int
    #: Memory free on the device when planned (for the "vs free" column).
    free_bytes: int | None = None
    #: Terms replaced by calibration records ("kv_cache_bytes", "compute_bytes"…).
    measured: tuple[str, ...] = ()
    #: Caches the engine fills while it serves, capped by the plan's settings (llama-server:
    #: the prompt cache `--cache-ram` and the context checkpoints `--ctx-checkpoints`, in
    #: RAM). Part of total_bytes.
    cache_bytes: int = 0
    #: Part of total_bytes in file pages the engine no longer reads (the GGUF bytes of the
    #: tensors llama.cpp copied into its CPU_REPACK buffer): resident after loading, given
    #: back by the kernel under memory pressure, so not counted against capacity_bytes.
    reclaimable_bytes: int = 0

    @property
    def needed_bytes(self) -> int:
        """What must fit in capacity_bytes: total_bytes less reclaimable file pages."""
        return self.total_bytes - self.reclaimable_bytes


@dataclass(frozen=True)
class LlamaCppSettings:
    n_gpu_layers: int = 0
    #: MoE layers whose experts stay on the CPU (--n-cpu-moe).
    n_cpu_moe: int = 0
    #: --tensor-split proportions per GPU, when the model spans several.
    tensor_split: tuple[float, ...] = ()
    flash_attn: Literal["on", "off", "auto"] = "auto"
    batch: int = 2048
    ubatch: int = 512
    threads: int | None = None
    #: Parallel slots (-np); ctx is per slot × slots in total.
    slots: int = 1
    mmap: bool = True
    #: llama-server's prompt cache (--cache-ram, MiB; 0 = off). None: the engine's default.
    cache_ram_mib: int | None = None
    #: Context checkpoints per slot (--ctx-checkpoints). None: the engine's default.
    ctx_checkpoints: int | None = None
    #: rpc-server workers whose devices hold layers (--rpc host:port,…).
    rpc: tuple[str, ...] = ()


@dataclass(frozen=True)
class VllmSettings:
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    #: Data-parallel attention replicas (`--data-parallel-size`, with expert parallel).
    data_parallel: int = 1
    expert_parallel: bool = False
    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    #: Weight dtype the engine computes in (bfloat16, float16, float32).
    dtype: str | None = None
    #: --quantization when the checkpoint needs it named (awq_marlin, gptq_marlin, fp8…).
    quantization: str | None = None
    #: CPU backend: KV space set explicitly, in bytes (VLLM_CPU_KVCACHE_SPACE or
    #: --kv-cache-memory-bytes).
    kv_cache_bytes: int | None = None
    enforce_eager: bool = False
    #: "cuda" or "cpu".
    device: str = "cuda"
    #: The vLLM version whose memory accounting the plan follows.
    version: str | None = None
    #: vLLM's memory terms per GPU as planned (bytes; see toolkit.planner.vllm_memory).
    memory_terms: dict[str, Any] | None = None
    #: Speculative decoding with the model's MTP layers: tokens proposed per step.
    speculative_tokens: int | None = None
    #: LoRA serving: (--max-loras, --max-lora-rank); None = off.
    lora: tuple[int, int] | None = None


@dataclass(frozen=True)
class SpeedEstimate:
    decode_tok_s: float | None
    #: Aggregate decode across all concurrent streams.
    decode_tok_s_aggregate: float | None
    prefill_tok_s: float | None
    #: One line saying what the numbers rest on.
    basis: str
    measured: bool = False
    #: Expected range of per-stream decode tok/s (the fitted model's spread on published
    #: measurements); None when there is no estimate.
    decode_low: float | None = None
    decode_high: float | None = None


@dataclass(frozen=True)
class Plan:
    model_id: str
    variant_id: str
    engine: Engine
    placement: Placement
    #: Devices used, by id ("cuda:0", "cuda:1", "cpu").
    devices: tuple[str, ...]
    ctx: int
    concurrency: int
    kv_dtype: KvDtype
    memory: tuple[DeviceMemory, ...]
    speed: SpeedEstimate
    #: The kernel path the engine is expected to take ("fp8 marlin weight-only", "gguf cpu").
    kernel: str
    format: str
    quant: str
    download_bytes: int | None
    weights_bytes: int
    kv_bytes_per_token: int
    llamacpp: LlamaCppSettings | None = None
    vllm: VllmSettings | None = None
    #: vLLM: KV tokens the pool holds and the concurrency at ctx it allows.
    kv_tokens_capacity: int | None = None
    max_concurrency: float | None = None
    #: Largest context (per stream, at this concurrency) this placement holds.
    max_ctx: int | None = None
    calibration: tuple[str, ...] = ()
    #: One-line notes a user should read (warnings, assumptions).
    notes: tuple[str, ...] = ()
    #: The hardware the plan was made for: fingerprint and origin.
    hardware: dict[str, Any] = field(default_factory=dict)
    #: A local path (GGUF file or model folder) when the model did not come from a recipe.
    model_path: str | None = None
    #: download_bytes computed from the architecture and the quant layout (no file listing).
    download_estimated: bool = False
    #: Ranking facts (docs/planner.md "Ranking"): meets the speed and context floors; the
    #: label when it does not ("fits but slow", "fits but short"); the model's capability on
    #: the catalog's main scale and how it was obtained; the quantization quality class.
    usable: bool = True
    label: str | None = None
    capability: float | None = None
    capability_basis: str = ""
    quality: str = ""
    #: Why this plan ranks above the next one (one line); empty for the last.
    rank_reason: str = ""
    #: The context the user asked for (or the default) when the plan had to lower it to fit.
    ctx_lowered_from: int | None = None
    schema: int = PLAN_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        if data.get("schema") != PLAN_SCHEMA:
            raise UsageError(
                f"plan schema {data.get('schema')!r} is not supported (this deploy reads "
                f"schema {PLAN_SCHEMA})",
                hint="make a new plan: deploy plan MODEL --json > plan.json",
            )
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        kw["devices"] = tuple(kw["devices"])
        kw["memory"] = tuple(DeviceMemory(**_tuples(m)) for m in kw["memory"])
        kw["speed"] = SpeedEstimate(**kw["speed"])
        if kw.get("llamacpp") is not None:
            kw["llamacpp"] = LlamaCppSettings(**_tuples(kw["llamacpp"]))
        if kw.get("vllm") is not None:
            vllm = dict(kw["vllm"])
            if isinstance(vllm.get("lora"), list):
                vllm["lora"] = tuple(vllm["lora"])
            kw["vllm"] = VllmSettings(**vllm)
        for key in ("calibration", "notes"):
            kw[key] = tuple(kw.get(key, ()))
        return cls(**kw)


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


@dataclass(frozen=True)
class Rejection:
    """A variant (or variant × engine) that was considered and does not work, and why."""

    variant_id: str
    engine: Engine | None
    reason: str
    #: What it would need ("needs 18.2 GiB, 16.0 GiB free").
    needs_bytes: int | None = None
    have_bytes: int | None = None
    #: The configuration that was tried: its placement and memory per device.
    placement: str | None = None
    memory: tuple[DeviceMemory, ...] = ()


@dataclass(frozen=True)
class MeasuredDevice:
    """Memory an engine reported (or a process used) on one device, in bytes."""

    id: str
    weights_bytes: int | None = None
    kv_cache_bytes: int | None = None
    compute_bytes: int | None = None
    #: Everything the process held on that device (RSS for "cpu").
    total_bytes: int | None = None


@dataclass(frozen=True)
class CalibrationRecord:
    """What a real run measured; an explicit planner input keyed by hardware/engine/model.

    The planner uses a record whose `hardware_key`, `engine` and `model_key` match the plan
    being made (a measured term replaces the modelled one) and names it in Plan.calibration.
    """

    id: str
    hardware_key: str
    engine: Engine
    engine_version: str
    #: Variant id, or "file:<sha256 prefix>" for a local file.
    model_key: str
    ctx: int
    concurrency: int
    kv_dtype: str
    devices: tuple[MeasuredDevice, ...]
    kv_tokens_capacity: int | None = None
    decode_tok_s: float | None = None
    ubatch: int | None = None
    #: Where the numbers came from (log file, bench result).
    source: str = ""
    created: str = ""


Prefer = Literal["quality", "speed", "context"]
FlashAttn = Literal["on", "off", "auto"]


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for. Anything left None is searched by the planner."""

    ctx: int | None = None
    concurrency: int = 1
    engine: Engine | None = None
    #: A weight format or GGUF type (bf16, fp8, awq, q4_k_m …): filters recipe variants,
    #: or sets the format a config-only model is estimated in.
    quant: str | None = None
    #: A variant id (`qwen3-coder-30b-a3b:q4_k_m`) or its quant part.
    variant: str | None = None
    kv_dtype: KvDtype | None = None
    tp: int | None = None
    #: vLLM pipeline-parallel size (None: searched).
    pp: int | None = None
    gpu_mem_util: float | None = None
    ngl: int | None = None
    n_cpu_moe: int | None = None
    prefer: Prefer = "quality"
    flash_attn: FlashAttn | None = None
    ubatch: int | None = None
    #: vLLM: tokens per scheduler step (drives the activation peak); None = vLLM's default.
    max_num_batched_tokens: int | None = None
    #: vLLM: the version to plan memory for ("0.11"); None = the installed one, else the
    #: newest modelled.
    vllm_version: str | None = None
    #: vLLM: data-parallel attention with expert parallelism over this many GPUs
    #: (`--data-parallel-size N --enable-expert-parallel`); None = chosen by the planner
    #: for MoE models, 1 = tensor parallel only.
    dp: int | None = None
    #: vLLM speculative decoding with the model's own multi-token-prediction layers:
    #: tokens proposed per step (`--speculative-config {"method": "mtp", …}`).
    spec_tokens: int | None = None
    #: vLLM LoRA serving: the largest adapter rank (`--max-lora-rank`; None = no LoRA)
    #: and how many adapters a batch may mix (`--max-loras`).
    lora_rank: int | None = None
    max_loras: int = 1
    #: A cluster (`deploy plan --cluster`): nodes, GPUs per node, the network's one-way
    #: latency. Tensor parallel stays inside a node; pipeline stages or layer ranges
    #: cross nodes.
    cluster_nodes: int = 1
    gpus_per_node: int = 0
    net_latency_s: float = 0.0
    #: llama.cpp: spread the layers over every GPU given (RPC workers: llama-server uses
    #: every device it sees, so the plan must place layers on all of them).
    all_gpus: bool = False
    #: Usable floors: plans below either are listed after every usable plan. None: the
    #: defaults (10 tok/s; 8192 tokens or the model's own floor).
    min_tok_s: float | None = None
    min_ctx: int | None = None
    #: Retry a model that does not fit at shorter contexts, down to the context floor
    #: (`deploy plan`, `deploy up`); off for `deploy estimate`, which sizes one setting.
    lower_ctx: bool = True


@dataclass(frozen=True)
class PlanResult:
    """Ranked viable plans (best first) and every rejected option with its reason."""

    plans: tuple[Plan, ...]
    rejections: tuple[Rejection, ...]
    hardware: Hardware
    #: Model ids considered (a family name expands to several).
    models: tuple[str, ...] = ()
    #: When nothing fits: the option that came closest, and what would make it fit.
    closest: Rejection | None = None
    suggestion: str | None = None
    #: Models named by the request that could not be planned at all (no architecture).
    unplanned: tuple[Rejection, ...] = ()

    @property
    def best(self) -> Plan | None:
        return self.plans[0] if self.plans else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": PLAN_SCHEMA,
            "models": list(self.models),
            "hardware": self.hardware.to_dict(),
            "plans": [p.to_dict() for p in self.plans],
            "rejections": [asdict(r) for r in self.rejections],
            "closest": asdict(self.closest) if self.closest else None,
            "suggestion": self.suggestion,
            "unplanned": [asdict(r) for r in self.unplanned],
        }
