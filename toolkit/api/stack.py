"""Several models behind one endpoint: plan them jointly against one machine's memory,
then serve them with llama-server's router mode.

The router (llama-server started without a model, `--models-preset FILE`) lists every
model of the preset under its section name on `/v1/models`, routes each request by its
`model` field, starts one llama-server child per model on demand (or at start with
`load-on-startup`), and keeps at most `--models-max` loaded, unloading the least recently
used. deploy writes the preset from each model's own plan (context, layers on GPU,
threads, caches, the recipe's serving flags), so each child runs exactly what was
planned; the joint plan decides which models stay resident and how many may be loaded at
once so that any that many fit together. The API keys reach the router AND its children
through LLAMA_ARG_API_KEY_FILE (children inherit the router's environment; the router
drops a key given as a flag from their argv), so no model is reachable without a key,
not even on its loopback port.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import keys
from toolkit.errors import DoesNotFit, EngineError, IntegrityError, UsageError
from toolkit.hardware.model import Hardware
from toolkit.planner.types import Plan, PlanRequest
from toolkit.stack import Stack, StackModel

if TYPE_CHECKING:
    from toolkit.engines.base import Launch

MiB = 1024**2
GiB = 1024**3
#: The router process itself (it loads no model): RSS measured 20-30 MiB here.
ROUTER_BYTES = 64 * MiB
#: llama-server flags the router sets per child (host, port, key, alias): left out of the
#: preset, with deploy's own logging flag.
_ROUTER_OWNED = {"host", "port", "api-key-file", "api-key", "alias", "log-verbosity"}
PRESET_FILE = "models-preset.ini"


@dataclass(frozen=True)
class StackEntry:
    model: StackModel
    plan: Plan

    @property
    def needed(self) -> dict[str, int]:
        return {d.id: d.needed_bytes for d in self.plan.memory}


@dataclass(frozen=True)
class StackPlan:
    stack: Stack
    entries: tuple[StackEntry, ...]
    resident: tuple[str, ...]
    on_demand: tuple[str, ...]
    #: Most models loaded at once (llama-server --models-max): any that many fit together.
    models_max: int
    #: Device → (bytes the resident models need, bytes usable).
    devices: dict[str, tuple[int, int]]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.stack.name,
            "models": [
                {
                    "alias": e.model.alias,
                    "variant_id": e.plan.variant_id,
                    "task": e.model.task,
                    "ctx": e.plan.ctx,
                    "placement": e.plan.placement,
                    "resident": e.model.alias in self.resident,
                    "memory": {d.id: d.needed_bytes for d in e.plan.memory},
                    "decode_tok_s": e.plan.speed.decode_tok_s,
                    "plan": e.plan.to_dict(),
                }
                for e in self.entries
            ],
            "resident": list(self.resident),
            "on_demand": list(self.on_demand),
            "models_max": self.models_max,
            "devices": {k: {"needed": n, "usable": u} for k, (n, u) in self.devices.items()},
            "notes": list(self.notes),
        }


def _capacity(entries: tuple[StackEntry, ...]) -> dict[str, int]:
    """What each device holds for the stack. A vLLM plan's capacity is its own share
    (utilization × total): the GPU's is that scaled to vLLM's whole budget."""
    cap: dict[str, int] = {}
    for e in entries:
        util = e.plan.vllm.gpu_memory_utilization if e.plan.vllm is not None else None
        for d in e.plan.memory:
            whole = d.capacity_bytes
            if util and d.id != "cpu":
                whole = int(d.capacity_bytes / util * GPU_BUDGET)
            cap[d.id] = min(cap.get(d.id, whole), whole)
    return cap


def _fits(chosen: list[StackEntry], cap: dict[str, int]) -> bool:
    need = _need(chosen)
    # no plan put anything in RAM (vLLM on GPUs only): the router or front door's few MiB
    # are not checked against an unknown
    return all(need[k] <= cap.get(k, 0) for k in need if k in cap or k != "cpu")


def _need(chosen: list[StackEntry]) -> dict[str, int]:
    need: dict[str, int] = {"cpu": ROUTER_BYTES}
    for e in chosen:
        for k, v in e.needed.items():
            need[k] = need.get(k, 0) + v
    return need


def plan_stack(stack: Stack, hw: str | Hardware | None = None) -> StackPlan:
    """Each model's own best llama.cpp plan, then which of them fit together."""
    from toolkit.api.plan import closest_message, make_plans

    entries = []
    for m in stack.models:
        req = PlanRequest(ctx=m.ctx, concurrency=m.concurrency, engine=m.engine)
        if m.task == "embed":
            # llama-server embeds an input in one physical batch: it refuses longer ones,
            # so an embedding model's ubatch is its context (Qwen3-Embedding: -ub 8192).
            req = PlanRequest(
                ctx=m.ctx, concurrency=m.concurrency, engine=m.engine, ubatch=m.ctx or 8192
            )
        result = make_plans(m.model, req, hw=hw)
        if not result.plans:
            why = closest_message(result.closest) if result.closest else "nothing to plan"
            raise DoesNotFit(
                f"stack model {m.alias!r} ({m.model}): {why}",
                hint=f"deploy plan {m.model} --engine {m.engine} --all",
            )
        entries.append(StackEntry(m, result.plans[0]))
    entries, share_notes = _share_gpus(entries, hw)
    ordered = tuple(entries)
    cap = _capacity(ordered)
    chosen: list[StackEntry] = []
    pinned = [e for e in ordered if e.model.resident is True or e.model.engine == "vllm"]
    if not _fits(pinned, cap):
        need = _need(pinned)
        over = ", ".join(
            f"{k} needs {need[k] / GiB:.1f} GiB of {cap.get(k, 0) / GiB:.1f}"
            for k in need
            if need[k] > cap.get(k, 0)
        )
        raise DoesNotFit(
            f"the models marked resident do not fit together ({over})",
            hint="mark some `resident: false` (loaded on demand), or lower their ctx",
        )
    chosen += pinned
    for e in ordered:
        if e.model.resident is None and e not in chosen and _fits([*chosen, e], cap):
            chosen.append(e)
    resident = tuple(e.model.alias for e in ordered if e in chosen)
    on_demand = tuple(e.model.alias for e in ordered if e not in chosen)
    # Any k llama.cpp models loaded at once must fit beside the vLLM servers (always
    # loaded): k = how many of the largest fit together.
    always = [e for e in ordered if e.model.engine == "vllm"]
    by_size = sorted(
        (e for e in ordered if e.model.engine != "vllm"),
        key=lambda e: sum(e.needed.values()),
        reverse=True,
    )
    models_max = 1
    for k in range(1, len(by_size) + 1):
        if _fits([*always, *by_size[:k]], cap):
            models_max = k
    llama_resident = [a for a in resident if a not in {e.model.alias for e in always}]
    models_max = max(models_max, len(llama_resident)) if not on_demand else models_max
    notes = list(share_notes)
    if on_demand:
        notes.append(
            f"{', '.join(on_demand)} load on their first request (cold start of a few "
            f"seconds to minutes); at most {models_max} model(s) loaded at once, the least "
            "recently used unloaded to make room"
        )
    need = _need(chosen)
    devices = {k: (need[k], cap.get(k, 0)) for k in sorted(need) if k in cap or k != "cpu"}
    return StackPlan(stack, ordered, resident, on_demand, models_max, devices, tuple(notes))


