"""Calibration records (what a real run measured) replace modelled terms.

A record matches a plan when hardware fingerprint, engine and variant id agree. Weights
are taken whenever they match; KV and compute only when ctx, concurrency and KV dtype are
the same; decode tok/s when the placement is the same machine and variant. The plan
names every record it used and each device lists the terms that were measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from toolkit.hardware.model import Hardware
from toolkit.planner.types import CalibrationRecord, DeviceMemory, Plan, SpeedEstimate


def matching(
    plan: Plan, records: Sequence[CalibrationRecord], hw: Hardware
) -> list[CalibrationRecord]:
    key = hw.fingerprint()
    return [
        r
        for r in records
        if r.hardware_key == key and r.engine == plan.engine and r.model_key == plan.variant_id
    ]


def apply_calibration(plan: Plan, records: Sequence[CalibrationRecord], hw: Hardware) -> Plan:
    used: list[str] = []
    memory = list(plan.memory)
    speed = plan.speed
    for rec in matching(plan, records, hw):
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
            if m.weights_bytes is not None:
                changes["weights_bytes"] = m.weights_bytes
            if same_shape and m.kv_cache_bytes is not None:
                changes["kv_cache_bytes"] = m.kv_cache_bytes
            if same_shape and m.compute_bytes is not None:
                changes["compute_bytes"] = m.compute_bytes
            if not changes:
                continue
            memory[i] = _replace_terms(dev, changes)
            touched = True
        if rec.decode_tok_s is not None and same_shape:
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
    if not used:
        return plan
    return replace(plan, memory=tuple(memory), speed=speed, calibration=tuple(used))


def _replace_terms(dev: DeviceMemory, changes: dict[str, int]) -> DeviceMemory:
    new = replace(dev, **changes)  # type: ignore[arg-type]
    total = new.weights_bytes + new.kv_cache_bytes + new.compute_bytes + new.overhead_bytes
    measured = tuple(sorted(set(dev.measured) | set(changes)))
    return replace(new, total_bytes=total, measured=measured)
