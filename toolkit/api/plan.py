"""Plans: gather the inputs (catalog or model files, hardware, calibration records) and
call the pure planner.

`make_plans("qwen3-coder", hw="1xrtx4090,ram=64G")` ranks what fits; `best_plan(...)`
returns the first or raises DoesNotFit (exit 3) naming the closest option and what it
would need; `estimate(...)` is the memory breakdown of one fully specified configuration.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from toolkit.errors import DoesNotFit, NotFound, UsageError
from toolkit.hardware.model import Hardware
from toolkit.planner.inputs import ModelInput, VariantInput
from toolkit.planner.types import CalibrationRecord, Plan, PlanRequest, PlanResult, Rejection

GiB = 1024**3
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _hardware(hw: str | Hardware | None) -> Hardware:
    if isinstance(hw, Hardware):
        return hw
    from toolkit.hardware.profile import load_hardware

    return load_hardware(hw)


def _calibration(hw: Hardware) -> list[CalibrationRecord]:
    try:
        from toolkit.calibration import load_records
    except ImportError:
        return []
    return load_records(hardware_key=hw.fingerprint())


def installed_engine_versions(hw: Hardware) -> dict[str, list[str]]:
    """Plan engine → versions installed here (engine.json under the engines dir; no
    subprocess, no engine import). Only for this detected machine: a spec or profile
    describes another box, whose engines we cannot see, so its versions stay unknown."""
    if hw.source != "detected":
        return {}
    from toolkit.engines.base import engine_home, read_record

    out: dict[str, list[str]] = {}
    for name, plan_engine in (
        ("llamacpp", "llamacpp"),
        ("llamacpp-python", "llamacpp"),
        ("vllm", "vllm"),
    ):
        found = read_record(engine_home(name))  # type: ignore[arg-type]
        if found is not None:
            out.setdefault(plan_engine, []).append(found.version)
    return out


def _from_recipes(name: str) -> tuple[list[ModelInput], str | None]:
    from toolkit.api.recipes import catalog
    from toolkit.catalog import resolve

    cat = catalog()
    resolved = resolve(cat, name)
    if resolved.adapter is not None:
        base = resolved.entry.model.id
        raise UsageError(
            f"{name!r} is a LoRA adapter, not weights: plan its base model",
            hint=f"deploy plan {base}; deploy up {base} --lora {resolved.adapter.name}",
        )
    models = _recipe_inputs(cat, resolved.entries)
    if not models:
        why = "; ".join(r.reason for r in unplanned(cat, resolved.entries))
        raise NotFound(
            f"{name!r} cannot be planned: {why}",
            hint="plan a local copy or a hub repo instead: deploy plan ./model-dir",
        )
    return models, resolved.variant_id


def unplanned(cat: Any, entries: Any) -> list[Rejection]:
    """Recipe models the planner cannot size (no architecture facts), each with why, so a
    family plan names them instead of leaving them out."""
    out = []
    for entry in entries:
        m = entry.model
        if m.architecture is not None:
            continue
        twin = cat.models.get(m.same_architecture_as) if m.same_architecture_as else None
        if twin is not None and twin.model.architecture is not None:
            continue
        note = f" ({m.note})" if m.note else ""
        out.append(Rejection(m.id, None, f"no architecture facts in its recipe{note}"))
    return out


def task_models(task: str) -> list[ModelInput]:
    """Every recipe model tagged for TASK (code, chat, reason, embed)."""
    from toolkit.api.recipes import catalog
    from toolkit.catalog.records import TASKS

    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; one of: {', '.join(TASKS)}")
    cat = catalog()
    entries = [e for e in cat.models.values() if e.model.tasks and task in e.model.tasks.tags]
    models = _recipe_inputs(cat, entries)
    if not models:
        raise NotFound(
            f"no recipe is tagged for task {task!r}", hint="deploy recipes list (see each tasks)"
        )
    return models


def _recipe_inputs(cat: Any, entries: Any) -> list[ModelInput]:
    from toolkit.catalog import variant_id
    from toolkit.catalog.capability import capabilities

    caps = capabilities(e.model for e in cat.models.values())
    models: list[ModelInput] = []
    for entry in entries:
        m = entry.model
        arch = m.architecture
        if arch is None and m.same_architecture_as and m.same_architecture_as in cat.models:
            arch = cat.models[m.same_architecture_as].model.architecture
        if arch is None:
            continue
        variants = []
        for v in m.variants:
            variants.append(
                VariantInput(
                    id=variant_id(m, v),
                    quant=v.quant,
                    format=v.format,
                    download_bytes=v.total_size(),
                    max_tp=v.vllm.max_tp if v.vllm else None,
                    tp_divides=v.vllm.tp_divides if v.vllm else None,
                    release=v.repo == m.repo,
                )
            )
        cap = caps.get(m.id)
        models.append(
            ModelInput(
                id=m.id,
                arch=arch,
                native_ctx=m.context.native,
                params_total=m.params.total,
                variants=tuple(variants),
                capability=cap.score if cap else None,
                capability_basis=cap.basis if cap else "",
                min_ctx=m.min_ctx,
                release_date=m.release_date,
                release_formats=tuple(
                    sorted(
                        {v.format for v in m.variants if v.repo == m.repo and v.format != "gguf"}
                    )
                ),
            )
        )
    return models


def _from_path(path: Path, quant: str | None) -> list[ModelInput]:
    """A local GGUF file or a model folder (config.json + optional safetensors headers)."""
    if path.is_file():
        from toolkit.inspect.gguf import read_gguf

        return _from_inspected(read_gguf(path), quant, name=path.name, local=str(path))
    from toolkit.inspect.hf import read_model_dir

    return _from_inspected(read_model_dir(path), quant, name=path.name, local=str(path))


def _from_hub(repo_id: str, quant: str | None) -> list[ModelInput]:
    """A Hugging Face repo: only config.json and tensor headers are read (toolkit.inspect)."""
    from toolkit.inspect.hub import read_hub_model

    return _from_inspected(read_hub_model(repo_id), quant, name=repo_id, local=None)


def _from_inspected(
    obj: Any, quant: str | None, *, name: str, local: str | None
) -> list[ModelInput]:
    """GgufModel or HfModel → planner input. `quant` re-states a config-only model in
    another format (params × bits of that format)."""
    from toolkit.inspect.gguf import GgufModel

    mid = name.lower().replace("/", "--")
    if isinstance(obj, GgufModel):
        v = VariantInput(
            id=f"file:{name}" if local else f"hf:{name}:{obj.quant.lower()}",
            quant=obj.quant.lower(),
            format="gguf",
            layout=obj.layout,
            download_bytes=obj.file_bytes,
            path=local,
        )
        return [ModelInput(mid, obj.architecture, obj.context_length or 4096, variants=(v,))]
    fmt = str(obj.format)
    layout = obj.layout
    q = fmt
    if quant and quant.lower() != fmt:
        q, fmt, layout = quant.lower(), _format_of(quant.lower()), None
    v = VariantInput(
        id=f"{'dir' if local else 'hf'}:{name}:{q}",
        quant=q,
        format=fmt,
        layout=layout,
        download_bytes=obj.file_bytes if layout is not None else None,
        path=local,
    )
    total = float(obj.params.total)
    ctx = obj.context_length or 4096
    return [ModelInput(mid, obj.architecture, ctx, total, (v,))]


def _format_of(quant: str) -> str:
    from toolkit.planner.quant import is_gguf_quant

    if is_gguf_quant(quant):
        return "gguf"
    return {"int4": "awq"}.get(quant, quant)


def model_inputs(model: str, request: PlanRequest) -> tuple[list[ModelInput], PlanRequest]:
    """What the planner needs for MODEL (a recipe name, variant id or local path)."""
    path = Path(model).expanduser()
    if path.exists():
        return _from_path(path, request.quant), request
    try:
        models, vid = _from_recipes(model)
    except NotFound:
        if not _REPO_ID.match(model):
            raise
        return _from_hub(model, request.quant), request
    if vid is not None and request.variant is None:
        request = replace(request, variant=vid)
    return models, request


def make_plans(
    model: str | None,
    request: PlanRequest | None = None,
    *,
    hw: str | Hardware | None = None,
    calibration: list[CalibrationRecord] | None = None,
    engine_versions: dict[str, list[str]] | None = None,
    task: str | None = None,
    cluster: str | None = None,
) -> PlanResult:
    """Ranked viable plans (best first) and every rejection with its reason.

    Calibration records default to this machine's stored ones, matched on the engine
    versions installed here (`installed_engine_versions`) unless given."""
    from toolkit.planner.plan import make_plans as plan

    req = request or PlanRequest()
    _check_request(req)
    if cluster is not None:
        if hw is not None:
            raise UsageError("give --hw or --cluster, not both")
        return _cluster_plans(model, req, cluster, task)
    hardware = _hardware(hw)
    if model is not None and task is not None:
        raise UsageError("give a MODEL or --task, not both", hint=f"deploy plan --task {task}")
    if model is None:
        if task is None:
            raise UsageError("name a MODEL or a --task", hint="deploy plan qwen3-coder")
        models = task_models(task)
        skipped: list[Rejection] = []
    else:
        models, req = model_inputs(model, req)
        skipped = _unplanned_of(model)
    if req.vllm_version is None and hardware.source == "detected":
        installed = installed_engine_versions(hardware).get("vllm")
        if installed:
            req = replace(req, vllm_version=installed[0])
    records = calibration if calibration is not None else _calibration(hardware)
    if engine_versions is None and calibration is None and records:
        engine_versions = installed_engine_versions(hardware)
    result = plan(models, hardware, req, records, engine_versions)
    if skipped:
        result = replace(result, unplanned=tuple(skipped))
    return result


def _unplanned_of(model: str) -> list[Rejection]:
    """The recipe models MODEL names that have no architecture (none for files/repos)."""
    if Path(model).expanduser().exists():
        return []
    from toolkit.api.recipes import catalog
    from toolkit.catalog import resolve

    cat = catalog()
    try:
        return unplanned(cat, resolve(cat, model).entries)
    except NotFound:
        return []


def _cluster_plans(model: str | None, req: PlanRequest, spec: str, task: str | None) -> PlanResult:
    """Plans over a cluster: the merged hardware with TP kept inside nodes, devices named
    by node, the network's latency added to each token that crosses it."""
    from toolkit.cluster import parse_cluster
    from toolkit.planner.plan import make_plans as plan

    cl = parse_cluster(spec)
    hw, labels = cl.merged()
    req = replace(
        req,
        cluster_nodes=len(cl.nodes),
        gpus_per_node=cl.gpus_per_node(),
        net_latency_s=cl.latency,
    )
    if model is None:
        if task is None:
            raise UsageError("name a MODEL or a --task", hint="deploy plan qwen3-coder")
        models = task_models(task)
    else:
        models, req = model_inputs(model, req)
    result = plan(models, hw, req, [], None)
    per_node = cl.gpus_per_node()
    out = []
    for p in result.plans:
        nodes = sorted(
            {labels.get(d.id, d.id).split("/")[0] for d in p.memory if d.total_bytes > 0}
        )
        notes = list(p.notes)
        speed = p.speed
        if len(nodes) > 1 and speed.decode_tok_s:
            # each decode step crosses every node boundary once (pipeline / RPC ring)
            step = 1 / speed.decode_tok_s + len(nodes) * cl.latency
            scale = (1 / step) / speed.decode_tok_s
            speed = replace(
                speed,
                decode_tok_s=round(1 / step, 1),
                decode_tok_s_aggregate=None
                if speed.decode_tok_s_aggregate is None
                else round(speed.decode_tok_s_aggregate * scale, 1),
                decode_low=None if speed.decode_low is None else round(speed.decode_low * scale, 1),
                decode_high=None
                if speed.decode_high is None
                else round(speed.decode_high * scale, 1),
            )
            how = (
                "vLLM over Ray: TP inside each node, one pipeline stage per node"
                if p.engine == "vllm"
                else "llama.cpp RPC: layer ranges on the other nodes' GPUs (rpc-server)"
            )
            notes.append(
                f"cluster: {', '.join(nodes)} over {cl.network} ({how}); +{cl.latency * 1e6:.0f}"
                " µs per node per token (typical latency of that network, an estimate)"
            )
        elif p.engine == "vllm" and len(cl.nodes) > 1:
            notes.append(
                f"fits one node ({per_node} GPUs): for throughput run {len(cl.nodes)} replicas,"
                " one per node"
            )
        memory = tuple(replace(d, id=labels.get(d.id, d.id)) for d in p.memory)
        devices = tuple(labels.get(d, d) for d in p.devices)
        out.append(replace(p, memory=memory, devices=devices, speed=speed, notes=tuple(notes)))
    return replace(result, plans=tuple(out))


