"""Search one engine's configurations: llama.cpp offload/split, vLLM TP/PP/EP.

Each search returns the first configuration that fits in the order of preference, or the
one that came closest (smallest shortfall) so the caller can explain the rejection.
"""

from __future__ import annotations

from collections.abc import Callable

from toolkit.hardware.model import Gpu, Hardware
from toolkit.inspect.layout import WeightLayout
from toolkit.planner import compat, placement
from toolkit.planner import vllm_memory as vm
from toolkit.planner.inputs import ModelInput, VariantInput
from toolkit.planner.placement import Evaluated
from toolkit.planner.types import PlanRequest

# --- llama.cpp --------------------------------------------------------------------------


def llamacpp_search(
    model: ModelInput,
    layout: WeightLayout,
    hw: Hardware,
    gpus: list[Gpu],
    req: PlanRequest,
    ctx: int,
    kv_dtype: str,
) -> Evaluated:
    arch = model.arch
    n = arch.layers
    ubatch = req.ubatch or 512
    slots = max(1, req.concurrency)
    fa = req.flash_attn != "off"

    def ev(use: list[Gpu], ngl: int, ncm: int, c: int = ctx) -> Evaluated:
        return placement.llamacpp(
            arch,
            layout,
            hw,
            use,
            ngl=ngl,
            n_cpu_moe=ncm,
            ctx=c,
            slots=slots,
            ubatch=ubatch,
            kv_dtype=kv_dtype,
            flash_attn=fa,
            kv_read_ctx=c // 2,
        )

    if req.ngl is not None or req.n_cpu_moe is not None:
        ngl = req.ngl if req.ngl is not None else (n + 1 if gpus else 0)
        use = gpus
        if len(gpus) > 1 and not req.all_gpus:
            one = ev(gpus[:1], ngl, req.n_cpu_moe or 0)
            if one.fits:
                return one
        return ev(use, ngl, req.n_cpu_moe or 0)
    tried: list[Evaluated] = []
    if gpus:
        if not req.all_gpus:
            best = max(gpus, key=lambda g: g.free_bytes)
            e = ev([best], n + 1, 0)
            if e.fits:
                return e
            tried.append(e)
        if len(gpus) > 1 or req.all_gpus:
            e = ev(gpus, n + 1, 0)
            if e.fits:
                return e
            tried.append(e)
        if arch.moe is not None:
            moe_e = _smallest(lambda k: ev(gpus, n + 1, k), 1, n)
            if moe_e is not None and moe_e.fits:
                return moe_e
            tried.append(moe_e or ev(gpus, n + 1, n))
        part = _largest(lambda k: ev(gpus, k, 0), 1, n)
        if part is not None and part.fits:
            return part
        if part is not None:
            tried.append(part)
    cpu = ev([], 0, 0)
    if cpu.fits or not tried:
        return cpu
    return min([*tried, cpu], key=lambda e: e.shortfall)


def _gpus_fit(e: Evaluated) -> bool:
    return all(d.needed_bytes <= d.capacity_bytes for d in e.devices if d.id != "cpu")


def _smallest(ev: Callable[[int], Evaluated], lo: int, hi: int) -> Evaluated | None:
    """The smallest k in [lo, hi] whose GPUs fit (k = layers of experts kept on the CPU)."""
    if not _gpus_fit(ev(hi)):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if _gpus_fit(ev(mid)):
            hi = mid
        else:
            lo = mid + 1
    return ev(lo)


def _largest(ev: Callable[[int], Evaluated], lo: int, hi: int) -> Evaluated | None:
    """The largest k in [lo, hi] (layers on GPUs) whose GPUs fit."""
    if not _gpus_fit(ev(lo)):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _gpus_fit(ev(mid)):
            lo = mid
        else:
            hi = mid - 1
    return ev(lo)


