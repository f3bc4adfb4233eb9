"""Runs: `deploy up` (plan → engine → a server that answers), ps, logs, stop, check.

`up` composes the planner (or a plan file), the model files, the engine's launch
builder and the process lifecycle in `toolkit.runs`. Secure and private by default:
loopback, a generated API key handed over by file or environment, offline, telemetry off.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import keys
from toolkit.errors import (
    Conflict,
    DeployError,
    DoesNotFit,
    EngineError,
    IntegrityError,
    NotFound,
    UsageError,
)
from toolkit.planner.types import Plan
from toolkit.runs import launch as launch_parts
from toolkit.runs import process, ready, records
from toolkit.runs.check import CheckItem, check_server
from toolkit.runs.launch import (
    child_env,
    choose_port,
    client_snippets,
    default_name,
    fit_problems,
    remove_scratch,
)
from toolkit.runs.records import RunRecord, State

if TYPE_CHECKING:
    from toolkit.engines.base import InstalledEngine, Launch

#: Called with one-line messages the user must see at once (warnings, --force).
Notify = Callable[[str], None]
#: Seconds to wait for the model to answer, per engine (vLLM on CPU: 30-120 s measured).
DEFAULT_TIMEOUT_S = {"llamacpp": 180.0, "vllm": 900.0}
#: Lines of the log shown when a start fails.
TAIL_LINES = 25


@dataclass(frozen=True)
class UpOptions:
    """Everything `deploy up` takes besides the model (flag > env > default)."""

    plan_file: Path | None = None
    #: 1-based index into a `deploy plan --json` answer holding several plans.
    plan_index: int | None = None
    engine: str | None = None
    variant: str | None = None
    ctx: int | None = None
    concurrency: int | None = None
    name: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    force: bool = False
    online: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    llama_server: Path | None = None
    timeout: float | None = None
    dry_run: bool = False
    #: Flags passed through to the engine after `--` (checked against its flag list).
    engine_args: tuple[str, ...] = ()
    #: llama.cpp physical batch (embedding models take one input per batch).
    ubatch: int | None = None
    #: rpc-server workers (host:port) whose devices take layers (llama.cpp RPC).
    rpc: tuple[str, ...] = ()
    #: Recipe LoRA adapters to serve, `NAME` or `NAME=SCALE` (llama.cpp scale).
    lora: tuple[str, ...] = ()
    #: vLLM: adapter buffers planned for this rank and count (set from the adapters).
    lora_rank: int | None = None
    max_loras: int = 1


@dataclass(frozen=True)
class DryRun:
    name: str
    plan: Plan
    launch: dict[str, Any]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpResult:
    record: RunRecord
    key_file: Path | None
    seconds_to_ready: float
    warnings: tuple[str, ...] = ()
    snippets: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- plan and model files


def load_plan_file(
    path: Path, index: int | None = None, say: Callable[[str], None] | None = None
) -> Plan:
    """One plan from a plan file: a single Plan document, or plan #index (1-based) of a
    whole `deploy plan --json` answer — #1 by default, and then said aloud when there are
    several. Every value is checked before it can reach an engine."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise NotFound(f"cannot read plan file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise UsageError(
            f"{path} is not JSON: {exc}", hint="deploy plan MODEL --json > plan.json"
        ) from exc
    if isinstance(data, dict) and "plans" in data:  # a whole `deploy plan --json` answer
        plans = data["plans"]
        if not isinstance(plans, list) or not plans:
            raise DoesNotFit(f"{path} holds no viable plan", hint="deploy plan MODEL --all")
        i = index or 1
        if i > len(plans):
            raise UsageError(
                f"{path} holds {len(plans)} plans, not {i}",
                hint=f"--plan-index 1..{len(plans)}",
            )
        data = plans[i - 1]
        if len(plans) > 1 and index is None and say is not None and isinstance(data, dict):
            say(
                f"running plan #1 of {len(plans)} in {path} ({data.get('variant_id')}); "
                "another: --plan-index N"
            )
    elif index not in (None, 1):
        raise UsageError(f"{path} holds one plan; --plan-index {index} does not exist")
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a plan document")
    try:
        plan = Plan.from_dict(data)
    except DeployError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(
            f"{path} is not a valid plan ({type(exc).__name__}: {exc})",
            hint="make a new plan: deploy plan MODEL --json > plan.json",
        ) from None
    problem = plan_value_problem(plan)
    if problem:
        raise UsageError(f"{path}: {problem}", hint="make a new plan: deploy plan MODEL --json")
    return plan