def best_plan(
    model: str,
    request: PlanRequest | None = None,
    *,
    hw: str | Hardware | None = None,
) -> Plan:
    """The planner's first choice, or DoesNotFit with the closest option."""
    result = make_plans(model, request, hw=hw)
    if result.plans:
        return result.plans[0]
    raise does_not_fit(model, result)


def does_not_fit(model: str, result: PlanResult) -> DoesNotFit:
    """Exit 3: the closest option, what it needs, and what would make something fit."""
    c = result.closest
    if c is None:
        return DoesNotFit(f"nothing to plan for {model}", hint=f"deploy plan {model} --all")
    message = closest_message(c)
    if result.suggestion:
        message += f"; try {result.suggestion}"
    if result.unplanned:
        ids = ", ".join(r.variant_id for r in result.unplanned)
        message += f"; not planned (no architecture facts): {ids}"
    return DoesNotFit(message, hint=_hint(model, result))


def closest_message(c: Rejection) -> str:
    if c.needs_bytes is not None and c.have_bytes is not None:
        return (
            f"nothing fits; closest is {c.variant_id} on {c.engine}: needs "
            f"{c.needs_bytes / GiB:.1f} GiB, {c.have_bytes / GiB:.1f} GiB usable ({c.reason})"
        )
    return f"nothing fits; {c.variant_id} on {c.engine}: {c.reason}"


