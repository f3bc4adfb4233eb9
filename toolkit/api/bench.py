"""bench, calibrate, cost: the functions the CLI calls.

Composes toolkit.bench (load), toolkit.calibration (records), toolkit.cost (arithmetic)
with the run records (toolkit.runs), the hardware probe and the planner.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import bench as bench_mod
from toolkit import calibration, settings
from toolkit.bench import BenchResult, BenchSettings, LevelResult, Target
from toolkit.cost import CostReport, Price, Speed
from toolkit.errors import DeployError, EngineError, NotFound, UsageError
from toolkit.planner.types import CalibrationRecord, Plan

DEFAULT_CONCURRENCY = (1, 4, 16)


# ------------------------------------------------------------------------------- bench


@dataclass(frozen=True)
class BenchOptions:
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    prompt_tokens: int = 512
    output_tokens: int = 128
    duration_s: float = 30.0
    #: Each request must finish within this many seconds (connect: 10 s).
    timeout_s: float = 300.0
    ignore_eos: bool = True
    save: bool = True


def parse_concurrency(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise UsageError(f"bad --concurrency {text!r}: expected numbers like 1,4,16") from exc
    if not levels or any(c < 1 for c in levels):
        raise UsageError(f"bad --concurrency {text!r}: levels must be >= 1")
    return levels


def _load_run(name: str) -> Any:
    from toolkit.runs import process, records

    record = records.load(name)
    if not process.alive(record.pid, record.create_time):
        raise EngineError(
            f"run {name!r} is not running (its process is gone)",
            hint=f"deploy logs {name}   then   deploy up {record.model} --name {name}",
        )
    return record


def _read_key(key_file: str | None) -> str | None:
    if not key_file:
        return None
    try:
        return Path(key_file).read_text().strip() or None
    except OSError as exc:
        raise NotFound(f"cannot read the run's API key file {key_file}: {exc.strerror}") from exc


def _plan_of(record: Any) -> Plan | None:
    try:
        return Plan.from_dict(record.plan) if record.plan else None
    except (DeployError, TypeError, KeyError):
        return None


def predicted(plan: Plan | None, level: int) -> tuple[float | None, str | None]:
    """The plan's decode prediction for one concurrency level: per stream at 1, the
    aggregate at the plan's own concurrency; nothing in between (not modelled)."""
    if plan is None:
        return None, None
    if level == 1 and plan.speed.decode_tok_s is not None:
        return plan.speed.decode_tok_s, "per request"
    if level == plan.concurrency and plan.speed.decode_tok_s_aggregate is not None:
        return plan.speed.decode_tok_s_aggregate, "aggregate"
    return None, None


def bench_run(name: str, opts: BenchOptions) -> BenchResult:
    """Benchmark a run started by `deploy up`, next to its plan's predictions."""
    record = _load_run(name)
    plan = _plan_of(record)
    target = Target(
        base_url=record.base_url,
        model=record.served_model_name,
        api_key=_read_key(record.key_file),
        label=name,
    )
    log = Path(record.log_file)
    reader = bench_mod.LogTail(log) if record.engine == "llamacpp" and log.exists() else None
    hardware = _this_hardware()
    result = _bench(target, opts, log_reader=reader)
    levels = []
    for lv in result.levels:
        value, kind = predicted(plan, lv.concurrency)
        levels.append(_replace(lv, predicted_tok_s=value, predicted_kind=kind))
    result.levels = levels
    result.engine = record.engine
    result.engine_version = record.engine_version
    result.model_key = record.variant_id
    result.plan = record.plan or None
    result.hardware = hardware.to_dict() if hardware is not None else None
    result.hardware_key = hardware.fingerprint() if hardware is not None else None
    result.target = {"run": name, "base_url": record.base_url, "model": target.model}
    single = next((lv for lv in result.levels if lv.concurrency == 1), None)
    if opts.save and plan is not None and single is not None and single.decode_tok_s.p50:
        # The measured single-stream decode rate joins the run's calibration record, so
        # the next plan for this model on this machine shows it (marked measured).
        try:
            rec = calibration.record_from_run(
                plan=plan,
                log_file=log,
                pid=record.pgid or record.pid,
                engine_version=record.engine_version,
                hardware_key=result.hardware_key,
                decode_tok_s=single.decode_tok_s.p50,
            )
            result.extra["calibration_record"] = rec.id
        except DeployError as exc:
            result.extra["calibration_error"] = str(exc)
    if opts.save:
        save_result(result, name)
    return result


def bench_url(url: str, model: str, api_key_env: str | None, opts: BenchOptions) -> BenchResult:
    """Benchmark any OpenAI-compatible server (local or hosted)."""
    key = None
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise UsageError(
                f"environment variable {api_key_env} is empty or not set",
                hint=f"export {api_key_env}=...   then rerun",
            )
    base = url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    target = Target(base_url=base, model=model, api_key=key, label=url)
    result = _bench(target, opts, log_reader=None)
    result.target = {"url": base, "model": model}
    if opts.save:
        save_result(result, _slug(url))
    return result


