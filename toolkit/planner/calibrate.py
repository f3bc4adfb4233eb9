"""Calibration records (what a real run measured) replace modelled terms.

A record matches a plan when hardware fingerprint, engine and variant id agree, and —
when the engine version installed for the plan's engine is known — the engine version
too. Records are taken newest first (`created`), and the first record that supplies a
term wins it: weights from the newest matching record; KV, compute and decode tok/s from
the newest record of the same ctx, concurrency and KV dtype. When the installed version
is unknown, the plan's notes say which engine version the records used came from. The
plan names every record it used and each device lists the terms that were measured.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

from toolkit.hardware.model import Hardware
from toolkit.planner.types import CalibrationRecord, DeviceMemory, Plan, SpeedEstimate

#: Engine → the versions installed for it ("llamacpp" may have the native server and
#: llama-cpp-python). A missing or empty entry means the version is unknown.
EngineVersions = Mapping[str, Collection[str]]


def matching(
    plan: Plan,
    records: Sequence[CalibrationRecord],
    hw: Hardware,
    engine_versions: EngineVersions | None = None,
) -> list[CalibrationRecord]:
    """The records for this plan, newest first (ISO-8601 `created` sorts as text)."""
    key = hw.fingerprint()
    found = [
        r
        for r in records
        if r.hardware_key == key and r.engine == plan.engine and r.model_key == plan.variant_id
    ]
    known = (engine_versions or {}).get(plan.engine)
    if known:
        found = [r for r in found if r.engine_version in known]
    return sorted(found, key=lambda r: r.created, reverse=True)


def apply_calibration(
    plan: Plan,
    records: Sequence[CalibrationRecord],
    hw: Hardware,
    engine_versions: EngineVersions | None = None,
) -> Plan:
    used: list[str] = []
    memory = list(plan.memory)
    speed = plan.speed
    taken: set[tuple[str, str]] = set()
    speed_taken = False
    versions: list[str] = []
    for rec in matching(plan, records, hw, engine_versions):
        same_shape = (
            rec.ctx == plan.ctx
            and rec.concurrency == plan.concurrency
            and rec.kv_dtype == plan.kv_dtype
        )
        touched = False
        for i, dev in enumerate(memory):
            m = next((d for d in rec.devices if d.id == dev.id), None)
            if m is None:
                continue
            changes: dict[str, int] = {}
            offered = {"weights_bytes": m.weights_bytes}
            if same_shape:
                offered |= {"kv_cache_bytes": m.kv_cache_bytes, "compute_bytes": m.compute_bytes}
            for term, value in offered.items():
                # a newer record already supplied this term: it wins
                if value is not None and (dev.id, term) not in taken:
                    changes[term] = value
                    taken.add((dev.id, term))
            if not changes:
                continue
            memory[i] = _replace_terms(dev, changes)
            touched = True
        if rec.decode_tok_s is not None and same_shape and not speed_taken:
            speed_taken = True
            speed = SpeedEstimate(
                decode_tok_s=rec.decode_tok_s,
                decode_tok_s_aggregate=rec.decode_tok_s * plan.concurrency
                if plan.concurrency == 1
                else speed.decode_tok_s_aggregate,
                prefill_tok_s=speed.prefill_tok_s,
                basis=f"measured: calibration record {rec.id} ({rec.source or 'run'})",
                measured=True,
            )
            touched = True
        if touched:
            used.append(rec.id)
            if rec.engine_version not in versions:
                versions.append(rec.engine_version)
    if not used:
        return plan
    notes = plan.notes
    if not (engine_versions or {}).get(plan.engine):
        notes = (
            *notes,
            f"calibration from {plan.engine} {', '.join(versions)} (newest record first); "
            "the installed engine version is unknown",
        )
    return replace(plan, memory=tuple(memory), speed=speed, calibration=tuple(used), notes=notes)


def _replace_terms(dev: DeviceMemory, changes: dict[str, int]) -> DeviceMemory:
    new = replace(dev, **changes)  # type: ignore[arg-type]
    total = (
        new.weights_bytes
        + new.kv_cache_bytes
        + new.compute_bytes
        + new.overhead_bytes
        + new.cache_bytes
    )
    measured = tuple(sorted(set(dev.measured) | set(changes)))
    return replace(new, total_bytes=total, measured=measured)