#: vLLM's default budget for the GPUs it uses (--gpu-memory-utilization 0.9): several vLLM
#: servers on one GPU split it.
GPU_BUDGET = 0.9


def _request(m: StackModel, util: float | None = None) -> PlanRequest:
    ubatch = (m.ctx or 8192) if m.task == "embed" else None
    return PlanRequest(
        ctx=m.ctx, concurrency=m.concurrency, engine=m.engine, ubatch=ubatch, gpu_mem_util=util
    )


def _share_gpus(
    entries: list[StackEntry], hw: str | Hardware | None
) -> tuple[list[StackEntry], list[str]]:
    """vLLM servers that would share a GPU each get a share of vLLM's 0.9 budget instead
    of 0.9 each (which the second could never get): first the least utilization that
    still holds its context, then the rest of the budget in proportion to that, and each
    is planned again at its share, so its KV pool is what vLLM will allocate."""
    from toolkit.api.plan import make_plans

    by_gpu: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        if e.model.engine == "vllm":
            for d in e.plan.devices:
                if d != "cpu":
                    by_gpu.setdefault(d, []).append(i)
    shared = sorted({i for ids in by_gpu.values() if len(ids) > 1 for i in ids})
    if not shared:
        return entries, []

    def plan_at(i: int, util: float) -> Plan | None:
        e = entries[i]
        res = make_plans(e.model.model, _request(e.model, util), hw=hw)
        best = res.plans[0] if res.plans else None
        if best is None or best.engine != "vllm" or best.ctx < e.plan.ctx:
            return None
        return best

    least: dict[int, float] = {}
    for i in shared:
        lo, hi = 1, round(GPU_BUDGET * 100)  # in hundredths
        if plan_at(i, lo / 100) is not None:
            hi = lo
        while lo < hi:
            mid = (lo + hi) // 2
            if plan_at(i, mid / 100) is not None:
                hi = mid
            else:
                lo = mid + 1
        least[i] = hi / 100
    total = sum(least.values())
    if total > GPU_BUDGET + 1e-9:
        parts = ", ".join(f"{entries[i].model.alias} ≥ {least[i]:.2f}" for i in shared)
        raise DoesNotFit(
            f"the vLLM models sharing a GPU need {total:.2f} of its memory together "
            f"({parts}); vLLM's budget is {GPU_BUDGET}",
            hint="lower their ctx, use a smaller quant, or give one `engine: llamacpp`",
        )
    out = list(entries)
    shares = []
    for i in shared:
        share = int((least[i] + (GPU_BUDGET - total) * least[i] / total) * 100) / 100
        plan = plan_at(i, share)
        assert plan is not None  # at least its least share, which fits
        out[i] = StackEntry(entries[i].model, plan)
        shares.append(f"{entries[i].model.alias} {share:.2f}")
    note = (
        f"vLLM models sharing a GPU split its memory (--gpu-memory-utilization): "
        f"{', '.join(shares)} (least that holds each context, plus the rest of 0.9 in "
        "proportion)"
    )
    return out, [note]


