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
from toolkit.calibration.busy import LoadProbe, MachineLoad, ProcReader, suspect_reasons
from toolkit.cost import CostReport, Price, Speed
from toolkit.errors import Conflict, DeployError, EngineError, NotFound, UsageError
from toolkit.planner.types import CalibrationRecord, Plan, PlanRequest

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


def level_ratio(level: LevelResult) -> float | None:
    """Measured ÷ predicted for one level: the per-request p50 against a per-request
    estimate, the level's throughput against an aggregate one."""
    if not level.predicted_tok_s:
        return None
    measured = (
        level.decode_tok_s.p50 if level.predicted_kind == "per request" else level.throughput_tok_s
    )
    return measured / level.predicted_tok_s if measured else None


def overall_ratio(levels: Sequence[LevelResult]) -> float | None:
    """The bench's ratio to its plan: concurrency 1 when it was measured (the rate that
    calibration records), else the first level the plan predicts."""
    ordered = sorted(levels, key=lambda lv: lv.concurrency != 1)
    return next((lv.ratio_to_plan for lv in ordered if lv.ratio_to_plan is not None), None)


def not_recorded_warning(name: str) -> str:
    return (
        "this decode rate is not recorded for later plans; to record it anyway: "
        f"deploy calibrate {name} --accept"
    )


def bench_run(
    name: str, opts: BenchOptions, *, proc_reader: ProcReader | None = None
) -> BenchResult:
    """Benchmark a run started by `deploy up`, next to its plan's predictions.

    `proc_reader` reads /proc/loadavg and /proc/stat (tests pass recorded text)."""
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
    result = _bench(target, opts, log_reader=reader, proc_reader=proc_reader)
    levels = []
    for lv in result.levels:
        value, kind = predicted(plan, lv.concurrency)
        lv = _replace(lv, predicted_tok_s=value, predicted_kind=kind)
        levels.append(_replace(lv, ratio_to_plan=level_ratio(lv)))
    result.levels = levels
    result.ratio_to_plan = overall_ratio(levels)
    load = MachineLoad.from_dict(result.machine_load) if result.machine_load else None
    suspect = suspect_reasons(load, result.ratio_to_plan)
    result.warnings = list(suspect)
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
        # the next plan for this model on this machine shows it (marked measured) — unless
        # the machine was busy or the rate is far below the plan: then only the memory is
        # recorded, and `deploy calibrate NAME --accept` records the rate on purpose.
        if suspect:
            result.warnings.append(not_recorded_warning(name))
            result.extra["calibration_decode_refused"] = list(suspect)
        try:
            rec = calibration.record_from_run(
                plan=plan,
                log_file=log,
                pid=record.pgid or record.pid,
                engine_version=record.engine_version,
                hardware_key=result.hardware_key,
                decode_tok_s=None if suspect else single.decode_tok_s.p50,
            )
            result.extra["calibration_record"] = rec.id
        except DeployError as exc:
            result.extra["calibration_error"] = str(exc)
    if opts.save:
        save_result(result, name)
    return result


def bench_url(
    url: str,
    model: str,
    api_key_env: str | None,
    opts: BenchOptions,
    *,
    proc_reader: ProcReader | None = None,
) -> BenchResult:
    """Benchmark any OpenAI-compatible server (local or hosted). There is no plan, so no
    ratio; a busy machine is still reported (it slows the client side)."""
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
    result = _bench(target, opts, log_reader=None, proc_reader=proc_reader)
    result.target = {"url": base, "model": model}
    load = MachineLoad.from_dict(result.machine_load) if result.machine_load else None
    result.warnings = list(suspect_reasons(load, None))
    if opts.save:
        save_result(result, _slug(url))
    return result


def _bench(
    target: Target,
    opts: BenchOptions,
    log_reader: bench_mod.LogReader | None,
    proc_reader: ProcReader | None = None,
) -> BenchResult:
    probe = LoadProbe(proc_reader) if proc_reader is not None else LoadProbe()
    probe.start()
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
        machine_load=probe.finish().to_dict(),
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
        for k in (
            "engine",
            "engine_version",
            "model_key",
            "hardware_key",
            "plan",
            "hardware",
            "ratio_to_plan",
            "machine_load",
        )
    }
    return BenchResult(
        target=doc.get("target", {}),
        settings=BenchSettings(**s),
        levels=levels,
        created=doc.get("created", ""),
        path=doc.get("path"),
        extra=dict(doc.get("extra") or {}),
        warnings=list(doc.get("warnings") or []),
        **known,
    )


def result_suspects(result: BenchResult) -> tuple[str, ...]:
    """Why a saved result's decode rate is not a measurement of the server alone."""
    load = MachineLoad.from_dict(result.machine_load) if result.machine_load else None
    return suspect_reasons(load, result.ratio_to_plan)