def _hint(model: str, result: PlanResult) -> str:
    """The next command: the smaller context, else the variant that fits, else --all."""
    text = result.suggestion or ""
    ctx = re.search(r"--ctx (\d+)", text)
    if ctx:
        return f"deploy plan {model} --ctx {ctx.group(1)}"
    variant = re.search(r"\(([^()\s]+:[^()\s]+)\)", text)
    if variant:
        return f"deploy plan {variant.group(1)}"
    return f"deploy plan {model} --all  (see every rejection)"


#: The max_lora_rank values vLLM accepts (vllm/config/lora.py LoRAConfig).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def _check_request(req: PlanRequest) -> None:
    if req.ctx is not None and req.ctx < 1:
        raise UsageError("--ctx must be positive")
    if req.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if req.gpu_mem_util is not None and not 0 < req.gpu_mem_util <= 1:
        raise UsageError("--gpu-mem-util must be in (0, 1]")
    if req.tp is not None and req.tp < 1:
        raise UsageError("--tp must be at least 1")
    if req.lora_rank is not None and req.lora_rank not in LORA_RANKS:
        raise UsageError(
            f"--lora-rank {req.lora_rank}: vLLM takes one of {', '.join(map(str, LORA_RANKS))}",
            hint="the next size up from your adapters' rank, e.g. --lora-rank 16",
        )
    if req.dp is not None and not 1 <= req.dp <= 64:
        raise UsageError("--dp must be between 1 and 64", hint="e.g. --dp 8 on 8 GPUs")
    if req.vllm_version is not None:
        from toolkit.planner import vllm_memory

        v = vllm_memory.parse_version(req.vllm_version)
        if v is None or not (0, 6, 0) <= v <= vllm_memory.NEWEST:
            newest = vllm_memory.version_text(vllm_memory.NEWEST)
            raise UsageError(
                f"--vllm-version {req.vllm_version!r}: planned versions are 0.6 to {newest}",
                hint="e.g. --vllm-version 0.11",
            )
    if req.min_tok_s is not None and not 0 <= req.min_tok_s < 1e6:
        raise UsageError("--min-tok-s must be between 0 and 1e6", hint="e.g. --min-tok-s 10")
    if req.min_ctx is not None and not 1 <= req.min_ctx <= 1 << 24:
        raise UsageError("--min-ctx must be a positive token count", hint="e.g. --min-ctx 8192")