# --- the preset and the launch ----------------------------------------------------------


def _section(argv: tuple[str, ...] | list[str]) -> dict[str, str]:
    """llama-server argv (after the binary) → preset keys (flag names without dashes)."""
    out: dict[str, str] = {}
    args = list(argv[1:])
    i = 0
    while i < len(args):
        token = args[i]
        key = token.lstrip("-")
        nxt = args[i + 1] if i + 1 < len(args) else None
        if nxt is not None and (not nxt.startswith("--") or _number(nxt)):
            out[key] = nxt
            i += 2
        else:
            out[key] = "true"
            i += 1
    return {k: v for k, v in out.items() if k not in _ROUTER_OWNED}


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _ini_value(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    text = str(value)
    if "\n" in text or "\r" in text:
        raise UsageError(f"engine flag value {text!r} spans lines")
    return text


def render_preset(plan: StackPlan, sections: dict[str, dict[str, str]]) -> str:
    lines = [
        "; written by deploy from the stack's joint plan; edits are overwritten",
        "version = 1",
        "",
    ]
    for e in plan.entries:
        alias = e.model.alias
        lines.append(f"[{alias}]")
        for k, v in sections[alias].items():
            lines.append(f"{k} = {v}")
        lines.append(f"load-on-startup = {'true' if alias in plan.resident else 'false'}")
        lines.append("")
    return "\n".join(lines)


def _lora_file(alias: str, model: str, path: str | None, adapter: str | None) -> str:
    """The GGUF file of a stack model's LoRA: its path, or its recipe adapter's file in
    the store."""
    if adapter is not None:
        from toolkit.api.store import adapter_files

        _base, found, paths = adapter_files(model, adapter)
        if found.format != "gguf":
            raise UsageError(
                f"stack model {alias!r}: adapter {adapter!r} is PEFT; llama.cpp loads GGUF"
            )
        return str(paths[0])
    assert path is not None
    if not Path(path).is_file():
        raise UsageError(f"stack model {alias!r}: no LoRA file {path}")
    return path


def model_section(
    entry: StackEntry, argv: tuple[str, ...], flags: frozenset[str]
) -> dict[str, str]:
    """One model's preset keys: its planned llama-server flags, the embedding flags for
    task embed, its LoRA adapters and the user's own engine_flags (checked against the
    installed llama-server's flag list)."""
    from toolkit.engines.flags import check_extra_args

    m = entry.model
    sec = _section(argv)
    if m.task == "embed":
        sec["embeddings"] = "true"
        sec.setdefault("pooling", "mean")
    if m.lora:
        files = [_lora_file(m.alias, m.model, lo.path, lo.adapter) for lo in m.lora]
        sec["lora-scaled"] = ",".join(
            f"{f}:{lo.scale:g}" for f, lo in zip(files, m.lora, strict=True)
        )
    extra: list[str] = []
    for flag, value in m.engine_flags.items():
        extra.append(flag)
        if value is not True:
            extra.append(_ini_value(value))
    check_extra_args(extra, flags, engine="llamacpp")
    for flag, value in m.engine_flags.items():
        sec[flag.lstrip("-")] = _ini_value(value)
    return sec


@dataclass(frozen=True)
class StackUp:
    plan: StackPlan
    result: Any
    preset: Path
    notes: tuple[str, ...] = field(default=())


def up_stack(
    stack: Stack,
    *,
    source: Path | None = None,
    llama_server: Path | None = None,
    port: int | None = None,
    timeout: float | None = None,
    dry_run: bool = False,
    progress: Any = None,
    notify: Any = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> StackUp | dict[str, Any]:
    """Plan the stack for this machine, write the router's preset, start the router and
    wait until the first model answers through it. TLS: --tls-cert/--tls-key, else the
    file's `tls:`."""
    from toolkit.api import runs
    from toolkit.runs import records

    say = notify or (lambda _m: None)
    runs.check_host(stack.host)
    if tls_cert is None and tls_key is None and stack.tls is not None:
        tls_cert, tls_key = Path(stack.tls.cert), Path(stack.tls.key)
    tls = runs._tls(runs.UpOptions(tls_cert=tls_cert, tls_key=tls_key))
    splan = plan_stack(stack)
    if any(e.model.engine == "vllm" for e in splan.entries):
        return _up_mixed(
            splan, source=source, llama_server=llama_server, port=port, timeout=timeout,
            dry_run=dry_run, progress=progress, say=say, tls=tls,
        )  # fmt: skip
    installed = _router_engine(llama_server)
    name = records.check_name(stack.name)
    rdir = records.run_dir(name)
    key_file = keys.key_path(name)
    engine_keys = rdir / keys.ENGINE_KEYS_FILE
    preset, text = _preset(splan, installed, rdir, stack.host, engine_keys)

    def launch_for(p: int) -> Launch:
        launch = _router_launch(splan, installed, preset, text, stack.host, p, engine_keys)
        if tls is None:
            return launch
        return replace(
            launch,
            argv=(*launch.argv, "--ssl-cert-file", str(tls.cert), "--ssl-key-file", str(tls.key)),
            scheme="https",
        )

    return _start_stack(
        splan, installed, launch_for, key_file, engine_keys, preset, text,
        probe=splan.entries[0].model.alias, source=source, port=port, timeout=timeout,
        dry_run=dry_run, progress=progress, say=say, tls=tls,
    )  # fmt: skip


def _start_stack(
    splan: StackPlan,
    installed: Any,
    launch_for: Any,
    key_file: Path,
    engine_keys: Path,
    preset: Path,
    text: str,
    *,
    probe: str,
    source: Path | None,
    port: int | None,
    timeout: float | None,
    dry_run: bool,
    progress: Any,
    say: Any,
    tls: Any = None,
) -> StackUp | dict[str, Any]:
    """The stack's run (the router, or the front door of a mixed stack), or with
    `dry_run` what it would run."""
    from toolkit.api import runs

    stack = splan.stack
    if dry_run:
        launch = launch_for(port or stack.port or 0)
        return {"name": stack.name, "plan": splan.to_dict(), "preset": text, **launch.redacted()}
    result = runs._start(
        name=stack.name,
        model_label=f"stack: {', '.join(e.model.alias for e in splan.entries)}",
        variant_id=",".join(e.plan.variant_id for e in splan.entries),
        plan_doc={"stack": splan.to_dict(), "file": str(source) if source else None},
        installed=installed,
        launch_for=launch_for,
        opts=runs.UpOptions(name=stack.name, host=stack.host, port=port or stack.port),
        key_file=key_file,
        engine_keys=engine_keys,
        tls=tls,
        timeout=timeout or runs.DEFAULT_TIMEOUT_S[installed.name],
        progress=progress,
        warnings=[],
        say=say,
        calibrate=None,
        probe_model=probe,
    )
    return StackUp(plan=splan, result=result, preset=preset)


def _router_engine(llama_server: Path | None) -> Any:
    from toolkit.engines.base import find_engine

    installed = find_engine("llamacpp", path=llama_server)
    if installed.flags and "--models-preset" not in installed.flags:
        raise EngineError(
            f"llama-server {installed.version} has no router mode (--models-preset)",
            hint="deploy engines install llamacpp --force (a newer build)",
        )
    return installed


def _checked_files(plan: Plan) -> Path:
    from toolkit.api import runs

    path = runs.model_files(plan)
    bad = runs.verify_failure(plan)
    if bad:
        raise IntegrityError(
            f"{plan.variant_id}: {bad}; deploy will not serve it",
            hint=f"deploy rm {plan.variant_id} && deploy pull {plan.variant_id}",
        )
    return path


def _preset(
    splan: StackPlan, installed: Any, rdir: Path, host: str, keys_file: Path
) -> tuple[Path, str]:
    """The router's preset (one section per llama.cpp model) and where it goes."""
    from toolkit.engines.base import build_launch

    sections: dict[str, dict[str, str]] = {}
    for e in splan.entries:
        if e.model.engine != "llamacpp":
            continue
        one = build_launch(
            e.plan,
            installed,
            model_path=_checked_files(e.plan),
            host=host,
            port=0,
            api_key_file=keys_file,
            run_dir=rdir,
            served_model_name=e.model.alias,
        )
        sections[e.model.alias] = model_section(e, one.argv, installed.flags)
    llama = [e for e in splan.entries if e.model.engine == "llamacpp"]
    only = StackPlan(splan.stack, tuple(llama), splan.resident, splan.on_demand,
                     splan.models_max, splan.devices, splan.notes)  # fmt: skip
    return rdir / PRESET_FILE, render_preset(only, sections)


def _router_launch(
    splan: StackPlan, installed: Any, preset: Path, text: str, host: str, port: int,
    keys_file: Path,
) -> Launch:  # fmt: skip
    from toolkit.engines.base import Launch, private_env

    argv = (
        str(installed.path), "--models-preset", str(preset),
        "--models-max", str(splan.models_max), "--host", host, "--port", str(port), "--offline",
    )  # fmt: skip
    env = private_env(False)
    # The router and every model it starts read the keys from this file.
    env["LLAMA_ARG_API_KEY_FILE"] = str(keys_file)
    first = next(e for e in splan.entries if e.model.engine == "llamacpp")
    return Launch(
        engine="llamacpp",
        engine_version=installed.version,
        argv=argv,
        env=env,
        served_model_name=first.model.alias,
        host=host,
        port=port,
        notes=splan.notes,
        files={preset: text},
    )


def _up_mixed(
    splan: StackPlan,
    *,
    source: Path | None,
    llama_server: Path | None,
    port: int | None,
    timeout: float | None,
    dry_run: bool,
    progress: Any,
    say: Any,
    tls: Any = None,
) -> StackUp | dict[str, Any]:
    """llama.cpp models behind the router, each vLLM model on its own server, all on
    loopback ports, and deploy's front door (toolkit.stackfront) on the stack's port."""
    import json

    from toolkit import stackfront
    from toolkit.engines import vllm_guard
    from toolkit.engines.base import Launch, build_launch, find_engine, private_env
    from toolkit.engines.flags import check_extra_args
    from toolkit.runs import process, records

    stack = splan.stack
    vllm = find_engine("vllm")
    if vllm.python is None:
        raise EngineError("the vLLM engine has no venv", hint="deploy engines install vllm")
    name = records.check_name(stack.name)
    rdir = records.run_dir(name)
    key_file = keys.key_path(name)  # the backends accept the run's own key only
    engine_keys = rdir / keys.ENGINE_KEYS_FILE  # the front accepts the run's and the team's
    llama = [e for e in splan.entries if e.model.engine == "llamacpp"]
    router = _router_engine(llama_server) if llama else None
    preset: Path | None = None
    text = ""
    if router is not None:
        preset, text = _preset(splan, router, rdir, "127.0.0.1", key_file)

    def launch_for(p: int) -> Launch:
        children: list[dict[str, Any]] = []
        routes: dict[str, str] = {}
        if router is not None and preset is not None:
            rp = process.free_port("127.0.0.1")
            rl = _router_launch(splan, router, preset, text, "127.0.0.1", rp, key_file)
            children.append({"name": "llama-server router", "argv": list(rl.argv),
                             "env": rl.process_env({})})  # fmt: skip
            routes.update({e.model.alias: f"http://127.0.0.1:{rp}" for e in llama})
        for e in splan.entries:
            if e.model.engine != "vllm":
                continue
            vp = process.free_port("127.0.0.1")
            one = build_launch(
                e.plan,
                vllm,
                model_path=_checked_files(e.plan),
                host="127.0.0.1",
                port=vp,
                api_key_file=key_file,
                run_dir=rdir / "vllm" / e.model.alias,
                served_model_name=e.model.alias,
            )
            extra: list[str] = []
            for flag, value in e.model.engine_flags.items():
                extra += [flag] if value is True else [flag, _ini_value(value)]
            check_extra_args(extra, vllm.flags, engine="vllm")
            # TMPDIR: the run's own (short: vLLM binds unix sockets under it)
            env = {k: v for k, v in one.process_env({}).items() if k != "TMPDIR"}
            children.append(
                {"name": f"vLLM {e.model.alias}", "argv": [*one.argv, *extra], "env": env}
            )
            routes[e.model.alias] = f"http://127.0.0.1:{vp}"
        config = {
            "host": stack.host,
            "port": p,
            "routes": routes,
            "backend_key_file": str(key_file),
            "children": children,
        }
        front_dir = rdir / "front"
        env = private_env(False)
        env.update({vllm_guard.KEYS_FILE_VAR: str(engine_keys), "PYTHONPATH": str(front_dir)})
        return Launch(
            engine="vllm",
            engine_version=vllm.version,
            argv=(
                str(vllm.python),
                str(front_dir / stackfront.SCRIPT),
                str(front_dir / stackfront.CONFIG),
                *(
                    ()
                    if tls is None
                    else ("--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key))
                ),
            ),
            scheme="http" if tls is None else "https",
            env=env,
            served_model_name=next(
                e for e in splan.entries if e.model.engine == "vllm"
            ).model.alias,
            host=stack.host,
            port=p,
            notes=splan.notes,
            files={
                front_dir / stackfront.SCRIPT: stackfront.SOURCE,
                front_dir / f"{vllm_guard.MODULE}.py": vllm_guard.SOURCE,
                front_dir / stackfront.CONFIG: json.dumps(config, indent=1),
            },
        )

    return _start_stack(
        splan, vllm, launch_for, key_file, engine_keys, preset or rdir / stackfront.CONFIG,
        text, probe=next(e for e in splan.entries if e.model.engine == "vllm").model.alias,
        source=source, port=port, timeout=timeout, dry_run=dry_run, progress=progress, say=say,
        tls=tls,
    )  # fmt: skip