def plan_value_problem(plan: Plan) -> str | None:
    """The first value in a plan (from a file someone could have edited) that no engine
    should be started with, or None."""

    def whole(value: object, lo: int, hi: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi

    ranges: list[tuple[str, object, int, int]] = [
        ("ctx", plan.ctx, 1, 1 << 24),
        ("concurrency", plan.concurrency, 1, 4096),
    ]
    if plan.llamacpp is not None:
        s = plan.llamacpp
        ranges += [
            ("llamacpp.n_gpu_layers", s.n_gpu_layers, 0, 100_000),
            ("llamacpp.n_cpu_moe", s.n_cpu_moe, 0, 100_000),
            ("llamacpp.ubatch", s.ubatch, 1, 1 << 16),
            ("llamacpp.slots", s.slots, 1, 4096),
            ("llamacpp.threads", 1 if s.threads is None else s.threads, 1, 4096),
        ]
        if s.rpc:
            from toolkit.rpc import endpoints

            bad = f"llamacpp.rpc {s.rpc!r} is not a list of host:port"
            if not isinstance(s.rpc, list | tuple) or not all(isinstance(e, str) for e in s.rpc):
                return bad
            try:
                endpoints(",".join(s.rpc))
            except UsageError:
                return bad
    if plan.vllm is not None:
        ranges += [
            ("vllm.tensor_parallel", plan.vllm.tensor_parallel, 1, 64),
            ("vllm.pipeline_parallel", plan.vllm.pipeline_parallel, 1, 64),
            ("vllm.data_parallel", plan.vllm.data_parallel, 1, 64),
        ]
        if plan.vllm.speculative_tokens is not None:
            ranges.append(("vllm.speculative_tokens", plan.vllm.speculative_tokens, 1, 16))
        if plan.vllm.lora is not None:
            lora = plan.vllm.lora
            if not isinstance(lora, (list, tuple)) or len(lora) != 2:
                return f"vllm.lora {lora!r} is not [max_loras, max_rank]"
            ranges += [("vllm.lora[0]", lora[0], 1, 64), ("vllm.lora[1]", lora[1], 1, 512)]
        util = plan.vllm.gpu_memory_utilization
        if not isinstance(util, (int, float)) or not 0 < util <= 1:
            return f"vllm.gpu_memory_utilization {util!r} is not in (0, 1]"
    if plan.engine not in ("llamacpp", "vllm"):
        return f"engine {plan.engine!r} is not llamacpp or vllm"
    if not isinstance(plan.variant_id, str) or not 0 < len(plan.variant_id) <= 200:
        return "variant_id is not a short string"
    for name, value, lo, hi in ranges:
        if not whole(value, lo, hi):
            return f"{name} {value!r} is not a whole number in {lo}..{hi}"
    return None


def _adapter_specs(opts: UpOptions) -> list[tuple[str, float]]:
    out = []
    for spec in opts.lora:
        name, eq, scale = spec.partition("=")
        try:
            value = float(scale) if eq else 1.0
        except ValueError:
            value = float("nan")
        if not name or not -4 <= value <= 4:
            raise UsageError(f"--lora {spec!r}: give NAME or NAME=SCALE (scale -4..4)")
        out.append((name, value))
    return out


def _with_adapter_engine(model: str, opts: UpOptions) -> UpOptions:
    """The engine the adapters' format needs (GGUF: llama.cpp, PEFT: vLLM, with its
    adapter buffers planned for their largest rank)."""
    from toolkit.api.store import adapter_files

    adapters = [adapter_files(model, n)[1] for n, _ in _adapter_specs(opts)]
    formats = {a.format for a in adapters}
    if len(formats) > 1:
        raise UsageError("--lora: GGUF adapters (llama.cpp) and PEFT adapters (vLLM) together")
    engine = "llamacpp" if formats == {"gguf"} else "vllm"
    if opts.engine not in (None, engine) and not (
        engine == "llamacpp" and opts.engine == "llamacpp-python"
    ):
        raise UsageError(
            f"--lora {adapters[0].name} is a {adapters[0].format} adapter, served by "
            f"{engine}, not {opts.engine}",
            hint=f"drop --engine {opts.engine}",
        )
    if opts.engine == "llamacpp-python":
        raise UsageError(
            "--lora: deploy serves adapters on llama-server and vLLM, not llama-cpp-python",
            hint="deploy engines install llamacpp",
        )
    if engine == "llamacpp":
        return replace(opts, engine=engine)
    ranks = [a.rank for a in adapters]
    if None in ranks:
        raise UsageError(
            f"adapter {adapters[ranks.index(None)].name!r} has no rank in its recipe: vLLM "
            "cannot plan its buffers",
            hint="deploy plan MODEL --lora-rank R, then deploy up --plan FILE -- --lora-modules",
        )
    return replace(
        opts, engine=engine, lora_rank=max(r for r in ranks if r), max_loras=len(adapters)
    )


def adapter_args(plan: Plan, opts: UpOptions) -> tuple[str, ...]:
    """Engine flags that load the recipe adapters of `opts.lora` from the store:
    llama-server `--lora-scaled FILE:SCALE,…` (applied to every request unless a request
    sends its own `lora` scales), vLLM `--lora-modules NAME=DIR …` (each adapter a model
    name of its own, beside the base)."""
    from toolkit.api.store import adapter_files

    model = plan.model_id
    loaded = [(adapter_files(model, n), scale) for n, scale in _adapter_specs(opts)]
    if plan.engine == "vllm":
        if plan.vllm is None or plan.vllm.lora is None:
            raise UsageError(
                "this vLLM plan has no LoRA buffers planned",
                hint=f"deploy plan {model} --lora-rank R --json > plan.json; "
                "deploy up --plan plan.json --lora NAME",
            )
        mods = []
        for (_base, adapter, paths), _scale in loaded:
            if adapter.format != "peft":
                raise UsageError(f"adapter {adapter.name!r} is GGUF: vLLM loads PEFT adapters")
            mods.append(f"{adapter.name}={paths[0].parent}")
        return ("--lora-modules", *mods)
    if plan.engine != "llamacpp" or opts.engine == "llamacpp-python":
        raise UsageError("--lora: adapters are served on llama-server and vLLM")
    files = []
    for (_base, adapter, paths), scale in loaded:
        if adapter.format != "gguf":
            raise UsageError(
                f"adapter {adapter.name!r} is PEFT: llama.cpp loads GGUF adapters",
                hint="convert it with llama.cpp's convert_lora_to_gguf.py, or serve on vLLM",
            )
        files.append(f"{paths[0]}:{scale:g}")
    return ("--lora-scaled", ",".join(files))


def make_plan(model: str, opts: UpOptions) -> tuple[Plan, list[str]]:
    """The best plan for this machine now whose model files are HERE, and notes.

    The planner ranks every variant; `deploy up` runs the best one that can start
    without a download. When none is local: NotFound naming the best one to pull.
    """
    from toolkit.api import plan as planner
    from toolkit.planner.types import PlanRequest

    engine = opts.engine
    if engine == "llamacpp-python":
        engine = "llamacpp"
    hw = None
    if opts.rpc:
        if engine not in (None, "llamacpp"):
            raise UsageError("--rpc is llama.cpp's (native llama-server)")
        engine = "llamacpp"
        hw = rpc_hardware(opts)
    request = PlanRequest(
        ctx=opts.ctx,
        concurrency=opts.concurrency or 1,
        engine=engine,  # type: ignore[arg-type]
        variant=opts.variant,
        ubatch=opts.ubatch,
        all_gpus=bool(opts.rpc),
        lora_rank=opts.lora_rank,
        max_loras=opts.max_loras,
    )
    result = planner.make_plans(model, request, hw=hw)
    if opts.rpc:
        result = replace(result, plans=tuple(_with_rpc(p, opts.rpc) for p in result.plans))
    if not result.plans:
        raise planner.does_not_fit(model, result)
    best = result.plans[0]
    for candidate in result.plans:
        try:
            model_files(candidate)
        except NotFound:
            continue
        notes = []
        if candidate is not best:
            notes.append(
                f"running {candidate.variant_id} ({candidate.engine}): its files are here; "
                f"the planner's first choice {best.variant_id} is not downloaded "
                f"(deploy pull {best.variant_id})"
            )
        return candidate, notes
    model_files(best)  # raises NotFound with the store's hint for the best plan
    raise NotFound(f"no files for {best.variant_id}", hint=f"deploy pull {best.variant_id}")


def rpc_hardware(opts: UpOptions) -> Any:
    """This machine with the devices llama-server sees through the RPC workers."""
    from toolkit import rpc
    from toolkit.engines.base import find_engine
    from toolkit.hardware.detect import detect

    server = find_engine("llamacpp", path=opts.llama_server)
    return rpc.hardware_with(detect(), rpc.devices(Path(server.path), opts.rpc))


def _with_rpc(plan: Plan, workers: tuple[str, ...]) -> Plan:
    if plan.llamacpp is None:
        return plan
    note = f"llama.cpp RPC: layers on {', '.join(workers)} (rpc-server, unauthenticated)"
    return replace(
        plan,
        llamacpp=replace(plan.llamacpp, rpc=workers),
        notes=(*plan.notes, note),
    )


def verify_failure(plan: Plan) -> str | None:
    """What the store's last `deploy verify` found wrong with the plan's files, if it
    found anything (a recipe variant recorded in the store)."""
    if plan.model_path:
        return None
    from toolkit.store import records as store_records

    rec = store_records.load(plan.variant_id)
    if rec is None or rec.verified_ok is not False:
        return None
    files = ", ".join(rec.mismatches) or "a file"
    when = f" at {rec.verified_at}" if rec.verified_at else ""
    return f"deploy verify{when} found {files} not matching its recorded sha256 or size"


def model_files(plan: Plan) -> Path:
    """The local file or folder the engine loads, or NotFound naming how to get it."""
    if plan.model_path:
        path = Path(plan.model_path).expanduser().resolve()  # the engine runs elsewhere
        if not path.exists():
            raise NotFound(
                f"model file {path} does not exist",
                hint=f"check the path, or make a new plan: deploy plan {plan.model_id}",
            )
        return path
    from toolkit.api.recipes import catalog
    from toolkit.catalog import resolve
    from toolkit.store.locate import locate

    resolved = resolve(catalog(), plan.variant_id)
    if resolved.variant is not None:
        paths = locate(resolved.entry, resolved.variant)
        if paths:
            # A GGUF (split: its first shard) is loaded by file; safetensors by folder.
            return paths[0] if resolved.variant.format == "gguf" else paths[0].parent
    raise NotFound(
        f"the files of {plan.variant_id} are not in the model store",
        hint=f"deploy pull {plan.variant_id}",
    )


def free_memory_now() -> dict[str, int]:
    """Bytes free per device id right now: 'cpu' (RAM, cgroup-aware) and GPUs when probed."""
    from toolkit.hardware.detect import detect

    hw = detect()
    free = {"cpu": hw.host.ram_available_bytes}
    for gpu in hw.gpus:
        free[gpu.device_id] = gpu.free_bytes
    return free


# ---------------------------------------------------------------- engine


def find_installed(plan: Plan, opts: UpOptions) -> InstalledEngine:
    """The engine for the plan: native llama-server first, llama-cpp-python as fallback."""
    from toolkit.engines.base import INSTALL_HINT, find_engine

    if plan.engine == "vllm":
        return find_engine("vllm")
    if opts.engine == "llamacpp-python":
        return find_engine("llamacpp-python")
    try:
        return find_engine("llamacpp", path=opts.llama_server)
    except EngineError as native:
        if opts.llama_server is not None:
            raise
        try:
            return find_engine("llamacpp-python")
        except EngineError:
            raise EngineError(
                "no llama.cpp engine: neither the native llama-server nor llama-cpp-python "
                "is installed",
                hint=f"{INSTALL_HINT['llamacpp']}  (fallback: {INSTALL_HINT['llamacpp-python']})",
            ) from native


def _tls(opts: UpOptions) -> Any:
    if (opts.tls_cert is None) != (opts.tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key", hint="deploy up --help")
    if opts.tls_cert is None or opts.tls_key is None:
        return None
    from toolkit.engines.base import TlsFiles

    for p in (opts.tls_cert, opts.tls_key):
        if not p.exists():
            raise NotFound(f"TLS file {p} does not exist")
    import ssl

    try:  # the pair the engine will be given must load, before any engine starts
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(opts.tls_cert, opts.tls_key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise UsageError(
            f"--tls-cert {opts.tls_cert} / --tls-key {opts.tls_key} do not load as a PEM "
            f"certificate and its private key ({getattr(exc, 'reason', None) or exc})",
            hint="openssl x509 -in CERT -noout -text   (and check the key matches it)",
        ) from None
    return TlsFiles(cert=opts.tls_cert.resolve(), key=opts.tls_key.resolve())


def check_host(host: str) -> None:
    """--host must be an IP address or a host name (RFC 1123 labels); anything else is
    a usage error before any engine sees it."""
    import ipaddress
    import re

    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    label = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
    if len(host) <= 253 and re.fullmatch(rf"{label}(\.{label})*", host):
        return
    raise UsageError(
        f"--host {host!r} is not an IP address or a host name",
        hint="--host 127.0.0.1 (this machine only) or --host 0.0.0.0 (every interface)",
    )


def security_warnings(opts: UpOptions) -> list[str]:
    """Warnings for what is risky. Pure. (A key is always generated and required, so no
    server deploy starts answers without one, on loopback or elsewhere.)"""
    warnings = []
    if not process.is_loopback(opts.host) and opts.tls_cert is None:
        warnings.append(
            f"serving on {opts.host} without TLS: the API key and every prompt cross the "
            "network in clear text (add --tls-cert/--tls-key)"
        )
    return warnings


# ---------------------------------------------------------------- up


def up(
    model: str | None,
    opts: UpOptions,
    *,
    notify: Notify | None = None,
    progress: ready.Progress | None = None,
) -> UpResult | DryRun:
    """Start a server for `model` (or opts.plan_file) and return once the model answers."""
    say = notify or (lambda _msg: None)
    check_host(opts.host)
    if opts.plan_file is not None:
        if model is not None:
            raise UsageError(
                f"give MODEL or --plan FILE, not both ({model!r} and {opts.plan_file})",
                hint=f"deploy up --plan {opts.plan_file}",
            )
        plan = load_plan_file(opts.plan_file, opts.plan_index, say)
    elif opts.plan_index is not None:
        raise UsageError("--plan-index needs --plan FILE", hint="deploy up --plan plan.json")
    elif model is None:
        raise UsageError("give a MODEL or --plan FILE", hint="deploy up smollm2-135m")
    else:
        if opts.lora:
            opts = _with_adapter_engine(model, opts)
        plan, notes = make_plan(model, opts)
        for note in notes:
            say(note)
    if opts.lora:
        opts = replace(opts, engine_args=(*adapter_args(plan, opts), *opts.engine_args))
    warnings = security_warnings(opts)
    free = free_memory_now()
    if plan.llamacpp is not None and plan.llamacpp.rpc:
        # the workers' devices, as llama-server reported them when planning
        for dev in plan.memory:
            if dev.id not in free and dev.free_bytes is not None:
                free[dev.id] = dev.free_bytes
    problems = fit_problems(plan, free)
    if problems and not opts.force:
        raise DoesNotFit(
            f"the plan for {plan.variant_id} does not fit the memory free now: "
            + "; ".join(problems),
            hint=f"free memory, plan again (deploy plan {plan.model_id} --ctx "
            f"{max(512, plan.ctx // 2)}), or start anyway with --force",
        )
    if problems:
        warnings.append(
            "--force: STARTING ANYWAY although the plan does not fit the free memory ("
            + "; ".join(problems)
            + "); expect swapping or the OOM killer"
        )
    for w in warnings:
        say(w)
    tls = _tls(opts)
    path = model_files(plan)
    mismatch = verify_failure(plan)
    if mismatch and not opts.force:
        raise IntegrityError(
            f"{plan.variant_id}: {mismatch}; deploy will not serve it",
            hint=f"fetch it again: deploy rm {plan.variant_id} && deploy pull "
            f"{plan.variant_id}   (or start anyway with --force)",
        )
    if mismatch:
        say(f"--force: serving {plan.variant_id} although {mismatch}")
    installed = find_installed(plan, opts)
    name = records.check_name(opts.name or default_name(plan))
    rdir = records.run_dir(name)
    key_file = keys.key_path(name)
    # llama-server and deploy's key guard (vLLM, llama-cpp-python) read several keys from
    # one file: the run's own and the named keys.
    engine_keys = rdir / keys.ENGINE_KEYS_FILE

    from toolkit.engines.base import build_launch

    if opts.engine_args:
        from toolkit.engines.flags import check_extra_args

        check_extra_args(opts.engine_args, installed.flags, engine=installed.name)

    def launch_for(port: int) -> Launch:
        launch = build_launch(
            plan,
            installed,
            model_path=path,
            host=opts.host,
            port=port,
            api_key_file=engine_keys,
            run_dir=rdir,
            online=opts.online,
            tls=tls,
        )
        if not opts.engine_args:
            return launch
        note = (
            f"engine flags passed through: {' '.join(opts.engine_args)} (after deploy's; a "
            "flag the plan also sets takes the value given here, which the plan did not size)"
        )
        return replace(
            launch,
            argv=(*launch.argv, *opts.engine_args),
            notes=(*launch.notes, note),
        )

    if opts.dry_run:
        launch = launch_for(opts.port or 0)
        return DryRun(name, plan, launch.redacted(), tuple(warnings))

    return _start(
        name=name,
        model_label=model or plan.model_path or plan.model_id,
        variant_id=plan.variant_id,
        plan_doc=plan.to_dict(),
        installed=installed,
        launch_for=launch_for,
        opts=opts,
        key_file=key_file,
        engine_keys=engine_keys,
        tls=tls,
        timeout=opts.timeout or DEFAULT_TIMEOUT_S.get(plan.engine, 300.0),
        progress=progress,
        warnings=warnings,
        say=say,
        calibrate=plan,
    )


def _start(
    *,
    name: str,
    model_label: str,
    variant_id: str,
    plan_doc: dict[str, Any],
    installed: InstalledEngine,
    launch_for: Callable[[int], Launch],
    opts: UpOptions,
    key_file: Path,
    engine_keys: Path,
    tls: Any,
    timeout: float,
    progress: ready.Progress | None,
    warnings: list[str],
    say: Notify,
    calibrate: Plan | None,
    probe_model: str | None = None,
    wait: bool = True,
) -> UpResult:
    """Spawn the server under the run-record lock (a stale record of the same name is
    cleaned up, a live one refused), then wait until it answers."""
    rdir = records.run_dir(name)
    with records.lock():
        existing = records.find(name)
        if existing is not None and existing.name != name and existing.state != "unreadable":
            raise Conflict(
                f"run name {name!r} shares its folder and key with run {existing.name!r} "
                "(':' and '@' are stored as '_')",
                hint=f"deploy up ... --name {name.replace(':', '-').replace('@', '-')}-2",
            )
        if existing is not None and process.alive(existing.pid, existing.create_time):
            raise Conflict(
                f"run {name!r} is already running: {existing.engine} pid {existing.pid} at "
                f"{existing.base_url} ({existing.state})",
                hint=f"deploy stop {name}   or   deploy up ... --name {name}-2",
            )
        if existing is not None:  # stale: the server died; its group may hold children
            process.stop_group(existing.pgid, existing.pid)
            remove_scratch(existing)
            records.remove(existing)
        port, port_note = choose_port(opts.host, opts.port, name)
        if port_note:
            warnings.append(port_note)
            say(port_note)
        keys.ensure_key(name)
        rdir.mkdir(parents=True, exist_ok=True)
        if engine_keys != key_file:
            keys.write_engine_keys(key_file, engine_keys)
        launch = launch_for(port)
        log = rdir / records.LOG_FILE
        if log.exists():
            log.replace(rdir / f"{records.LOG_FILE}.1")
        red = launch.redacted()
        record = RunRecord(
            name=name,
            model=model_label,
            variant_id=variant_id,
            engine=installed.name,
            engine_version=installed.version,
            state="starting",
            host=opts.host,
            port=port,
            base_url=launch.base_url,
            served_model_name=probe_model or launch.served_model_name,
            log_file=str(log),
            run_dir=str(rdir),
            argv=tuple(launch.argv),
            env=red["env"],
            started_at=time.time(),
            key_file=str(key_file) if key_file else None,
            tls=tls is not None,
            plan=plan_doc,
            engine_args=opts.engine_args,
        )
        env, scratch = child_env(launch, rdir)
        proc = process.spawn(launch.argv, env, log, rdir)
        if scratch is not None:
            record = replace(
                record, scratch_dir=str(scratch), env={**record.env, "TMPDIR": str(scratch)}
            )
        record = replace(
            record, pid=proc.pid, pgid=proc.pid, create_time=process.create_time(proc.pid)
        )
        records.save(record)

    snippets = client_snippets(
        record.base_url,
        record.served_model_name,
        key_file,
        str(tls.cert) if tls is not None else None,
    )
    if not wait:  # the caller follows it (`deploy cluster up --no-wait`)
        return UpResult(record, key_file, 0.0, tuple([*warnings, *launch.notes]), snippets)
    probe = probe_for(record)
    try:
        waited = ready.wait_ready(
            probe, is_alive=lambda: proc.poll() is None, timeout=timeout, progress=progress
        )
    except ready.ServerDied as exc:
        raise _failed(record, f"{installed.name} exited while {exc}", proc.poll()) from None
    except TimeoutError as exc:
        raise _failed(record, f"not ready after {timeout:.0f} s ({exc})", proc.poll()) from None
    except ready.KeyRejected as exc:
        raise _failed(record, str(exc), proc.poll()) from None
    except BaseException:
        process.stop_group(record.pgid, record.pid)
        records.update(record, state="dead", error="interrupted while starting")
        raise
    record = records.update(record, state="ready", ready_at=time.time())
    calibration_note = _calibrate(calibrate, record) if calibrate is not None else ()
    return UpResult(
        record=record,
        key_file=key_file,
        seconds_to_ready=waited,
        warnings=tuple([*warnings, *launch.notes, *calibration_note]),
        snippets=snippets,
    )


def _calibrate(plan: Plan, record: RunRecord) -> tuple[str, ...]:
    """Record what the engine reported at startup, so later plans here use measured terms.

    A run that logged no memory report still starts; the reason becomes a warning."""
    from toolkit.calibration import record_from_run

    try:
        record_from_run(
            plan=plan,
            log_file=Path(record.log_file),
            pid=record.pgid,
            engine_version=record.engine_version,
        )
    except DeployError as exc:
        return (f"calibration not recorded: {exc.message}",)
    return ()


def _failed(record: RunRecord, what: str, returncode: int | None) -> EngineError:
    """Stop what is left, mark the record dead, and build the error with the log tail."""
    process.stop_group(record.pgid, record.pid)
    current = records.find(record.name)
    if current is None or current.pid != record.pid or current.state == "stopping":
        # `deploy stop` (or `stop --all`) ended it while it started and removed its record:
        # not a crash, not the OOM killer, and no record to bring back.
        return EngineError(
            f"run {record.name!r} was stopped (deploy stop) while it was starting",
            hint=f"deploy up ... --name {record.name}   to start it again",
        )
    lines = ready.tail(Path(record.log_file), TAIL_LINES)
    cause = ready.likely_cause(lines, returncode)
    records.update(record, state="dead", error=f"{what}; {cause}" if cause else what)
    code = f" (exit status {returncode})" if returncode is not None else ""
    text = f"{record.engine} failed to start{code}: {what}"
    if cause:
        text += f"\n  Likely cause: {cause}"
    text += f"\n  Last {len(lines)} lines of {record.log_file}:\n" + "\n".join(
        f"    {line}" for line in lines
    )
    return EngineError(text, hint=f"deploy logs {record.name}   (then: deploy stop {record.name})")


def probe_for(record: RunRecord) -> ready.Probe:
    key = keys.read_key(Path(record.key_file)) if record.key_file else None
    root = record.base_url.removesuffix("/v1")
    cert = None
    if record.tls:
        cert = launch_parts.tls_cert_from_argv(record.argv)
    return ready.Probe(base_url=root, model=record.served_model_name, key=key, verify=cert)


# ---------------------------------------------------------------- ps, logs, stop, check


@dataclass(frozen=True)
class RunStatus:
    name: str
    model: str
    engine: str
    engine_version: str | None
    pid: int | None
    port: int
    base_url: str
    state: State
    uptime_s: float | None
    rss_bytes: int | None
    error: str | None
    #: From the engine's /metrics when it answers: requests (vLLM), tokens generated and
    #: decode tok/s over the run's life.
    requests: int | None = None
    tokens_out: int | None = None
    tok_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def status(record: RunRecord, *, served: bool = False) -> RunStatus:
    live = process.alive(record.pid, record.create_time)
    state: State = record.state if live and record.state != "dead" else "dead"
    if record.state == "unreadable":
        state = "unreadable"
    counters = None
    if served and state == "starting" and record.base_url.startswith("http"):
        # nobody may be waiting for it (`deploy cluster up --no-wait`): one probe
        try:
            ready.probe_once(probe_for(record), timeout=10.0)
        except (ready.NotReady, ready.KeyRejected, DeployError, OSError, ValueError):
            pass  # not yet
        else:
            record = records.update(record, state="ready", ready_at=time.time())
            state = "ready"
    if served and state == "ready" and record.base_url.startswith("http"):
        from toolkit.runs import metrics

        key = None
        if record.key_file:
            try:
                key = keys.read_key(Path(record.key_file))
            except DeployError:
                key = None
        counters = metrics.fetch(record.base_url, key)
    return RunStatus(
        name=record.name,
        model=record.model,
        engine=record.engine,
        engine_version=record.engine_version,
        pid=record.pid,
        port=record.port,
        base_url=record.base_url,
        state=state,
        uptime_s=time.time() - record.started_at if live else None,
        rss_bytes=process.group_rss(record.pgid) if live else None,
        error=record.error if state in ("dead", "unreadable") else None,
        requests=counters.requests if counters else None,
        tokens_out=counters.generated_tokens if counters else None,
        tok_s=round(counters.decode_tok_s, 1) if counters and counters.decode_tok_s else None,
    )


def ps() -> list[RunStatus]:
    return [status(r, served=True) for r in records.all_records()]


def logs(name: str, *, lines: int = 50, follow: bool = False) -> Iterator[str]:
    record = records.find(name)
    log = Path(record.log_file) if record else records.run_dir(name) / records.LOG_FILE
    if not log.exists():
        raise NotFound(f"no log for run {name!r}", hint="deploy ps")
    if not follow:
        yield from ready.tail(log, lines)
        return
    yield from ready.follow(
        log, lines, stop=lambda: record is None or not process.alive(record.pid, record.create_time)
    )


@dataclass(frozen=True)
class Stopped:
    name: str
    outcome: str


def stop(name: str | None, *, all_runs: bool = False) -> list[Stopped]:
    """TERM, wait, KILL the run's whole process group; forget the record. Idempotent."""
    if all_runs:
        targets = records.all_records()
    elif name is None:
        raise UsageError("give a run NAME or --all", hint="deploy ps")
    else:
        found = records.find(name)
        if found is None:
            return [Stopped(name, "not running (no such run)")]
        targets = [found]
    out = []
    for rec in targets:
        with records.lock():
            # Said before the signal: a `deploy up` still waiting for this server sees
            # the stop, not a crash, whichever of us notices the exit first.
            current = records.find(rec.name)
            if current is not None and current.pid == rec.pid and current.state != "unreadable":
                records.update(current, state="stopping")
        outcome = process.stop_group(rec.pgid, rec.pid)
        with records.lock():
            current = records.find(rec.name)
            if current is not None and current.state == "unreadable":
                records.remove(current)  # a damaged record has nothing left to protect
            elif current is not None and current.pid == rec.pid:
                remove_scratch(current)
                records.remove(current)
        out.append(Stopped(rec.name, outcome))
    return out


def check(name: str) -> list[CheckItem]:
    record = records.load(name)
    if not process.alive(record.pid, record.create_time):
        raise EngineError(f"run {name!r} is not running", hint=f"deploy logs {name}")
    import httpx

    try:
        return check_server(
            probe_for(record),
            expected_ctx=record.plan.get("ctx"),
            tool_calling=recipe_tool_calling(str(record.plan.get("variant_id", ""))),
        )
    except httpx.HTTPError as exc:
        raise EngineError(
            f"run {name!r} did not answer the check: {exc}", hint=f"deploy logs {name}"
        ) from exc


def recipe_tool_calling(variant: str) -> bool:
    from toolkit.api.recipes import catalog
    from toolkit.catalog import resolve

    try:
        return resolve(catalog(), variant).entry.model.tool_calling
    except DeployError:
        return False


# ---------------------------------------------------------------- restart, keys


def restart(name: str, *, progress: ready.Progress | None = None) -> UpResult:
    """Stop run NAME and start it again as it was (same plan, port, host, engine and
    passed-through flags), so it reads its key files afresh."""
    rec = records.find(name)
    if rec is None or not process.alive(rec.pid, rec.create_time):
        raise NotFound(f"run {name!r} is not running", hint="deploy ps")
    if rec.tls:
        raise UsageError(
            f"run {name!r} serves TLS; deploy does not keep the certificate paths",
            hint=f"deploy stop {name}, then deploy up again with --tls-cert/--tls-key",
        )
    if "stack" in rec.plan:
        return _restart_stack(rec, progress)
    plan_file = Path(rec.run_dir).parent / f".{Path(rec.run_dir).name}.restart-plan.json"
    records.write_json_atomic(plan_file, rec.plan)
    engine = {"llamacpp": "llamacpp", "llamacpp-python": "llamacpp-python"}.get(rec.engine)
    opts = UpOptions(
        plan_file=plan_file,
        name=rec.name,
        host=rec.host,
        port=rec.port,
        engine=engine or rec.engine,
        llama_server=Path(rec.argv[0]) if rec.engine == "llamacpp" else None,
        engine_args=tuple(rec.engine_args),
    )
    try:
        stop(name)
        result = up(None, opts, progress=progress)
    finally:
        plan_file.unlink(missing_ok=True)
    assert isinstance(result, UpResult)
    return result


def _restart_stack(rec: RunRecord, progress: ready.Progress | None) -> UpResult:
    from toolkit.api.stack import up_stack
    from toolkit.stack import load_stack

    source = rec.plan.get("file")
    if not source or not Path(source).exists():
        raise NotFound(
            f"stack run {rec.name!r}: its stack file {source} is gone",
            hint=f"deploy stop {rec.name}, then deploy up -f FILE",
        )
    stack = load_stack(Path(source))
    stop(rec.name)
    result = up_stack(
        stack,
        source=Path(source),
        llama_server=Path(rec.argv[0]),
        port=rec.port,
        progress=progress,
    )
    assert not isinstance(result, dict)
    out: UpResult = result.result
    return out


def key_holders() -> list[str]:
    """Running runs that read the named keys only when they start (the native
    llama-server's key file): they restart to take a change."""
    return [
        r.name
        for r in records.all_records()
        if r.engine == "llamacpp" and process.alive(r.pid, r.create_time)
    ]


def refresh_keys() -> list[str]:
    """Rewrite the key file of every running vLLM and llama-cpp-python run (deploy's guard
    reads the file again when it changes): a named key added, rotated or revoked takes
    effect at once."""
    done = []
    for r in records.all_records():
        engine_keys = Path(r.run_dir) / keys.ENGINE_KEYS_FILE
        live = r.engine in ("vllm", "llamacpp-python")
        if not live or not r.key_file or not engine_keys.exists():
            continue
        if process.alive(r.pid, r.create_time):
            keys.write_engine_keys(Path(r.key_file), engine_keys)
            done.append(r.name)
    return done
