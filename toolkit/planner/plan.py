"""Search variants × engines × placements × context; rank; explain every rejection.

Pure: the same (models, hardware, request, calibration records) give the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from toolkit.hardware.model import Hardware
from toolkit.inspect.layout import WeightLayout
from toolkit.inspect.params import is_moe_layer
from toolkit.planner import compat, placement, rank, search, vllm_memory
from toolkit.planner import memory as mem
from toolkit.planner.calibrate import EngineVersions, apply_calibration
from toolkit.planner.inputs import ModelInput, VariantInput
from toolkit.planner.kv import global_kv_bytes_per_token
from toolkit.planner.placement import Evaluated
from toolkit.planner.quant import QuantInfo, quant_info
from toolkit.planner.speed import case_places, cpu_flops, estimate, slowest_part
from toolkit.planner.speedmodel import SpeedCase, prefill_rate
from toolkit.planner.types import (
    CalibrationRecord,
    Engine,
    LlamaCppSettings,
    Plan,
    PlanRequest,
    PlanResult,
    Rejection,
    VllmSettings,
)
from toolkit.planner.weights import estimate_layout, vision_bytes, vllm_loaded

GiB = 1024**3
DEFAULT_CTX_CAP = 32768


def default_ctx(native: int) -> int:
    return min(native, DEFAULT_CTX_CAP)


def _kv_dtype(engine: Engine, req: PlanRequest) -> str | None:
    """The KV dtype for an engine, or None when the engine does not support the request."""
    if req.kv_dtype is None:
        return "f16" if engine == "llamacpp" else "bf16"
    if engine == "llamacpp":
        return req.kv_dtype if req.kv_dtype in ("f16", "bf16", "q8_0", "q4_0", "f32") else None
    return req.kv_dtype if req.kv_dtype in ("fp8", "bf16", "f16", "f32") else None


def variant_layout(model: ModelInput, v: VariantInput, info: QuantInfo) -> WeightLayout:
    if v.layout is not None:
        return v.layout
    # Architectures are frozen but may hold lists (sources): keyed by identity, and the
    # entry keeps its architecture alive so the id cannot be reused.
    key = (id(model.arch), info, model.params_total, v.download_bytes)
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0] is model.arch:
        return hit[1]
    found = estimate_layout(
        model.arch, info, params_total=model.params_total, size_bytes=v.download_bytes
    )
    if len(_LAYOUTS) > 512:
        _LAYOUTS.clear()
    _LAYOUTS[key] = (model.arch, found)
    return found


#: Estimated layouts by their inputs (the same variant is laid out for every engine,
#: context tried and the download size; the replay of llama-quantize is the costly part).
_LAYOUTS: dict[tuple[object, ...], tuple[object, WeightLayout]] = {}


def download_size(model: ModelInput, v: VariantInput) -> int | None:
    """The variant's download: exact when its files are known, else the weights its
    architecture and quant layout give (an estimate: `Plan.download_estimated`)."""
    if v.download_bytes is not None:
        return v.download_bytes
    info = quant_info(v.quant, v.format) or quant_info(v.format)
    if info is None:
        return None
    layout = variant_layout(model, v, info)
    # A checkpoint in the model's own repo layout carries its image encoder; a GGUF keeps
    # it in a separate mmproj file.
    vision = vision_bytes(model.arch) if v.format != "gguf" else 0
    return layout.total_bytes + layout.unloaded_bytes + vision


def _matches(v: VariantInput, req: PlanRequest) -> bool:
    if req.variant:
        want = req.variant.lower()
        if ":" in want:
            return v.id.lower() == want
        return v.quant == want or v.id.lower().endswith(":" + want)
    if req.quant:
        q = req.quant.lower()
        return v.quant == q or v.format == q or (q in ("int4",) and v.format in ("awq", "gptq"))
    return True


# --- assembling plans ------------------------------------------------------------------


def _plan(
    model: ModelInput,
    v: VariantInput,
    info: QuantInfo,
    layout: WeightLayout,
    engine: Engine,
    e: Evaluated,
    verdict: compat.Verdict,
    hw: Hardware,
    req: PlanRequest,
    ctx: int,
    kv_dtype: str,
    max_ctx: int | None,
    notes: list[str],
) -> Plan:
    conc = max(1, req.concurrency)
    notes = [*notes, *e.notes]
    if not hw.host.ram_known:
        notes.append(placement.RAM_UNKNOWN_NOTE)
    ram_assumed = hw.host.ram_bandwidth_bytes_s is None and any(
        p.where.startswith("cpu") and p.bytes_per_token > 0 for p in e.parts
    )
    speed = estimate(
        speed_case(model, v, info, layout, engine, e, hw, conc),
        slowest=slowest_part(e.parts),
        ram_assumed=ram_assumed,
        cpu_why=cpu_flops(hw.host)[1],
    )
    llama = vllm = None
    devices = tuple(d.id for d in e.devices if d.total_bytes > 0)
    if engine == "llamacpp":
        llama = LlamaCppSettings(
            n_gpu_layers=e.ngl,
            n_cpu_moe=e.n_cpu_moe,
            tensor_split=e.tensor_split,
            flash_attn=req.flash_attn or "auto",
            ubatch=req.ubatch or 512,
            slots=conc,
            threads=_threads(hw, e),
            cache_ram_mib=e.cache_ram_mib,
            ctx_checkpoints=e.ctx_checkpoints,
        )
        if e.n_cpu_moe:
            notes.append("MoE-expert offload needs the native llama-server (--n-cpu-moe)")
        if e.cache_ram_mib == 0:
            notes.append(
                "llama-server's prompt cache is off (--cache-ram 0): the RAM left cannot hold "
                "one saved context"
            )
        if e.ctx_checkpoints is not None and e.ctx_checkpoints < mem.LLAMACPP_CHECKPOINTS:
            notes.append(
                f"{e.ctx_checkpoints} context checkpoints per slot (RAM is short): a chat "
                "that edits earlier turns may reprocess its prompt"
            )
    else:
        on_cpu = e.devices[0].id == "cpu"
        vllm = VllmSettings(
            tensor_parallel=e.tp,
            pipeline_parallel=e.pp,
            data_parallel=e.dp,
            expert_parallel=e.ep,
            gpu_memory_utilization=e.util,
            max_num_batched_tokens=req.max_num_batched_tokens,
            max_num_seqs=conc if on_cpu else None,
            dtype=verdict.dtype,
            quantization=verdict.quantization,
            kv_cache_bytes=e.kv_space,
            enforce_eager=on_cpu,
            device="cpu" if on_cpu else "cuda",
            version=None
            if e.vllm_terms is None
            else vllm_memory.version_text(e.vllm_terms.version),
            memory_terms=None if e.vllm_terms is None else vllm_memory.describe(e.vllm_terms),
            speculative_tokens=req.spec_tokens if not on_cpu else None,
            lora=(req.max_loras, req.lora_rank) if req.lora_rank else None,
        )
        if req.lora_rank:
            notes.append(
                f"LoRA: up to {req.max_loras} adapter(s) of rank ≤ {req.lora_rank} per batch "
                "(their GPU buffers are in the weights); name adapters at launch: deploy up "
                "… -- --lora-modules NAME=PATH"
            )
        if req.spec_tokens and not on_cpu:
            notes.append(
                f"speculative decoding: the model's MTP layers propose {req.spec_tokens} "
                "tokens a step (their weights, KV and the rejection sampler are counted; the "
                "speed estimate does not include the speed-up)"
            )
        if e.dp > 1:
            notes.append(
                f"data parallel × {e.dp} with expert parallel: each GPU holds the attention "
                "and its own KV cache for the requests it serves; experts spread over all"
            )
        elif e.ep:
            notes.append("expert parallel: experts spread over GPUs, attention TP")
        if e.vllm_terms is not None:
            t = e.vllm_terms
            notes.append(
                f"vLLM {vllm_memory.version_text(t.version)} memory accounting "
                f"(max_num_batched_tokens {t.max_num_batched_tokens:,}, max_num_seqs "
                f"{t.max_num_seqs}); plan another version with --vllm-version"
            )
    kv_tok = int(global_kv_bytes_per_token(model.arch, kv_dtype))
    return Plan(
        model_id=model.id,
        variant_id=v.id,
        engine=engine,
        placement=e.placement,  # type: ignore[arg-type]
        devices=devices,
        ctx=ctx,
        concurrency=conc,
        kv_dtype=kv_dtype,  # type: ignore[arg-type]
        memory=tuple(e.devices),
        speed=speed,
        kernel=verdict.kernel,
        format=v.format,
        quant=v.quant,
        download_bytes=download_size(model, v),
        weights_bytes=layout.total_bytes,
        kv_bytes_per_token=kv_tok,
        llamacpp=llama,
        vllm=vllm,
        kv_tokens_capacity=e.kv_tokens,
        max_concurrency=None if e.max_concurrency is None else round(e.max_concurrency, 2),
        max_ctx=max_ctx,
        notes=tuple(notes),
        hardware={"fingerprint": hw.fingerprint(), "source": hw.source, "origin": hw.origin},
        model_path=v.path,
        download_estimated=v.download_bytes is None,
        capability=model.capability,
        capability_basis=model.capability_basis,
        quality=rank.CLASSES[rank.quality_class(v.quant, v.format, model.release_formats)],
    )


_BACKEND = {"nvidia": "cuda", "amd": "rocm", "apple": "metal", "other": "vulkan"}
_VLLM_KERNEL = {"awq": "int4", "gptq": "int4", "int4": "int4", "fp8": "fp8", "int8": "fp8"}


def speed_case(
    model: ModelInput,
    v: VariantInput,
    info: QuantInfo,
    layout: WeightLayout,
    engine: Engine,
    e: Evaluated,
    hw: Hardware,
    conc: int,
) -> SpeedCase:
    """What the speed model needs about this placement."""
    used = [g for g in hw.gpus if g.device_id in {d.id for d in e.devices if d.total_bytes}]
    backend = _BACKEND[used[0].vendor] if used else "cpu"
    active_params = (layout.active_bytes or layout.total_bytes) * 8 / info.layer_bpw
    arch = model.arch
    moe_layers = sum(1 for i in range(arch.layers) if is_moe_layer(arch, i)) if arch.moe else 0
    handoff = e.n_cpu_moe if e.placement == "expert_offload" else 0
    if e.placement == "partial_offload":
        handoff = 1
    per_gpu = (
        prefill_rate(engine, backend, v.quant, used[0].fp16_flops, used[0].int8_ops)
        if used
        else None
    )
    read = sum(p.bytes_per_token for p in e.parts if p.bytes_per_token > 0)
    kernel = "fp4" if v.format in ("mxfp4", "nvfp4") else _VLLM_KERNEL.get(v.format, "bf16")
    expert_share = 0.0
    if arch.moe and layout.expert_bytes_per_layer and layout.active_bytes:
        frac = arch.moe.experts_per_token / arch.moe.experts
        routed = sum(layout.expert_bytes_per_layer) * frac
        expert_share = min(1.0, routed / layout.active_bytes)
    return SpeedCase(
        engine=engine,
        backend=backend,
        places=case_places(e.parts),
        layers=arch.layers,
        moe_layers=moe_layers,
        mla_layers=arch.layers if arch.mla is not None else 0,
        handoff_layers=handoff,
        # Data parallel: each replica serves its share of the streams, and the experts'
        # all-to-all costs what a TP all-reduce over the same GPUs does.
        tp=e.tp if e.dp == 1 else e.dp,
        concurrency=conc if e.dp == 1 else -(-conc // e.dp),
        replicas=e.dp,
        flops_per_token=2 * active_params,
        gpu_flops=per_gpu * max(1, e.tp) if per_gpu else None,
        cpu_flops=cpu_flops(hw.host)[0],
        kernel=kernel,
        cuda_graphs=not (engine == "vllm" and backend == "cpu"),
        fabric=bool(used) and all(g.fabric for g in used),
        gpu_arch=(used[0].arch or "") if used else "",
        weight_share=min(1.0, float(layout.active_bytes or layout.total_bytes) / read)
        if read > 0
        else 1.0,
        experts=arch.moe.experts if arch.moe else 0,
        experts_per_token=arch.moe.experts_per_token if arch.moe else 0,
        expert_share=expert_share,
    )


def _threads(hw: Hardware, e: Evaluated) -> int | None:
    """llama.cpp threads: the physical core count when layers or experts run on the CPU
    (llama-server's own default may count logical cores); unset for GPU-only placements."""
    if not hw.host.cores_known or hw.host.physical_cores <= 0:
        return None
    if e.placement in ("cpu", "partial_offload", "expert_offload"):
        return hw.host.physical_cores
    return None


def _evaluate(
    model: ModelInput, v: VariantInput, engine: Engine, hw: Hardware, req: PlanRequest
) -> tuple[Plan | None, Rejection | None]:
    info = quant_info(v.quant, v.format) or quant_info(v.format)
    if info is None and v.layout is None:
        return None, Rejection(v.id, engine, f"unknown bits per weight for {v.quant!r}")
    assert info is not None or v.layout is not None
    info = info or QuantInfo(v.quant, v.format, 16.0, 16.0)
    ctx = req.ctx or default_ctx(model.native_ctx)
    kv_dtype = _kv_dtype(engine, req)
    if kv_dtype is None:
        return None, Rejection(v.id, engine, f"{engine} has no KV dtype {req.kv_dtype}")
    if engine == "llamacpp" and kv_dtype in ("q8_0", "q4_0") and req.flash_attn == "off":
        # llama.cpp refuses a quantized V cache without flash attention (llama-context.cpp)
        return None, Rejection(
            v.id, engine, f"a {kv_dtype} KV cache needs flash attention (--flash-attn on)"
        )
    notes: list[str] = []
    if ctx > model.native_ctx:
        notes.append(f"ctx {ctx:,} is beyond the native {model.native_ctx:,} (needs RoPE scaling)")
    if info.estimate and v.layout is None and v.download_bytes is None:
        notes.append(f"weights estimated: {info.basis}")
    if engine == "llamacpp":
        verdicts = [(g, compat.llamacpp_gpu(v.format, g)) for g in hw.gpus]
        gpus = [g for g, vd in verdicts if vd.ok]
        verdict = verdicts[0][1] if gpus else compat.llamacpp_cpu(v.format)
        if not verdict.ok:
            return None, Rejection(v.id, engine, verdict.reason)
        layout = variant_layout(model, v, info)
        e = search.llamacpp_search(model, layout, hw, gpus, req, ctx, kv_dtype)
        if e.placement == "cpu":
            verdict = compat.llamacpp_cpu(v.format)
        if not e.fits:
            return None, _reject(v, engine, e)
        max_ctx = search.llamacpp_max_ctx(model, layout, hw, gpus, e, req, kv_dtype)
        return _plan(
            model, v, info, layout, engine, e, verdict, hw, req, ctx, kv_dtype, max_ctx, notes
        ), None
    # vLLM
    gverdicts = [(g, compat.vllm_gpu(v.format, g)) for g in hw.gpus]
    gpus = [g for g, vd in gverdicts if vd.ok]
    if gpus:
        if kv_dtype == "f32":
            return None, Rejection(v.id, engine, "vLLM on GPU has no f32 KV cache (bf16/f16, fp8)")
        verdict = next(vd for g, vd in gverdicts if vd.ok)
        layout = vllm_loaded(
            model.arch,
            variant_layout(model, v, info),
            info,
            from_files=v.layout is not None or v.download_bytes is not None,
        )
        found = search.vllm_search(model, v, layout, gpus, req, ctx, kv_dtype, notes)
        if isinstance(found, str):
            return None, Rejection(v.id, engine, found)
        if not found.fits:
            return None, _reject(v, engine, found)
        max_ctx = min(model.native_ctx, found.max_ctx or 0)
        return _plan(
            model, v, info, layout, engine, found, verdict, hw, req, ctx, kv_dtype, max_ctx, notes
        ), None
    if hw.gpus:
        return None, Rejection(v.id, engine, gverdicts[0][1].reason)
    verdict = compat.vllm_cpu(v.format, hw.host)
    if not verdict.ok:
        return None, Rejection(v.id, engine, verdict.reason)
    # CPU backend runs float32: weights at 32 bits, and KV "auto" follows the model dtype,
    # so the KV cache is float32 too (4 bytes per element), as the engine logs it.
    if req.kv_dtype in (None, "f32"):
        kv_dtype = "f32"
    elif kv_dtype != "fp8":
        return None, Rejection(
            v.id,
            engine,
            f"vLLM's CPU backend runs float32 and its KV cache follows it; no {req.kv_dtype} "
            "KV cache there (leave --kv-dtype out, or fp8)",
        )
    f32 = QuantInfo("fp32", "fp32", 32.0, 32.0, basis="float32 on vLLM CPU")
    layout32 = estimate_layout(model.arch, f32, params_total=model.params_total)
    e = placement.vllm_cpu(
        model.arch,
        layout32,
        hw,
        ctx=ctx,
        concurrency=max(1, req.concurrency),
        kv_dtype=kv_dtype,
        kv_read_ctx=ctx // 2,
    )
    if not e.fits:
        return None, _reject(v, engine, e)
    max_ctx = min(model.native_ctx, (e.kv_tokens or 0) // max(1, req.concurrency))
    notes.append("vLLM CPU backend: float32 and --enforce-eager (bf16 without compile is wrong)")
    return _plan(
        model, v, f32, layout32, engine, e, verdict, hw, req, ctx, kv_dtype, max_ctx, notes
    ), None


def _reject(v: VariantInput, engine: Engine, e: Evaluated) -> Rejection:
    where = {"cpu": "in RAM", "gpu": "on one GPU"}.get(e.placement, f"as {e.placement}")
    reason = f"does not fit {where}: " + "; ".join(e.reasons)
    return Rejection(
        v.id,
        engine,
        reason,
        needs_bytes=e.needs,
        have_bytes=e.have,
        placement=e.placement,
        memory=tuple(e.devices),
    )


def floors(model: ModelInput, req: PlanRequest) -> rank.Floors:
    """The usable floors for a model: the request's, else the recipe's context floor or
    8192, never above the context asked for or the model's native context."""
    min_ctx = req.min_ctx or model.min_ctx or rank.DEFAULT_MIN_CTX
    if req.ctx:
        min_ctx = min(min_ctx, req.ctx)
    min_ctx = min(min_ctx, model.native_ctx)
    return rank.Floors(min_tok_s=speed_floor(req), min_ctx=min_ctx)


def speed_floor(req: PlanRequest) -> float:
    """The speed floor (tok/s per stream): `--min-tok-s`, else the default."""
    return req.min_tok_s if req.min_tok_s is not None else rank.DEFAULT_MIN_TOK_S


def _shorter(ctx: int, floor: int) -> list[int]:
    """Contexts to retry, longest first: halvings of ctx down to the floor, then the floor."""
    out: list[int] = []
    c = ctx // 2
    while c >= floor:
        out.append(c)
        c //= 2
    if floor < ctx and (not out or out[-1] != floor):
        out.append(floor)
    return out


def _evaluate_fitting(
    model: ModelInput, v: VariantInput, engine: Engine, hw: Hardware, req: PlanRequest
) -> tuple[Plan | None, Rejection | None]:
    """_evaluate; when memory is what rejects it, retry at shorter contexts down to the
    context floor before giving up, and say so in the plan. A plan that fits only by
    spilling to the CPU, below the speed floor, is likewise retried at shorter contexts
    (when no --ctx was given) and replaced by the longest one that meets the floor: the
    Qwen3-32B Q4_K_M on a 24 GB card that every guide runs at 16K on the GPU rather than
    at 32K with layers in RAM."""
    plan, rej = _evaluate(model, v, engine, hw, req)
    if not req.lower_ctx:
        return plan, rej
    ctx = req.ctx or default_ctx(model.native_ctx)
    floor = floors(model, req)
    if plan is not None:
        if req.ctx is not None or not _slow(plan, floor) or plan.placement == "cpu":
            return plan, rej
        tok = plan.speed.decode_tok_s or 0.0
        why = (
            f"to stay above {floor.min_tok_s:g} tok/s "
            f"({ctx:,} runs {plan.placement} at ~{tok:.1f} tok/s)"
        )
    elif rej is not None and rej.needs_bytes is not None:
        why = f"to fit ({ctx:,} does not)"
    else:
        return plan, rej
    # A slow plan is replaced only by one that meets the speed floor; a rejection by any.
    must_be_fast = plan is not None
    for shorter in _shorter(ctx, floor.min_ctx):
        p, _ = _evaluate(model, v, engine, hw, replace(req, ctx=shorter))
        if p is not None and not (must_be_fast and _slow(p, floor)):
            note = f"ctx lowered to {shorter:,} {why}"
            return replace(p, ctx_lowered_from=ctx, notes=(note, *p.notes)), None
    return plan, rej


def _slow(plan: Plan, floor: rank.Floors) -> bool:
    tok = plan.speed.decode_tok_s
    return tok is not None and tok < floor.min_tok_s


def implied_engines(req: PlanRequest) -> list[Engine]:
    """The engines to plan when no --engine was given: an option only one engine has
    (--tp/--pp/--dp/--spec-tokens/--lora-rank: vLLM; --ngl/--n-cpu-moe: llama.cpp) says
    which the user means, rather than being ignored by the other's plans."""
    vllm = any(x is not None for x in (req.tp, req.pp, req.dp, req.spec_tokens, req.lora_rank))
    llamacpp = req.ngl is not None or req.n_cpu_moe is not None
    if vllm and not llamacpp:
        return ["vllm"]
    if llamacpp and not vllm:
        return ["llamacpp"]
    return ["llamacpp", "vllm"]


def _with_floors(plan: Plan, model: ModelInput, req: PlanRequest) -> Plan:
    label = rank.usable_label(plan, floors(model, req))
    return replace(plan, usable=label is None, label=label)


def make_plans(
    models: Sequence[ModelInput],
    hw: Hardware,
    req: PlanRequest,
    calibration: Sequence[CalibrationRecord] = (),
    engine_versions: EngineVersions | None = None,
    raise_apple_cap: bool = True,
) -> PlanResult:
    plans: list[Plan] = []
    rejections: list[Rejection] = []
    info: dict[str, tuple[int, bool, str]] = {}
    engines: list[Engine] = [req.engine] if req.engine else implied_engines(req)
    for model in models:
        for v in model.variants:
            if not _matches(v, req):
                continue
            for engine in engines:
                if v.format == "gguf" and engine == "vllm":
                    if req.engine == "vllm":
                        rejections.append(Rejection(v.id, engine, "GGUF is served by llama.cpp"))
                    continue
                if v.format != "gguf" and engine == "llamacpp":
                    if req.engine == "llamacpp":
                        rejections.append(
                            Rejection(v.id, engine, f"llama.cpp needs GGUF, not {v.format}")
                        )
                    continue
                plan, rej = _evaluate_fitting(model, v, engine, hw, req)
                if plan is not None:
                    plan = apply_calibration(plan, calibration, hw, engine_versions)
                    plans.append(_with_floors(plan, model, req))
                    info[plan.variant_id] = (
                        rank.quality_class(v.quant, v.format, model.release_formats),
                        rank.is_upcast(v.format, model.release_formats),
                        model.release_date or "",
                    )
                if rej is not None:
                    rejections.append(rej)
    plans = rank.rank(plans, hw, req.prefer, info, speed_floor(req))
    if plans and raise_apple_cap:
        plans[0] = _apple_cap(plans[0], models, hw, req, calibration, engine_versions)
    closest, suggestion = None, None
    if not plans:
        closest, suggestion = _closest(models, hw, req, rejections)
    return PlanResult(
        plans=tuple(plans),
        rejections=tuple(rejections),
        hardware=hw,
        models=tuple(m.id for m in models),
        closest=closest,
        suggestion=suggestion,
    )


def _apple_cap(
    best: Plan,
    models: Sequence[ModelInput],
    hw: Hardware,
    req: PlanRequest,
    calibration: Sequence[CalibrationRecord],
    engine_versions: EngineVersions | None,
) -> Plan:
    """On an Apple GPU: name the wired-memory cap and, when raising it to what macOS can
    spare would change the first plan, what it would give."""
    if not any(g.vendor == "apple" for g in hw.gpus):
        return best
    from toolkit.hardware.apple import suggested_wired_limit, wired_cap_note

    note = wired_cap_note(hw)
    if note is None:
        return best
    notes = [note]
    gpus = []
    for g in hw.gpus:
        if g.vendor == "apple":
            raised = suggested_wired_limit(g.total_bytes) * 1024**2
            if raised > (g.working_set_limit_bytes or g.free_bytes):
                g = replace(g, free_bytes=raised, working_set_limit_bytes=raised)
        gpus.append(g)
    if tuple(gpus) != hw.gpus:
        other = make_plans(
            models, replace(hw, gpus=tuple(gpus)), req, calibration, engine_versions, False
        ).best
        if other is not None and (other.variant_id, other.placement, other.ctx) != (
            best.variant_id,
            best.placement,
            best.ctx,
        ):
            tok = other.speed.decode_tok_s
            notes.append(
                f"with the cap raised, #1 would be {other.variant_id} ({other.placement}, "
                f"ctx {other.ctx:,}" + (f", ~{tok:.0f} tok/s)" if tok else ")")
            )
    return replace(best, notes=(*best.notes, *notes))


def _closest(
    models: Sequence[ModelInput], hw: Hardware, req: PlanRequest, rejections: list[Rejection]
) -> tuple[Rejection | None, str | None]:
    sized = [r for r in rejections if r.needs_bytes is not None and r.have_bytes is not None]
    if not sized:
        return (rejections[0] if rejections else None), None
    best = min(sized, key=lambda r: (r.needs_bytes or 0) - (r.have_bytes or 0))
    tips: list[str] = []
    model = next((m for m in models if best.variant_id.startswith(m.id + ":")), None)
    if model is not None:
        ctx = req.ctx or default_ctx(model.native_ctx)
        for smaller in (ctx // 2, ctx // 4, ctx // 8, 4096, 2048):
            if smaller < 1024 or smaller >= ctx:
                continue
            trial = replace(req, ctx=smaller, variant=best.variant_id)
            p, _ = _evaluate(
                model, _variant(model, best.variant_id), best.engine or "llamacpp", hw, trial
            )
            if p is not None:
                tips.append(f"--ctx {smaller}")
                break
        lower = [
            v
            for v in model.variants
            if v.id != best.variant_id and (quant_info(v.quant, v.format) is not None)
        ]
        for v in sorted(lower, key=lambda v: -(quant_info(v.quant, v.format).layer_bpw)):  # type: ignore[union-attr]
            for engine in ("llamacpp", "vllm"):
                if (v.format == "gguf") != (engine == "llamacpp"):
                    continue
                p, _ = _evaluate(model, v, engine, hw, req)
                if p is not None:
                    tips.append(f"the {v.quant.upper()} variant ({v.id})")
                    break
            if len(tips) == 2 or (tips and tips[-1].startswith("the")):
                break
    return best, (" or ".join(tips) if tips else None)


def _variant(model: ModelInput, vid: str) -> VariantInput:
    return next(v for v in model.variants if v.id == vid)