def _bench(
    target: Target, opts: BenchOptions, log_reader: bench_mod.LogReader | None
) -> BenchResult:
    bsettings, levels = bench_mod.run_bench(
        target,
        concurrency=opts.concurrency,
        prompt_tokens=opts.prompt_tokens,
        output_tokens=opts.output_tokens,
        duration_s=opts.duration_s,
        timeout_s=opts.timeout_s,
        ignore_eos=opts.ignore_eos,
        log_reader=log_reader,
    )
    return BenchResult(
        target={},
        settings=bsettings,
        levels=levels,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def _replace(level: LevelResult, **changes: Any) -> LevelResult:
    from dataclasses import replace

    return replace(level, **changes)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "server"


def _this_hardware() -> Any:
    try:
        from toolkit.hardware.detect import detect

        return detect()
    except (ImportError, DeployError):
        return None


def save_result(result: BenchResult, label: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = settings.bench_dir() / f"{_slug(label)}-{stamp}-{os.getpid()}.json"
    result.path = str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def load_results() -> list[dict[str, Any]]:
    """Saved bench results, newest first."""
    root = settings.bench_dir()
    out: list[dict[str, Any]] = []
    if root.is_dir():
        for path in root.glob("*.json"):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
    out.sort(key=lambda d: str(d.get("created", "")), reverse=True)
    return out


def result_from_dict(doc: dict[str, Any]) -> BenchResult:
    """A saved result back as objects (for rendering `--json` files again)."""
    from toolkit.bench import EngineTimings, Percentiles

    levels = []
    for lv in doc.get("levels", []):
        kw = dict(lv)
        for key in ("ttft_s", "latency_s", "decode_tok_s"):
            kw[key] = Percentiles(**kw[key])
        kw["error_samples"] = tuple(kw.get("error_samples", ()))
        if kw.get("engine"):
            kw["engine"] = EngineTimings(**kw["engine"])
        levels.append(LevelResult(**kw))
    s = dict(doc["settings"])
    s["concurrency"] = tuple(s["concurrency"])
    s["notes"] = tuple(s.get("notes", ()))
    known: dict[str, Any] = {
        k: doc.get(k)
        for k in ("engine", "engine_version", "model_key", "hardware_key", "plan", "hardware")
    }
    return BenchResult(
        target=doc.get("target", {}),
        settings=BenchSettings(**s),
        levels=levels,
        created=doc.get("created", ""),
        path=doc.get("path"),
        **known,
    )


def measured_speed(model_key: str, hardware_key: str | None) -> Speed | None:
    """Speed from the newest saved bench of this model on this machine: the best aggregate
    throughput of any level; prefill from the single-stream level's prompt length / TTFT
    (client-side, so it includes HTTP overhead: conservative)."""
    for doc in load_results():
        if doc.get("model_key") != model_key:
            continue
        if hardware_key is not None and doc.get("hardware_key") != hardware_key:
            continue
        result = result_from_dict(doc)
        good = [lv for lv in result.levels if lv.requests > lv.errors and lv.output_tokens]
        if not good:
            continue
        best = max(good, key=lambda lv: lv.throughput_tok_s)
        prefill = None
        single = [lv for lv in good if lv.concurrency == 1 and lv.ttft_s.p50]
        if single and result.settings.measured_prompt_tokens and single[0].ttft_s.p50:
            prefill = result.settings.measured_prompt_tokens / single[0].ttft_s.p50
        return Speed(
            decode_tok_s=best.throughput_tok_s,
            prefill_tok_s=prefill,
            source="measured",
            basis=f"deploy bench {result.created}: {best.throughput_tok_s:.1f} tok/s at "
            f"concurrency {best.concurrency} ({result.path or 'saved result'})",
        )
    return None


# --------------------------------------------------------------------------- calibrate


def calibrate_run(name: str, *, save: bool = True) -> CalibrationRecord:
    """Record what a running server's log and processes show (`deploy calibrate NAME`)."""
    record = _load_run(name)
    plan = _plan_of(record)
    if plan is None:
        raise NotFound(
            f"run {name!r} has no plan in its record, so its measurements cannot be keyed",
            hint="deploy stop NAME; deploy up MODEL",
        )
    return calibration.record_from_run(
        plan=plan,
        log_file=Path(record.log_file),
        pid=record.pgid or record.pid,
        engine_version=record.engine_version,
        save=save,
    )


def list_calibration(*, this_machine: bool = False) -> list[calibration.StoredRecord]:
    stored = calibration.stored_records()
    if this_machine:
        hw = _this_hardware()
        key = hw.fingerprint() if hw is not None else None
        stored = [s for s in stored if s.record.hardware_key == key]
    return stored


def calibration_for(hardware_key: str) -> list[CalibrationRecord]:
    """Every record made on a machine: what `deploy plan` hands the planner."""
    return calibration.load_records(hardware_key=hardware_key)


# -------------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class CostOptions:
    hw: str | None = None
    gpu_hour_usd: float | None = None
    power_w: float | None = None
    kwh_usd: float | None = None
    capex_usd: float | None = None
    months: float | None = None
    vs: str | None = None
    input_share: float = 0.75
    #: Explicit speeds (tok/s) override measured results and the planner's estimate.
    decode_tok_s: float | None = None
    prefill_tok_s: float | None = None
    gpus: int | None = None
    prices_file: Path | None = None


def _resolve_model(model: str) -> tuple[str, str | None, str | None]:
    """(model id, family, variant id) from the catalog; the text itself when unknown."""
    try:
        from toolkit.api.recipes import catalog
        from toolkit.catalog import resolve

        resolved = resolve(catalog(), model)
    except NotFound:
        return model, None, None
    entry = resolved.entries[0]
    return entry.model.id, entry.family, resolved.variant_id if resolved.variant else None


def _best_plan(model: str, hw: str | None) -> Plan | None:
    import importlib

    try:
        plan_api = importlib.import_module("toolkit.api.plan")
    except ImportError:
        return None
    make_plans: Any = getattr(plan_api, "make_plans", None)
    if make_plans is None:
        return None
    result = make_plans(model, hw=hw)
    plans: Sequence[Plan] = getattr(result, "plans", result)
    return plans[0] if plans else None


def _gpu_count(plan: Plan | None, hw: str | None) -> int:
    if plan is not None:
        return max(1, sum(1 for d in plan.devices if d != "cpu"))
    if hw is not None:
        try:
            from toolkit.hardware.profile import load_hardware

            return max(1, len(load_hardware(hw).gpus))
        except (ImportError, DeployError):
            return 1
    return 1


def cost(model: str, opts: CostOptions) -> CostReport:
    """$ per Mtok self-hosting `model` on `opts.hw` against an API price, and break-even."""
    from toolkit import cost as cost_mod

    prices = cost_mod.load_prices(opts.prices_file)
    model_id, family, _variant = _resolve_model(model)
    price: Price | None
    if opts.vs:
        price = cost_mod.price_by_id(prices, opts.vs)
    else:
        price = cost_mod.price_for_model(prices, model_id, family)
        if price is None:
            raise NotFound(
                f"the price table lists no API price for {model_id}",
                hint=f"compare with another model's price: deploy cost {model} --vs gpt-4.1",
            )
    notes: list[str] = []
    plan: Plan | None = None
    speed: Speed
    if opts.decode_tok_s is not None:
        speed = Speed(
            decode_tok_s=opts.decode_tok_s,
            prefill_tok_s=opts.prefill_tok_s,
            source="given",
            basis="speeds given on the command line",
        )
    else:
        plan = _best_plan(model, opts.hw)
        if plan is None:
            raise UsageError(
                f"no plan for {model} on {opts.hw or 'this machine'} to take speeds from",
                hint=f"deploy plan {model}   or give them: --decode-tok-s N --prefill-tok-s N",
            )
        found = measured_speed(plan.variant_id, _hardware_key_of(plan))
        if found is not None:
            speed = found
        else:
            speed = Speed(
                decode_tok_s=plan.speed.decode_tok_s_aggregate or plan.speed.decode_tok_s,
                prefill_tok_s=opts.prefill_tok_s or plan.speed.prefill_tok_s,
                source="measured" if plan.speed.measured else "estimate",
                basis=f"plan {plan.variant_id} ({plan.engine}, {plan.placement}, "
                f"concurrency {plan.concurrency}): {plan.speed.basis}",
            )
    hw_cost = cost_mod.hardware_cost(
        gpu_hour_usd=opts.gpu_hour_usd,
        gpus=opts.gpus if opts.gpus is not None else _gpu_count(plan, opts.hw),
        power_w=opts.power_w,
        kwh_usd=opts.kwh_usd,
        capex_usd=opts.capex_usd,
        months=opts.months,
    )
    if not opts.vs and family and model_id not in price.models:
        notes.append(f"price {price.id} is listed for the {family} family, not {model_id} alone")
    if speed.decode_tok_s is None:
        raise UsageError(
            f"no decode speed for {model}: the plan does not estimate one",
            hint=f"deploy bench NAME after deploy up {model}, or give --decode-tok-s N",
        )
    plan_doc = (
        {
            "variant_id": plan.variant_id,
            "engine": plan.engine,
            "placement": plan.placement,
            "devices": list(plan.devices),
            "concurrency": plan.concurrency,
            "calibration": list(plan.calibration),
        }
        if plan is not None
        else {}
    )
    return cost_mod.cost_report(
        model_id,
        speed,
        hw_cost,
        price,
        input_share=opts.input_share,
        plan=plan_doc,
        notes=tuple(notes),
    )


def _hardware_key_of(plan: Plan) -> str | None:
    fp = (plan.hardware or {}).get("fingerprint")
    return str(fp) if fp else None