def llamacpp_max_ctx(
    model: ModelInput,
    layout: WeightLayout,
    hw: Hardware,
    gpus: list[Gpu],
    e: Evaluated,
    req: PlanRequest,
    kv_dtype: str,
) -> int:
    use = gpus if e.ngl > 0 else []
    if e.placement == "gpu":
        used_ids = {d.id for d in e.devices}
        use = [g for g in gpus if g.device_id in used_ids]

    def fits(c: int) -> bool:
        return placement.llamacpp(
            model.arch,
            layout,
            hw,
            use,
            ngl=e.ngl,
            n_cpu_moe=e.n_cpu_moe,
            ctx=c,
            slots=max(1, req.concurrency),
            ubatch=req.ubatch or 512,
            kv_dtype=kv_dtype,
            flash_attn=req.flash_attn != "off",
            kv_read_ctx=c // 2,
        ).fits

    lo, hi = 0, model.native_ctx
    if fits(hi):
        return hi
    while hi - lo > 256:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo // 256 * 256


# --- vLLM -------------------------------------------------------------------------------


def tp_ok(model: ModelInput, v: VariantInput, tp: int) -> tuple[bool, bool, str]:
    """(usable, needs expert parallel, reason)."""
    arch = model.arch
    if arch.heads % tp:
        return False, False, f"TP {tp}: {arch.heads} attention heads not divisible"
    if arch.mla is None and tp > arch.kv_heads and tp % arch.kv_heads:
        return False, False, f"TP {tp}: {arch.kv_heads} KV heads cannot be replicated evenly"
    if arch.mla is None and tp < arch.kv_heads and arch.kv_heads % tp:
        return False, False, f"TP {tp}: {arch.kv_heads} KV heads not divisible"
    capped = (v.max_tp is not None and tp > v.max_tp) or (
        v.tp_divides is not None and v.tp_divides % tp
    )
    if capped:
        if arch.moe is not None:
            return True, True, ""
        return False, False, f"TP {tp}: recipe allows TP ≤ {v.max_tp} dividing {v.tp_divides}"
    return True, False, ""


def _data_parallel(
    model: ModelInput,
    count: int,
    conc: int,
    req: PlanRequest,
    ev: Callable[[int, int, int], Evaluated],
) -> Evaluated | None:
    """Data-parallel attention + expert parallel over every GPU of the group, the layout
    vLLM's own recipes give MoE models for serving many requests: taken when the request
    serves at least as many streams as there are replicas, context is not what the user
    asked to maximise, and each replica's pool holds the context. Otherwise tensor
    parallel, whose KV cache is sharded over the ranks and so holds longer contexts."""
    if model.arch.moe is None or count < 2 or req.prefer == "context" or conc < count:
        return None
    dp = max(d for d in (2, 4, 8, 16) if d <= count)
    e = ev(1, 1, dp)
    return e if e.fits else None