def up_command(plan: Plan) -> str:
    """The `deploy up …` line that runs this plan on the machine it was made for.

    `deploy up` plans again on the machine it runs on; to run exactly this plan (made
    elsewhere with --hw), save it with --json and use `deploy up --plan FILE`."""
    parts = ["deploy up", plan.model_path or plan.variant_id, f"--engine {plan.engine}"]
    parts.append(f"--ctx {plan.ctx}")
    if plan.concurrency > 1:
        parts.append(f"--concurrency {plan.concurrency}")
    return " ".join(parts)


def estimate(
    model: str, request: PlanRequest, *, hw: str | Hardware | None = None
) -> dict[str, Any]:
    """Memory breakdown of one configuration (the best one matching the settings)."""
    result = make_plans(model, replace(request, lower_ctx=False), hw=hw)
    return estimate_document(result)


def _devices(memory: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": d.id,
            "weights_bytes": d.weights_bytes,
            "kv_cache_bytes": d.kv_cache_bytes,
            "compute_bytes": d.compute_bytes,
            "overhead_bytes": d.overhead_bytes,
            "cache_bytes": d.cache_bytes,
            "total_bytes": d.total_bytes,
            "reclaimable_bytes": d.reclaimable_bytes,
            "capacity_bytes": d.capacity_bytes,
            "free_bytes": d.free_bytes,
            "measured": list(d.measured),
        }
        for d in memory
    ]