def measured_speed(
    model_key: str, hardware_key: str | None, *, concurrency: int | None = None
) -> tuple[Speed | None, list[str]]:
    """Speed from the newest saved bench of this model on this machine: the best aggregate
    throughput of any level (of the level at `concurrency`, when given); prefill from the
    single-stream level's prompt length / TTFT (client-side, so it includes HTTP overhead:
    conservative). Results measured on a busy machine, or far below their plan, are
    skipped and named in the notes returned beside the speed."""
    notes: list[str] = []
    for doc in load_results():
        if doc.get("model_key") != model_key:
            continue
        if hardware_key is not None and doc.get("hardware_key") != hardware_key:
            continue
        result = result_from_dict(doc)
        good = [lv for lv in result.levels if lv.requests > lv.errors and lv.output_tokens]
        wanted = [lv for lv in good if concurrency is None or lv.concurrency == concurrency]
        if not wanted:
            continue
        suspect = result_suspects(result)
        if suspect:
            notes.append(
                f"skipped deploy bench {result.created} ({result.path or 'saved result'}): "
                + "; ".join(suspect)
            )
            continue
        best = max(wanted, key=lambda lv: lv.throughput_tok_s)
        prefill = None
        single = [lv for lv in good if lv.concurrency == 1 and lv.ttft_s.p50]
        if single and result.settings.measured_prompt_tokens and single[0].ttft_s.p50:
            prefill = result.settings.measured_prompt_tokens / single[0].ttft_s.p50
        speed = Speed(
            decode_tok_s=best.throughput_tok_s,
            prefill_tok_s=prefill,
            source="measured",
            basis=f"deploy bench {result.created}: {best.throughput_tok_s:.1f} tok/s at "
            f"concurrency {best.concurrency} ({result.path or 'saved result'})",
        )
        return speed, notes
    return None, notes


# --------------------------------------------------------------------------- calibrate


@dataclass(frozen=True)
class Calibrated:
    """What `deploy calibrate NAME` recorded."""

    record: CalibrationRecord
    #: The saved `deploy bench` result whose single-stream decode rate was recorded.
    decode_from: str | None = None
    #: Why that rate was suspect, when `--accept` recorded it anyway.
    accepted_despite: tuple[str, ...] = ()


def run_bench_result(name: str, record: Any) -> tuple[BenchResult, float] | None:
    """The newest saved bench of this run (same name and model, made since it started)
    with a concurrency-1 level, and that level's decode rate (per request, p50)."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.started_at or 0))
    for doc in load_results():
        if (doc.get("target") or {}).get("run") != name:
            continue
        if doc.get("model_key") != record.variant_id or str(doc.get("created", "")) < since:
            continue
        result = result_from_dict(doc)
        for lv in result.levels:
            if lv.concurrency == 1 and lv.decode_tok_s.p50:
                return result, lv.decode_tok_s.p50
    return None


def calibrate_run(name: str, *, save: bool = True, accept: bool = False) -> Calibrated:
    """Record what a running server's log and processes show (`deploy calibrate NAME`),
    with the single-stream decode rate of its newest `deploy bench`, when there is one.

    A rate measured on a busy machine, or below half the plan's estimate, is refused
    (Conflict, exit 7) unless `accept`: it would become the "measured" speed of every
    later plan for this model here."""
    record = _load_run(name)
    plan = _plan_of(record)
    if plan is None:
        raise NotFound(
            f"run {name!r} has no plan in its record, so its measurements cannot be keyed",
            hint="deploy stop NAME; deploy up MODEL",
        )
    decode: float | None = None
    source: str | None = None
    suspect: tuple[str, ...] = ()
    found = run_bench_result(name, record)
    if found is not None:
        result, decode = found
        source = result.path or f"deploy bench {result.created}"
        suspect = result_suspects(result)
        if suspect and not accept:
            raise Conflict(
                f"not recording the decode rate of deploy bench {result.created}: "
                f"{'; '.join(suspect)}; rerun deploy bench {name} --concurrency 1 on a quiet "
                "machine, or pass --accept to record it anyway"
            )
    rec = calibration.record_from_run(
        plan=plan,
        log_file=Path(record.log_file),
        pid=record.pgid or record.pid,
        engine_version=record.engine_version,
        decode_tok_s=decode,
        accepted_despite=suspect,
        save=save,
    )
    return Calibrated(rec, decode_from=source, accepted_despite=suspect)


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
    #: Streams served at once: the plan is made for this many, and its aggregate decode
    #: (or a saved bench's level at this concurrency) sets the throughput.
    concurrency: int | None = None


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


def _best_plan(model: str, hw: str | None, concurrency: int | None = None) -> Plan | None:
    import importlib

    try:
        plan_api = importlib.import_module("toolkit.api.plan")
    except ImportError:
        return None
    make_plans: Any = getattr(plan_api, "make_plans", None)
    if make_plans is None:
        return None
    request = PlanRequest(concurrency=concurrency) if concurrency else None
    result = make_plans(model, request, hw=hw)
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
    if opts.concurrency is not None and opts.concurrency < 1:
        raise UsageError(f"bad --concurrency {opts.concurrency}: it must be >= 1")
    if opts.concurrency is not None and opts.decode_tok_s is not None:
        raise UsageError(
            "--concurrency takes the speed from a plan at that concurrency; "
            "--decode-tok-s gives the speed itself: use one",
            hint=f"deploy cost {model} --concurrency {opts.concurrency} --gpu-hour-usd X",
        )
    if opts.decode_tok_s is not None:
        speed = Speed(
            decode_tok_s=opts.decode_tok_s,
            prefill_tok_s=opts.prefill_tok_s,
            source="given",
            basis="speeds given on the command line",
        )
    else:
        plan = _best_plan(model, opts.hw, opts.concurrency)
        if plan is None:
            at = f" at concurrency {opts.concurrency}" if opts.concurrency else ""
            raise UsageError(
                f"no plan for {model}{at} on {opts.hw or 'this machine'} to take speeds from",
                hint=f"deploy plan {model}   or give them: --decode-tok-s N --prefill-tok-s N",
            )
        found, skipped = measured_speed(
            plan.variant_id, _hardware_key_of(plan), concurrency=opts.concurrency
        )
        notes.extend(skipped)
        if found is not None:
            speed = found
        else:
            if opts.concurrency and opts.concurrency > 1 and not plan.speed.decode_tok_s_aggregate:
                notes.append(
                    f"the plan estimates no aggregate decode at concurrency {opts.concurrency}: "
                    "its single-stream rate is used (a lower bound)"
                )
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