def vllm_search(
    model: ModelInput,
    v: VariantInput,
    layout: WeightLayout,
    gpus: list[Gpu],
    req: PlanRequest,
    ctx: int,
    kv_dtype: str,
    notes: list[str],
) -> Evaluated | str:
    by_name: dict[str, list[Gpu]] = {}
    for g in gpus:
        by_name.setdefault(g.name, []).append(g)
    group = max(by_name.values(), key=lambda gs: len(gs) * gs[0].total_bytes)
    count = len(group)
    # Pure TP first (fewest GPUs that fit); TP × PP only where TP alone cannot divide
    # the heads (e.g. 8 GPUs for 40 heads: TP 4 × PP 2).
    layouts: list[tuple[int, int]] = []
    if req.cluster_nodes > 1:
        # A cluster: one node alone (TP inside it), or TP inside every node × one pipeline
        # stage per node (vLLM's multi-node layout); never TP across the network.
        per_node = req.gpus_per_node
        for w in (1, 2, 4, 8, 16):
            if w <= per_node and req.tp in (None, w) and tp_ok(model, v, w)[0]:
                layouts.append((w, 1))
        node_tp = max((t for t, _ in layouts), default=0)
        if node_tp:
            layouts.append((node_tp, req.cluster_nodes))
        count = per_node * req.cluster_nodes
    for w in (1, 2, 4, 8, 16) if req.cluster_nodes == 1 else ():
        if w <= count and (req.tp in (None, w)) and tp_ok(model, v, w)[0]:
            layouts.append((w, 1))
    for w in (2, 3, 4, 6, 8, 12, 16) if req.cluster_nodes == 1 else ():
        if w > count or (w, 1) in layouts:
            continue
        for tp in sorted((d for d in range(1, w) if w % d == 0), reverse=True):
            if req.tp in (None, tp) and tp_ok(model, v, tp)[0]:
                layouts.append((tp, w // tp))
                break
    if req.pp is not None:
        if req.cluster_nodes > 1 and req.pp not in (1, req.cluster_nodes):
            return (
                f"--pp {req.pp}: on a cluster of {req.cluster_nodes} nodes the pipeline has one"
                f" stage per node (--pp {req.cluster_nodes}) or none (--pp 1)"
            )
        if req.cluster_nodes == 1:
            layouts = [
                (t, req.pp)
                for t in (1, 2, 4, 8, 16)
                if t * req.pp <= count and req.tp in (None, t) and tp_ok(model, v, t)[0]
            ]
        layouts = [lay for lay in layouts if lay[1] == req.pp]
        if not layouts:
            return f"--pp {req.pp} needs at least {req.pp} GPUs, {count} × {group[0].name} present"
    if req.tp is not None and req.tp > count:
        return f"TP {req.tp} needs {req.tp} GPUs, {count} × {group[0].name} present"
    util = req.gpu_mem_util or 0.9
    free_frac = min(g.free_bytes / g.total_bytes for g in group)
    if req.gpu_mem_util is None and free_frac < util:
        util = max(0.05, int((free_frac - 0.01) * 100) / 100)
        notes.append(f"gpu_memory_utilization lowered to {util:.2f}: only that much is free")
    tried: list[Evaluated] = []
    why: list[str] = []
    for tp in (req.tp,) if req.tp else (1, 2, 4, 8, 16):
        if tp is not None and tp <= count and not tp_ok(model, v, tp)[0]:
            why.append(tp_ok(model, v, tp)[2])
    conc = max(1, req.concurrency)
    version = vm.parse_version(req.vllm_version) or vm.NEWEST
    kernel = compat.mxfp4_moe_kernel(group[0], version) if v.format == "mxfp4" else None

    def ev(tp: int, pp: int, dp: int = 1) -> Evaluated:
        return placement.vllm_gpu(
            model.arch,
            layout,
            group,
            tp=tp,
            pp=pp,
            ep=tp_ok(model, v, tp)[1],
            util=util,
            ctx=ctx,
            concurrency=conc,
            kv_dtype=kv_dtype,
            batched_tokens=req.max_num_batched_tokens,
            kv_read_ctx=ctx // 2,
            version=version,
            dp=dp,
            spec_tokens=req.spec_tokens or 0,
            lora=(req.max_loras, req.lora_rank) if req.lora_rank else None,
            max_position=model.native_ctx,
            mxfp4_kernel=kernel,
        )

    if req.spec_tokens and not model.arch.mtp_layers:
        return (
            "--spec-tokens: the model has no multi-token-prediction layers to propose with"
            " (a separate draft model is not planned)"
        )
    if req.dp is not None and req.dp > 1:
        if model.arch.moe is None:
            return f"--dp {req.dp}: data-parallel attention with expert parallel is for MoE models"
        if req.dp > count:
            return f"--dp {req.dp} needs {req.dp} GPUs, {count} × {group[0].name} present"
        return ev(1, 1, req.dp)
    fitting: Evaluated | None = None
    if req.dp is None and req.tp is None and req.pp is None and req.cluster_nodes == 1:
        dp_fit = _data_parallel(model, count, conc, req, ev)
        if dp_fit is not None:
            return dp_fit
    for tp, pp in layouts:
        if pp > 1 and pp > model.arch.layers:
            continue
        e = ev(tp, pp)
        if not e.fits:
            tried.append(e)
            continue
        # The fewest GPUs that fit, unless more of them buy context: when the KV pool
        # cannot hold the model's native context per stream, a wider layout that holds
        # more is taken (it is faster too); without a TP request only.
        if fitting is None or (e.max_ctx or 0) > (fitting.max_ctx or 0):
            fitting = e
        if req.tp is not None or (fitting.max_ctx or 0) >= model.native_ctx:
            break
    if fitting is not None:
        return fitting
    if not tried:
        return "; ".join(why) or "no usable tensor-parallel size"
    return min(tried, key=lambda e: e.shortfall)