def estimate_document(result: PlanResult) -> dict[str, Any]:
    plan = result.plans[0] if result.plans else None
    if plan is None:
        c = result.closest
        return {
            "fits": False,
            "reasons": [r.reason for r in result.rejections],
            "needs_bytes": c.needs_bytes if c else None,
            "have_bytes": c.have_bytes if c else None,
            "suggestion": result.suggestion,
            # The configuration that came closest, device by device: what to change.
            "variant_id": c.variant_id if c else None,
            "engine": c.engine if c else None,
            "placement": c.placement if c else None,
            "devices": _devices(c.memory) if c else [],
            "unplanned": [r.variant_id for r in result.unplanned],
        }
    return {
        "fits": True,
        "reasons": list(plan.notes),
        "model_id": plan.model_id,
        "variant_id": plan.variant_id,
        "engine": plan.engine,
        "placement": plan.placement,
        "ctx": plan.ctx,
        "concurrency": plan.concurrency,
        "kv_dtype": plan.kv_dtype,
        "weights_bytes": plan.weights_bytes,
        "kv_bytes_per_token": plan.kv_bytes_per_token,
        "devices": _devices(plan.memory),
        "kv_tokens_capacity": plan.kv_tokens_capacity,
        "max_concurrency": plan.max_concurrency,
        "max_ctx": plan.max_ctx,
        "decode_tok_s": plan.speed.decode_tok_s,
        "decode_tok_s_aggregate": plan.speed.decode_tok_s_aggregate,
        "prefill_tok_s": plan.speed.prefill_tok_s,
        "speed_basis": plan.speed.basis,
        "kernel": plan.kernel,
        "llamacpp": None if plan.llamacpp is None else plan.to_dict()["llamacpp"],
        "vllm": None if plan.vllm is None else plan.to_dict()["vllm"],
        "calibration": list(plan.calibration),
    }
