"""Startup-log parsers: the memory vLLM and llama.cpp report while they load.

vLLM: model weights, available KV cache memory, KV cache tokens, max concurrency, CUDA
graph memory, activation peak (per tensor-parallel worker). llama.cpp: model / KV /
compute buffer sizes per device, KV cells, slots, ubatch. Pure text in, `LogMemory` out.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from toolkit.errors import UsageError
from toolkit.planner.types import Engine, MeasuredDevice

MiB = 1024**2
GiB = 1024**3


@dataclass(frozen=True)
class LogMemory:
    """What one engine startup log says about memory (bytes), plus the lines it came from."""

    engine: Engine
    engine_version: str | None
    devices: tuple[MeasuredDevice, ...]
    #: KV cache capacity in tokens (vLLM "KV cache size: N tokens"; llama.cpp KV cells).
    kv_tokens_capacity: int | None = None
    #: vLLM: "Maximum concurrency for N tokens per request: Xx".
    max_concurrency: float | None = None
    #: Context the engine was started with (vLLM max model len; llama.cpp n_ctx, all slots).
    ctx: int | None = None
    #: llama.cpp n_seq_max (parallel slots).
    slots: int | None = None
    ubatch: int | None = None
    kv_dtype: str | None = None
    #: vLLM: memory CUDA graphs took (measured after capture, or the profiler's estimate).
    cuda_graph_bytes: int | None = None
    #: vLLM: "Available KV cache memory" (per worker).
    available_kv_bytes: int | None = None
    #: The log lines each number was read from, in order.
    evidence: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def empty(self) -> bool:
        return not self.devices and self.kv_tokens_capacity is None


class _Acc:
    """Per-device byte sums while parsing."""

    def __init__(self) -> None:
        self.weights: dict[str, int] = {}
        self.kv: dict[str, int] = {}
        self.compute: dict[str, int] = {}
        self.order: list[str] = []

    def add(self, table: dict[str, int], device: str, value: int, *, replace: bool = False) -> None:
        if device not in self.order:
            self.order.append(device)
        table[device] = value if replace else table.get(device, 0) + value

    def devices(self) -> tuple[MeasuredDevice, ...]:
        return tuple(
            MeasuredDevice(
                id=d,
                weights_bytes=self.weights.get(d),
                kv_cache_bytes=self.kv.get(d),
                compute_bytes=self.compute.get(d),
            )
            for d in self.order
        )


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _int(text: str) -> int:
    return int(text.replace(",", ""))


# --- vLLM -------------------------------------------------------------------------------

_V_VERSION = (
    re.compile(r"vLLM API server version\s+(\S+)"),
    re.compile(r"Initializing a V\d LLM engine \(v([^)\s]+)\)"),
    re.compile(r"LLM engine \(v([^)\s]+)\) with config"),
)
_V_RANK = re.compile(r"\((?:\w*?TP(\d+)\b|VllmWorker\w* rank=(\d+))[^)]*\)")
_V_V0_WORKER = re.compile(r"\(VllmWorkerProcess pid=(\d+)\)")
_V_WEIGHTS = re.compile(
    r"(?:Model loading took|Loading model weights took|model weights take)\s+([\d.]+)\s*(GiB|GB)"
)
_V_AVAILABLE = re.compile(r"Available KV cache memory:\s+([\d.]+)\s*(GiB|GB)")
_V_KV_REST = re.compile(r"reserved for KV Cache is\s+([\d.]+)\s*(GiB|GB)")
_V_KV_IN_USE = re.compile(r"Current kv cache memory in use is\s+([\d.]+)\s*GiB")
_V_ACTIVATION = re.compile(
    r"(?:PyTorch activation peak memory takes|GiB for consumed memory \(weights \+ non-torch\),)"
    r"\s+([\d.]+)\s*(?:GiB|GB)(?: for peak activation)?"
)
_V_CONSUMED = re.compile(r"Actual usage is\s+([\d.]+)\s*GiB for consumed memory \(weights")
_V_SUMMARY_GRAPH = re.compile(r"([\d.]+)\s*GiB for CUDAGraph memory")
_V_KV_TOKENS = re.compile(r"\b(GPU|CPU|XPU|TPU|HPU|NPU)? ?KV cache size:\s+([\d,]+)\s+tokens")
_V_CONCURRENCY = re.compile(
    r"Maximum concurrency for\s+([\d,]+)\s+tokens per request:\s+([\d.,]+)x"
)
_V_GRAPH = re.compile(
    r"(?:Graph capturing finished in\s+\d+\s+secs?,\s*took|CUDA graph takes|"
    r"CUDA graph pool memory:)\s+([\d.]+)\s*GiB"
)
_V_GRAPH_EST = re.compile(r"Estimated CUDA graph memory:\s+([\d.]+)\s*GiB")
_V_CPU_KV = re.compile(r"Explicitly set \(([\d.]+)/[\d.]+\) GiB for KV cache")
_V_DTYPE = re.compile(r"[ ,(]dtype=torch\.(\w+)")
_V_KV_DTYPE = re.compile(r"kv_cache_dtype=(\w+)")
_TORCH_DTYPES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "half": "f16"}
_V_CPU_PLATFORM = re.compile(r"Automatically detected platform cpu|device_config=cpu")


def _gib(text: str) -> int:
    return round(_num(text) * GiB)


def parse_vllm_log(text: str) -> LogMemory:
    """Memory vLLM reports while starting. vLLM prints sizes in GiB (older versions wrote
    the same GiB figure with a "GB" label); tensor-parallel workers each log their own
    (`Worker_TP1`, `VllmWorker rank=1`; V0's unnumbered `VllmWorkerProcess` workers are
    ranked 1, 2 … in order of appearance, the driver being rank 0)."""
    lines = text.splitlines()
    cpu = any(_V_CPU_PLATFORM.search(ln) or "CPU KV cache size" in ln for ln in lines)
    acc = _Acc()
    activation: dict[str, int] = {}
    graph: dict[str, int] = {}
    graph_estimate: dict[str, int] = {}
    v0_workers: dict[str, int] = {}
    evidence: list[str] = []
    version: str | None = None
    kv_tokens: int | None = None
    concurrency: float | None = None
    ctx: int | None = None
    available: int | None = None
    dtype: str | None = None
    kv_dtype: str | None = None

    def device_of(line: str) -> str:
        if cpu:
            return "cpu"
        if m := _V_RANK.search(line):
            return f"cuda:{next(g for g in m.groups() if g is not None)}"
        if m := _V_V0_WORKER.search(line):
            return f"cuda:{v0_workers.setdefault(m.group(1), len(v0_workers) + 1)}"
        return "cuda:0"

    for line in lines:
        if version is None:
            for pat in _V_VERSION:
                if m := pat.search(line):
                    version = m.group(1)
                    break
        device = device_of(line)
        hit = False
        if dtype is None and (m := _V_DTYPE.search(line)):
            dtype = _TORCH_DTYPES.get(m.group(1), m.group(1))
        if kv_dtype is None and (m := _V_KV_DTYPE.search(line)):
            kv_dtype = m.group(1)
        if m := (_V_WEIGHTS.search(line) or _V_CONSUMED.search(line)):
            if m.re is _V_WEIGHTS or device not in acc.weights:
                acc.add(acc.weights, device, _gib(m.group(1)), replace=True)
            hit = True
        if m := (_V_AVAILABLE.search(line) or _V_KV_REST.search(line)):
            value = _gib(m.group(1))
            acc.add(acc.kv, device, value, replace=True)
            available = value if available is None else min(available, value)
            hit = True
        elif m := (_V_KV_IN_USE.search(line) or _V_CPU_KV.search(line)):
            acc.add(acc.kv, device, _gib(m.group(1)), replace=True)
            hit = True
        if m := _V_ACTIVATION.search(line):
            activation[device] = _gib(m.group(1))
            hit = True
        if m := (_V_GRAPH.search(line) or _V_SUMMARY_GRAPH.search(line)):
            graph[device] = _gib(m.group(1))
            hit = True
        elif m := _V_GRAPH_EST.search(line):
            graph_estimate[device] = _gib(m.group(1))
            hit = True
        if m := _V_KV_TOKENS.search(line):
            kv_tokens = _int(m.group(2))
            hit = True
        if m := _V_CONCURRENCY.search(line):
            ctx = _int(m.group(1))
            concurrency = _num(m.group(2))
            hit = True
        if hit:
            evidence.append(line.strip())
    # Compute = activation peak + CUDA graphs (measured, else vLLM's own estimate).
    for device in {**graph_estimate, **activation, **graph}:
        value = activation.get(device, 0) + graph.get(device, graph_estimate.get(device, 0))
        acc.add(acc.compute, device, value, replace=True)
    graphs = graph or graph_estimate
    # KV "auto" follows the weights' compute dtype; fp8 variants are all "fp8" to us.
    if kv_dtype is not None and kv_dtype != "auto":
        kv_dtype = "fp8" if kv_dtype.startswith("fp8") else kv_dtype
    else:
        kv_dtype = dtype
    return LogMemory(
        engine="vllm",
        engine_version=version,
        devices=acc.devices(),
        kv_tokens_capacity=kv_tokens,
        max_concurrency=concurrency,
        ctx=ctx,
        kv_dtype=kv_dtype,
        cuda_graph_bytes=max(graphs.values()) if graphs else None,
        available_kv_bytes=available,
        evidence=tuple(evidence),
    )


# --- llama.cpp --------------------------------------------------------------------------

_L_VERSION = re.compile(r"\bbuild(?:\s*[=:])?\s+(\d+)\s*\(([0-9a-f]+)\)")
_L_MODEL_BUF = re.compile(
    r"(?:load_tensors|llm_load_tensors):\s+(\S+)\s+(?:model\s+)?buffer size\s*=\s*([\d.]+)\s*MiB"
)
_L_KV_BUF = re.compile(r":\s+(\S+)\s+(?:KV|RS) buffer size\s*=\s*([\d.]+)\s*MiB")
_L_COMPUTE_BUF = re.compile(r":\s+(\S+)\s+(?:compute|output) buffer size\s*=\s*([\d.]+)\s*MiB")
_L_KV_SIZE = re.compile(
    r"llama_kv_cache\w*:\s+size\s*=\s*([\d.]+)\s*MiB\s*\(\s*(\d+)\s+cells,\s*\d+\s+layers,"
    r"\s*(\d+)(?:/(\d+))?\s+seqs[^)]*\),\s*K\s*\((\w+)\)"
)
_L_KV_SELF = re.compile(r"KV self size\s*=\s*([\d.]+)\s*MiB,\s*K\s*\((\w+)\)")
_L_CTX = re.compile(
    r"(?:llama_context|llama_new_context_with_model|llama_init_from_model):\s+n_ctx\s*=\s*(\d+)"
)
_L_SEQ = re.compile(r"(?:llama_context|llama_init_from_model):\s+n_seq_max\s*=\s*(\d+)")
_L_UBATCH = re.compile(
    r"(?:llama_context|llama_new_context_with_model|llama_init_from_model):\s+n_ubatch\s*=\s*(\d+)"
)
_L_DEVICE = re.compile(r"^(CUDA|ROCm|MTL|Metal|Vulkan|SYCL|CANN|MUSA|RPC\[[^\]]*\])(\d*)")


def llamacpp_device(name: str) -> str:
    """llama.cpp buffer name -> our device id: CUDA0 -> cuda:0, CPU_Mapped -> cpu."""
    m = _L_DEVICE.match(name)
    if m is None or name.endswith("_Host"):
        return "cpu"  # CPU, CPU_Mapped, CPU_REPACK, CUDA_Host (pinned host memory)
    kind, index = m.group(1), int(m.group(2) or 0)
    prefix = {"CUDA": "cuda", "ROCm": "rocm", "MTL": "metal", "Metal": "metal"}.get(kind, "gpu")
    return f"{prefix}:{index}"


def parse_llamacpp_log(text: str) -> LogMemory:
    """Buffer sizes llama.cpp logs while loading (MiB per buffer; summed per device)."""
    acc = _Acc()
    evidence: list[str] = []
    version: str | None = None
    kv_cells: int | None = None
    kv_dtype: str | None = None
    ctx = slots = ubatch = None
    for line in text.splitlines():
        if version is None and (m := _L_VERSION.search(line)):
            version = f"b{m.group(1)} ({m.group(2)})"
        if m := _L_MODEL_BUF.search(line):
            acc.add(acc.weights, llamacpp_device(m.group(1)), round(_num(m.group(2)) * MiB))
            evidence.append(line.strip())
        elif m := _L_KV_BUF.search(line):
            acc.add(acc.kv, llamacpp_device(m.group(1)), round(_num(m.group(2)) * MiB))
            evidence.append(line.strip())
        elif m := _L_COMPUTE_BUF.search(line):
            acc.add(acc.compute, llamacpp_device(m.group(1)), round(_num(m.group(2)) * MiB))
            evidence.append(line.strip())
        elif m := _L_KV_SIZE.search(line):
            # "N cells … a/b seqs": b streams of N cells each when the KV is not unified.
            cells = int(m.group(2)) * int(m.group(4) or 1)
            kv_cells = max(kv_cells or 0, cells)
            kv_dtype = kv_dtype or m.group(5)
            evidence.append(line.strip())
        elif m := _L_KV_SELF.search(line):
            kv_dtype = kv_dtype or m.group(2)
            evidence.append(line.strip())
        elif ctx is None and (m := _L_CTX.search(line)):
            ctx = int(m.group(1))
        elif slots is None and (m := _L_SEQ.search(line)):
            slots = int(m.group(1))
        elif ubatch is None and (m := _L_UBATCH.search(line)):
            ubatch = int(m.group(1))
    return LogMemory(
        engine="llamacpp",
        engine_version=version,
        devices=acc.devices(),
        kv_tokens_capacity=kv_cells if kv_cells is not None else ctx,
        ctx=ctx,
        slots=slots,
        ubatch=ubatch,
        kv_dtype=kv_dtype,
        evidence=tuple(evidence),
    )


def parse_log(text: str, engine: Engine) -> LogMemory:
    if engine == "vllm":
        return parse_vllm_log(text)
    if engine == "llamacpp":
        return parse_llamacpp_log(text)
    raise UsageError(f"no startup-log parser for engine {engine!r}")
