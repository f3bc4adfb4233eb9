"""Calibration: what a real run measured, kept as records the planner can use.

Three parts:

* log parsers: the memory an engine reports in its startup log (vLLM: model weights,
  available KV cache memory, KV cache tokens, max concurrency, CUDA graph memory; llama.cpp:
  model / KV / compute buffer sizes per device);
* the process's real memory: RSS summed over the server's process group (psutil);
* a record store under `settings.calibration_dir()`, one JSON file per record, matched by
  hardware fingerprint (`Hardware.fingerprint()`), engine, engine version and model.

Records are an explicit planner input (`CalibrationRecord` in toolkit/planner/types.py); the
planner stays pure and names the records it used in `Plan.calibration`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from toolkit import settings
from toolkit.errors import NotFound, UsageError
from toolkit.planner.types import CalibrationRecord, Engine, MeasuredDevice, Plan

RECORD_SCHEMA = 1
MiB = 1024**2
GiB = 1024**3


# ---------------------------------------------------------------------------- parsed logs


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

_L_VERSION = re.compile(r"\bbuild(?:\s*=|:)\s*(\d+)\s*\(([0-9a-f]+)\)")
_L_MODEL_BUF = re.compile(
    r"(?:load_tensors|llm_load_tensors):\s+(\S+)\s+(?:model\s+)?buffer size\s*=\s*([\d.]+)\s*MiB"
)
_L_KV_BUF = re.compile(r":\s+(\S+)\s+(?:KV|RS) buffer size\s*=\s*([\d.]+)\s*MiB")
_L_COMPUTE_BUF = re.compile(r":\s+(\S+)\s+(?:compute|output) buffer size\s*=\s*([\d.]+)\s*MiB")
_L_KV_SIZE = re.compile(
    r"llama_kv_cache\w*:\s+size\s*=\s*([\d.]+)\s*MiB\s*\(\s*(\d+)\s+cells,\s*\d+\s+layers,"
    r"\s*(\d+)(?:/\d+)?\s+seqs[^)]*\),\s*K\s*\((\w+)\)"
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
            kv_cells = max(kv_cells or 0, int(m.group(2)))
            kv_dtype = kv_dtype or m.group(4)
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


# ---------------------------------------------------------------------- process memory


def process_group_rss(pid: int) -> int | None:
    """Resident memory of the server: RSS summed over its process group (the launcher
    starts each server as the leader of its own session), or over the process and its
    children when it shares our group. None when the process is gone."""
    import psutil

    try:
        pgid = os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None
    procs: list[psutil.Process] = []
    if pgid != os.getpgid(0):
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == pgid:
                    procs.append(proc)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
    else:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
    total = 0
    for proc in procs:
        try:
            total += int(proc.memory_info().rss)
        except psutil.Error:
            continue
    return total or None


# ------------------------------------------------------------------------------ records


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "model"


def build_record(
    memory: LogMemory,
    *,
    hardware_key: str,
    engine_version: str,
    model_key: str,
    ctx: int,
    concurrency: int,
    kv_dtype: str,
    rss_bytes: int | None = None,
    ubatch: int | None = None,
    decode_tok_s: float | None = None,
    source: str = "",
    created: float | None = None,
) -> CalibrationRecord:
    """A record from a parsed log (+ the process's RSS as the "cpu" device's total)."""
    devices = list(memory.devices)
    if rss_bytes is not None:
        for i, d in enumerate(devices):
            if d.id == "cpu":
                devices[i] = MeasuredDevice(
                    id="cpu",
                    weights_bytes=d.weights_bytes,
                    kv_cache_bytes=d.kv_cache_bytes,
                    compute_bytes=d.compute_bytes,
                    total_bytes=rss_bytes,
                )
                break
        else:
            devices.append(MeasuredDevice(id="cpu", total_bytes=rss_bytes))
    stamp = created if created is not None else time.time()
    created_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
    # One record per configuration: measuring it again replaces the older one.
    digest = hashlib.sha256(
        json.dumps(
            [hardware_key, memory.engine, engine_version, model_key, ctx, concurrency, kv_dtype]
        ).encode()
    ).hexdigest()[:10]
    rid = f"{memory.engine}-{_slug(model_key)}-ctx{ctx}x{concurrency}-{digest}"
    return CalibrationRecord(
        id=rid,
        hardware_key=hardware_key,
        engine=memory.engine,
        engine_version=engine_version,
        model_key=model_key,
        ctx=ctx,
        concurrency=concurrency,
        kv_dtype=kv_dtype,
        devices=tuple(devices),
        kv_tokens_capacity=memory.kv_tokens_capacity,
        decode_tok_s=decode_tok_s,
        ubatch=ubatch if ubatch is not None else memory.ubatch,
        source=source,
        created=created_iso,
    )


def record_to_dict(record: CalibrationRecord) -> dict[str, Any]:
    return asdict(record)


def record_from_dict(data: dict[str, Any]) -> CalibrationRecord:
    kw = dict(data)
    kw["devices"] = tuple(MeasuredDevice(**d) for d in kw.get("devices", ()))
    return CalibrationRecord(**kw)


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True)
class StoredRecord:
    record: CalibrationRecord
    path: Path
    #: The parsed log behind it (evidence lines, vLLM CUDA graph bytes …).
    log: dict[str, Any] = field(default_factory=dict)


def save_record(record: CalibrationRecord, memory: LogMemory | None = None) -> Path:
    """Write one record to $DEPLOY_HOME/calibration/<id>.json (atomically). A record of
    the same configuration is replaced; a decode speed it had (from `deploy bench`) is
    kept when the new record has none."""
    path = settings.calibration_dir() / f"{record.id}.json"
    log = memory.to_dict() if memory is not None else {}
    if path.exists():
        try:
            old_doc = json.loads(path.read_text())
            old = record_from_dict(old_doc["record"])
        except (OSError, ValueError, KeyError, TypeError):
            old = None
            old_doc = {}
        if old is not None and record.decode_tok_s is None and old.decode_tok_s is not None:
            record = replace(record, decode_tok_s=old.decode_tok_s)
        if not log:
            log = old_doc.get("log", {})
    doc = {"schema": RECORD_SCHEMA, "record": record_to_dict(record), "log": log}
    _write_json_atomic(path, doc)
    return path


def stored_records() -> list[StoredRecord]:
    """Every readable record, newest first. Unreadable files are skipped (not fatal)."""
    root = settings.calibration_dir()
    out: list[StoredRecord] = []
    if not root.is_dir():
        return out
    for path in sorted(root.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
            if doc.get("schema") != RECORD_SCHEMA:
                continue
            out.append(StoredRecord(record_from_dict(doc["record"]), path, doc.get("log", {})))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    out.sort(key=lambda s: s.record.created, reverse=True)
    return out


def load_records(
    *,
    hardware_key: str | None = None,
    engine: str | None = None,
    engine_version: str | None = None,
    model_key: str | None = None,
) -> list[CalibrationRecord]:
    """Records matching every given key (None = any), newest first."""
    return match_records(
        [s.record for s in stored_records()],
        hardware_key=hardware_key,
        engine=engine,
        engine_version=engine_version,
        model_key=model_key,
    )


def match_records(
    records: Iterable[CalibrationRecord],
    *,
    hardware_key: str | None = None,
    engine: str | None = None,
    engine_version: str | None = None,
    model_key: str | None = None,
) -> list[CalibrationRecord]:
    """The records made on this hardware, with this engine (and version) and model."""
    wanted = {
        "hardware_key": hardware_key,
        "engine": engine,
        "engine_version": engine_version,
        "model_key": model_key,
    }
    return [r for r in records if all(v is None or getattr(r, k) == v for k, v in wanted.items())]


def get_record(record_id: str) -> StoredRecord:
    for s in stored_records():
        if s.record.id == record_id:
            return s
    raise NotFound(f"no calibration record {record_id!r}", hint="deploy calibrate --list")


def delete_record(record_id: str) -> Path:
    stored = get_record(record_id)
    stored.path.unlink()
    return stored.path


# ----------------------------------------------------------------- from a running server


def plan_kv_dtype(plan: Plan) -> str:
    return str(plan.kv_dtype)


def this_hardware_key(plan: Plan | None = None) -> str:
    """The machine measurements belong to: the plan's own fingerprint when it was planned
    for this (detected) machine, else this machine's, detected now."""
    hw = plan.hardware if plan is not None else {}
    if hw.get("source") == "detected" and hw.get("fingerprint"):
        return str(hw["fingerprint"])
    from toolkit.hardware.detect import detect

    return detect().fingerprint()


