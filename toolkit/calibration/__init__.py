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

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.calibration.store import (
    RECORD_SCHEMA,
    StoredRecord,
    build_record,
    delete_record,
    get_record,
    load_records,
    match_records,
    record_from_dict,
    record_to_dict,
    save_record,
    stored_records,
)
from toolkit.errors import NotFound
from toolkit.planner.types import CalibrationRecord, Plan

if TYPE_CHECKING:
    from toolkit.calibration.logs import (
        LogMemory,
        llamacpp_device,
        parse_llamacpp_log,
        parse_log,
        parse_vllm_log,
    )

#: The log parsers load on first use (their patterns compile at import; `deploy plan`
#: reads stored records and never parses a log).
_LOGS = ("LogMemory", "llamacpp_device", "parse_llamacpp_log", "parse_log", "parse_vllm_log")


def __getattr__(name: str) -> Any:
    if name in _LOGS:
        from toolkit.calibration import logs

        return getattr(logs, name)
    raise AttributeError(f"module 'toolkit.calibration' has no attribute {name!r}")


__all__ = [
    "RECORD_SCHEMA",
    "LogMemory",
    "StoredRecord",
    "build_record",
    "delete_record",
    "get_record",
    "llamacpp_device",
    "load_records",
    "match_records",
    "parse_llamacpp_log",
    "parse_log",
    "parse_vllm_log",
    "process_group_rss",
    "record_from_dict",
    "record_from_run",
    "record_to_dict",
    "save_record",
    "stored_records",
    "this_hardware_key",
]


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
    accepted_despite: tuple[str, ...] = (),
    save: bool = True,
) -> CalibrationRecord:
    """Parse a running (or just-started) server's log, add its process-group RSS, store and
    return the record. `deploy up` calls this once the model answers; `deploy calibrate`
    calls it for a run that is up.

    `hardware_key` defaults to the fingerprint in the plan's hardware section when the plan
    was made for this (detected) machine, else to this machine's fingerprint, detected now.
    `accepted_despite` names why `decode_tok_s` was suspect when it is recorded anyway
    (`deploy calibrate NAME --accept`); the stored file keeps the reasons beside it.
    """
    key = hardware_key or this_hardware_key(plan)
    try:
        text = log_file.read_text(errors="replace")
    except OSError as exc:
        raise NotFound(
            f"cannot read the server log {log_file}: {exc.strerror}", hint="deploy ps"
        ) from exc
    from toolkit.calibration.logs import parse_log

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
        save_record(record, memory, accepted_despite=accepted_despite)
    return record
