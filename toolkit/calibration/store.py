"""Calibration records on disk: $DEPLOY_HOME/calibration/<id>.json, one per configuration.

A record is keyed by hardware fingerprint, engine, engine version, model (variant id),
ctx, concurrency and KV dtype; measuring the same configuration again replaces it.
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
from typing import TYPE_CHECKING, Any

from toolkit import settings
from toolkit.errors import NotFound
from toolkit.planner.types import CalibrationRecord, MeasuredDevice

if TYPE_CHECKING:
    from toolkit.calibration.logs import LogMemory

RECORD_SCHEMA = 1


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


def save_record(
    record: CalibrationRecord,
    memory: LogMemory | None = None,
    *,
    accepted_despite: tuple[str, ...] = (),
) -> Path:
    """Write one record to $DEPLOY_HOME/calibration/<id>.json (atomically). A record of
    the same configuration is replaced; a decode speed it had (from `deploy bench`) is
    kept when the new record has none. `accepted_despite`: why the decode speed was
    suspect (busy machine, far below the plan) when it is recorded anyway."""
    path = settings.calibration_dir() / f"{record.id}.json"
    log = memory.to_dict() if memory is not None else {}
    accepted = list(accepted_despite) if record.decode_tok_s is not None else []
    if path.exists():
        try:
            old_doc = json.loads(path.read_text())
            old = record_from_dict(old_doc["record"])
        except (OSError, ValueError, KeyError, TypeError):
            old = None
            old_doc = {}
        if old is not None and record.decode_tok_s is None and old.decode_tok_s is not None:
            record = replace(record, decode_tok_s=old.decode_tok_s)
            accepted = list(old_doc.get("accepted_despite") or [])
        if not log:
            log = old_doc.get("log", {})
    doc: dict[str, Any] = {"schema": RECORD_SCHEMA, "record": record_to_dict(record), "log": log}
    if accepted:
        doc["accepted_despite"] = accepted
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