def record_from_run(
    *,
    plan: Plan,
    log_file: Path,
    pid: int | None,
    engine_version: str | None,
    hardware_key: str | None = None,
    decode_tok_s: float | None = None,
    save: bool = True,
) -> CalibrationRecord:
    """Parse a running (or just-started) server's log, add its process-group RSS, store and
    return the record. `deploy up` calls this once the model answers; `deploy calibrate`
    calls it for a run that is up.

    `hardware_key` defaults to the fingerprint in the plan's hardware section when the plan
    was made for this (detected) machine, else to this machine's fingerprint, detected now.
    """
    key = hardware_key or this_hardware_key(plan)
    try:
        text = log_file.read_text(errors="replace")
    except OSError as exc:
        raise NotFound(
            f"cannot read the server log {log_file}: {exc.strerror}", hint="deploy ps"
        ) from exc
    memory = parse_log(text, plan.engine)
    if memory.empty:
        raise NotFound(
            f"the server log {log_file} holds no memory report from {plan.engine}",
            hint="wait until the server is ready, then: deploy calibrate NAME",
        )
    rss = process_group_rss(pid) if pid else None
    slots = plan.llamacpp.slots if plan.llamacpp else plan.concurrency
    ctx = memory.ctx or plan.ctx
    if plan.engine == "llamacpp" and memory.ctx is not None and plan.llamacpp is not None:
        # llama.cpp's n_ctx is the whole KV (all slots); the plan's ctx is per request.
        ctx = max(1, memory.ctx // max(1, memory.slots or slots))
    record = build_record(
        memory,
        hardware_key=key,
        engine_version=engine_version or memory.engine_version or "unknown",
        model_key=plan.variant_id,
        ctx=ctx,
        concurrency=memory.slots or slots,
        kv_dtype=(memory.kv_dtype or plan_kv_dtype(plan)).lower(),
        rss_bytes=rss,
        ubatch=plan.llamacpp.ubatch if plan.llamacpp else None,
        decode_tok_s=decode_tok_s,
        source=str(log_file),
    )
    if save:
        save_record(record, memory)
    return record
