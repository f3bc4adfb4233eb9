"""Where the bytes go: one engine configuration → memory per device, fit, speed parts.

llama.cpp: the last `-ngl` layers run on GPUs (the output head too when ngl > layers),
split across GPUs in contiguous ranges by `--tensor-split`; `--n-cpu-moe N` keeps the
routed experts of the first N layers in RAM; the token embedding always stays in RAM;
KV of a layer lives where the layer runs. vLLM: every tensor sharded over TP ranks, layers
over PP stages, or attention replicated over DP ranks with the experts spread; see
vllm_memory.vllm_terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from toolkit.planner import memory as mem
from toolkit.planner import vllm_memory as vm
from toolkit.planner.speed import DEFAULT_RAM_BW, Part
from toolkit.planner.types import DeviceMemory
from toolkit.planner.weights import vllm_rank_extra_bytes

if TYPE_CHECKING:
    from toolkit.catalog.schema import Architecture
    from toolkit.hardware.model import Gpu, Hardware
    from toolkit.inspect.layout import WeightLayout

GiB = 1024**3
MiB = 1024**2
#: Reserve kept free on each GPU for llama.cpp (CUDA context and driver allocations that
#: its logged buffers do not include): the margin llama.cpp's own `--fit` keeps, 1024 MiB
#: per device ("will leave N >= 1024 MiB of free device memory" in its log).
GPU_RESERVE = 1 * GiB
#: RAM kept free for the OS and the engine process itself (the same --fit margin).
RAM_RESERVE = 1 * GiB
#: vLLM CPU backend: process memory besides weights and KV (torch, compiled kernels);
#: measured 3.2–3.8 GiB RSS for SmolLM2-135M fp32 with a 1 GiB KV space on this machine.
VLLM_CPU_OVERHEAD = int(2.0 * GiB)
#: A hardware spec without `ram=` leaves RAM unknown (not zero). Plans that keep no layer
#: and no expert on the CPU, and need at most this much RAM besides (token embedding, CPU
#: compute buffer), are taken to fit: any machine carrying such a GPU has that much.
UNKNOWN_RAM_ALLOWANCE = 4 * GiB
#: The note every plan made without a RAM figure carries.
RAM_UNKNOWN_NOTE = "host RAM not given; assumed enough for the engine process"


@dataclass
class Evaluated:
    """One fully specified configuration and what it costs."""

    placement: str
    devices: list[DeviceMemory]
    fits: bool
    reasons: list[str] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    weights_read: float = 0.0
    ngl: int = 0
    n_cpu_moe: int = 0
    tensor_split: tuple[float, ...] = ()
    tp: int = 1
    pp: int = 1
    #: vLLM data-parallel attention replicas (with expert parallelism).
    dp: int = 1
    ep: bool = False
    util: float = 0.9
    kv_tokens: int | None = None
    max_concurrency: float | None = None
    kv_space: int | None = None
    notes: list[str] = field(default_factory=list)
    shortfall: int = 0
    needs: int = 0
    have: int = 0
    ctx_checkpoints: int | None = None
    cache_ram_mib: int | None = None
    #: vLLM GPU: the version's memory terms and the longest context per sequence.
    vllm_terms: vm.VllmTerms | None = None
    max_ctx: int | None = None


def ram_capacity(hw: Hardware) -> int:
    """RAM a plan may use: what is available less a reserve. A Mac described by a spec
    string states its total, and macOS keeps a share of it for itself (the same reserve
    `toolkit.hardware.apple` leaves when it suggests raising the GPU's wired-memory cap);
    a detected machine's available RAM already excludes what the OS uses."""
    reserve = RAM_RESERVE
    if hw.source != "detected" and any(g.vendor == "apple" for g in hw.gpus):
        from toolkit.hardware.apple import OS_RESERVE_BYTES

        reserve = max(reserve, min(OS_RESERVE_BYTES, hw.host.ram_total_bytes // 4))
    return max(0, hw.host.ram_available_bytes - reserve)


def ram_bandwidth(hw: Hardware) -> tuple[float, bool]:
    bw = hw.host.ram_bandwidth_bytes_s
    return (bw, False) if bw else (DEFAULT_RAM_BW, True)


def _active_layer_bytes(layout: WeightLayout, arch: Architecture, i: int) -> float:
    """Bytes of layer i read per token (shared weights + the routed experts used)."""
    experts = layout.expert_bytes_per_layer[i] if layout.expert_bytes_per_layer else 0
    frac = arch.moe.experts_per_token / arch.moe.experts if arch.moe else 0.0
    return layout.per_layer_bytes[i] - experts + experts * frac


def _check(dev: DeviceMemory) -> str | None:
    if dev.needed_bytes > dev.capacity_bytes:
        return (
            f"{dev.id}: needs {dev.needed_bytes / GiB:.1f} GiB, "
            f"{dev.capacity_bytes / GiB:.1f} GiB usable"
        )
    return None


@dataclass(frozen=True)
class HostCaches:
    """What llama-server may add in RAM while it serves, as deploy caps it."""

    #: --ctx-checkpoints per slot (None: the model makes none, the flag is left out).
    checkpoints: int | None
    #: --cache-ram in MiB (0 turns the prompt cache off).
    cache_ram_mib: int
    #: Bytes both may reach.
    bytes: int


def llamacpp_host_caches(
    arch: Architecture,
    *,
    room: int,
    kv_total: int,
    n_ctx: int,
    slots: int,
    kv_dtype: str,
) -> HostCaches:
    """Size llama-server's RAM caches to the room the plan leaves, never beyond it.

    Left at the engine's defaults they grow without regard to the machine: the prompt
    cache up to 8 GiB (`--cache-ram 8192`) and 32 context checkpoints per slot, each a
    copy of the sliding-window KV or recurrent state (hundreds of MiB on Gemma 3 27B;
    ggml-org/llama.cpp#21690). Deploy keeps LLAMACPP_CHECKPOINTS (2) per slot (fewer when the
    room is short) and a prompt cache that holds one saved state per slot (the KV cache
    plus its checkpoints and a header), shrunk to the room left; below one slot's state it
    is off."""
    one = mem.llamacpp_checkpoint_bytes(arch, n_ctx=n_ctx, slots=slots, kv_dtype=kv_dtype)
    room = max(0, room)
    checkpoints: int | None = None
    used = 0
    if one > 0:
        checkpoints = min(mem.LLAMACPP_CHECKPOINTS, room // (one * slots))
        used = checkpoints * one * slots
    # a saved state is its KV cells and checkpoints plus a small header (8.004 MiB for
    # 8 MiB of KV): one MiB per slot over, or llama-server skips the state as too large
    want = kv_total + used + slots * MiB
    cache = min(want, room - used)
    if cache < want / slots:
        cache = 0
    mib = cache // MiB
    return HostCaches(checkpoints, mib, used + mib * MiB)


def _tensor_split(counts: list[int], act: int) -> tuple[float, ...]:
    """--tensor-split values that make llama.cpp put exactly `counts` layers on each GPU.

    llama.cpp (llama_model::load_tensors) gives GPU layer j (0-based, the output counted
    as the last layer) to the first device whose cumulative split share exceeds j / act,
    act = GPU layers + the output. Each boundary sits half a layer before the next
    device's first layer, so rounding the shares cannot move a layer."""
    shares, prev = [], 0.0
    cum = 0
    for c in counts[:-1]:
        cum += c
        edge = (cum - 0.5) / act if c else prev
        shares.append(edge - prev)
        prev = edge
    shares.append(1.0 - prev)
    return tuple(round(max(0.0, x), 4) for x in shares)


def llamacpp(
    arch: Architecture,
    layout: WeightLayout,
    hw: Hardware,
    gpus: list[Gpu],
    *,
    ngl: int,
    n_cpu_moe: int,
    ctx: int,
    slots: int,
    ubatch: int,
    kv_dtype: str,
    flash_attn: bool,
    kv_read_ctx: int,
) -> Evaluated:
    n = arch.layers
    n_ctx = ctx * slots
    gpus = gpus if ngl > 0 else []
    on_gpu = min(ngl, n) if gpus else 0
    output_on_gpu = bool(gpus) and ngl > n
    first_gpu = n - on_gpu
    caps = [max(0, g.free_bytes - GPU_RESERVE) for g in gpus]
    total_cap = sum(caps) or 1
    kv_layers = mem.llamacpp_kv_per_layer(
        arch, n_ctx=n_ctx, slots=slots, ubatch=ubatch, kv_dtype=kv_dtype, unified=False
    )
    experts = layout.expert_bytes_per_layer or tuple(0 for _ in range(n))
    # Contiguous layer ranges per GPU, balanced by the bytes each layer leaves on a GPU
    # (weights minus experts kept in RAM, plus its KV) against each GPU's usable memory.
    owner: list[int] = [-1] * n
    counts = [0] * len(gpus)
    if gpus:
        resident = [
            layout.per_layer_bytes[i] - (experts[i] if i < n_cpu_moe else 0) + kv_layers[i]
            for i in range(first_gpu, n)
        ]
        whole = sum(resident) or 1
        bounds, acc = [], 0.0
        for c in caps:
            acc += c / total_cap
            bounds.append(acc)
        run = 0.0
        for j, i in enumerate(range(first_gpu, n)):
            pos = (run + resident[j] / 2) / whole
            run += resident[j]
            owner[i] = next((k for k, b in enumerate(bounds) if pos <= b + 1e-9), len(gpus) - 1)
            counts[owner[i]] += 1
    split = _tensor_split(counts, on_gpu + output_on_gpu) if len(gpus) > 1 else ()
    g_w = [0] * len(gpus)
    g_kv = [0] * len(gpus)
    g_read = [0.0] * len(gpus)
    cpu_w = layout.embedding_bytes + layout.other_bytes
    # CPU_REPACK: Q4_0/Q4_K tensors that run on the CPU are copied into llama.cpp's own
    # buffer; the mapped file pages they came from stay resident but are never read again.
    repack_layer = layout.repack_bytes_per_layer or tuple(0 for _ in range(n))
    repack_exp = layout.repack_expert_bytes_per_layer or tuple(0 for _ in range(n))
    repack = 0
    cpu_kv = 0
    cpu_read = 0.0
    frac = arch.moe.experts_per_token / arch.moe.experts if arch.moe else 0.0
    kv_scale = kv_read_ctx / max(1, n_ctx)
    for i in range(n):
        k = owner[i]
        read = _active_layer_bytes(layout, arch, i)
        if k < 0:
            cpu_w += layout.per_layer_bytes[i]
            repack += repack_layer[i]
            cpu_kv += kv_layers[i]
            cpu_read += read + kv_layers[i] * kv_scale
            continue
        exp = experts[i] if i < n_cpu_moe else 0
        g_w[k] += layout.per_layer_bytes[i] - exp
        cpu_w += exp
        if exp:
            repack += repack_exp[i]
        cpu_read += exp * frac
        g_read[k] += read - exp * frac + kv_layers[i] * kv_scale
        g_kv[k] += kv_layers[i]
    # Decode reads the head in full: the tied embedding table when there is no output.weight
    # (output_bytes then holds only the final norm).
    head_read = layout.output_bytes + (layout.embedding_bytes if arch.tied_embeddings else 0)
    if output_on_gpu:
        # A tied head has no output.weight: llama.cpp loads a second copy of the token
        # embedding table (TENSOR_DUPLICATED) on the output's device; the first stays in
        # RAM for the input lookup.
        g_w[-1] += layout.output_bytes + (layout.embedding_bytes if arch.tied_embeddings else 0)
        g_read[-1] += head_read
    else:
        cpu_w += layout.output_bytes
        repack += layout.repack_bytes_other
        cpu_read += head_read
    cpu_w += repack
    devices: list[DeviceMemory] = []
    reasons: list[str] = []
    parts: list[Part] = []
    pipelined = len(gpus) > 1 and output_on_gpu and n_cpu_moe == 0
    pipe = (
        mem.llamacpp_pipeline_bytes(
            arch, n_ctx=n_ctx, ubatch=ubatch, flash_attn=flash_attn, slots=slots
        )
        if pipelined
        else 0
    )
    for k, g in enumerate(gpus):
        comp = mem.llamacpp_compute_bytes(
            arch,
            n_ctx=n_ctx,
            ubatch=ubatch,
            flash_attn=flash_attn,
            with_output=output_on_gpu and k == len(gpus) - 1,
            n_outputs=slots,
            slots=slots,
            unified=False,
        )
        if pipelined:
            comp += pipe
        total = g_w[k] + g_kv[k] + comp
        dev = DeviceMemory(
            g.device_id, g_w[k], g_kv[k], comp, 0, total, caps[k], free_bytes=g.free_bytes
        )
        devices.append(dev)
        parts.append(Part(g.device_id, g_read[k], g.bandwidth_bytes_s))
        if g.unified_memory:
            continue
    cpu_runs = on_gpu < n or n_cpu_moe > 0 or not output_on_gpu
    if cpu_runs:
        cpu_comp = mem.llamacpp_compute_bytes(
            arch,
            n_ctx=n_ctx,
            ubatch=ubatch,
            flash_attn=flash_attn,
            with_output=not output_on_gpu,
            n_outputs=slots,
            slots=slots,
            unified=False,
        )
    else:
        cpu_comp = mem.llamacpp_host_compute_bytes(arch, ubatch=ubatch)
    unified = any(g.unified_memory for g in gpus)
    ram_known = hw.host.ram_known
    ram_cap = ram_capacity(hw)
    attention_on_cpu = any(o < 0 for o in owner)
    overhead = mem.llamacpp_process_bytes(arch, n_ctx=n_ctx)
    if attention_on_cpu:
        overhead += mem.llamacpp_cpu_work_bytes(
            arch, n_ctx=n_ctx, slots=slots, ubatch=ubatch, flash_attn=flash_attn
        )
    rest = cpu_w - repack + cpu_kv + cpu_comp + overhead
    if unified:
        room = caps[0] - rest - sum(d.total_bytes for d in devices)
    else:
        room = (ram_cap if ram_known else UNKNOWN_RAM_ALLOWANCE) - rest
    caches = llamacpp_host_caches(
        arch,
        room=room,
        kv_total=sum(kv_layers),
        n_ctx=n_ctx,
        slots=slots,
        kv_dtype=kv_dtype,
    )
    cpu_total = cpu_w + cpu_kv + cpu_comp + overhead + caches.bytes
    cpu = DeviceMemory(
        "cpu",
        cpu_w,
        cpu_kv,
        cpu_comp,
        overhead,
        cpu_total,
        ram_cap if ram_known else cpu_total - repack,
        free_bytes=hw.host.ram_available_bytes if ram_known else None,
        cache_bytes=caches.bytes,
        reclaimable_bytes=repack,
    )
    devices.append(cpu)
    if not ram_known and not unified:
        if not gpus or on_gpu < n or n_cpu_moe > 0:
            reasons.append(
                f"needs {cpu.needed_bytes / GiB:.1f} GiB of RAM for layers or experts on the "
                "CPU, and the hardware spec gives no RAM: add ram=SIZE to --hw"
            )
        elif cpu.needed_bytes > UNKNOWN_RAM_ALLOWANCE:
            reasons.append(
                f"needs {cpu.needed_bytes / GiB:.1f} GiB of RAM beside the GPUs, more than the "
                f"{UNKNOWN_RAM_ALLOWANCE / GiB:.0f} GiB assumed when the hardware spec gives "
                "no RAM: add ram=SIZE to --hw"
            )
    bw, _ = ram_bandwidth(hw)
    parts.append(Part("cpu (RAM)", cpu_read, bw))
    for d in devices:
        why = _check(d)
        if why:
            reasons.append(why)
    if unified:
        # GPU and CPU share one pool: the sum must fit the GPU's working-set cap.
        used = sum(d.needed_bytes for d in devices)
        cap = caps[0]
        reasons = (
            []
            if used <= cap
            else [f"unified memory: needs {used / GiB:.1f} GiB, {cap / GiB:.1f} GiB usable"]
        )
    needs = sum(d.needed_bytes for d in devices)
    have = sum(d.capacity_bytes for d in devices if d.id != "cpu" or hw.host.ram_known)
    if unified:
        have = caps[0]  # one pool, counted once
    shortfall = sum(max(0, d.needed_bytes - d.capacity_bytes) for d in devices)
    if not gpus:
        placement = "cpu"
    elif unified:
        placement = "unified"
    elif on_gpu < n:
        placement = "partial_offload"
    elif n_cpu_moe > 0:
        placement = "expert_offload"
    elif len(gpus) > 1:
        placement = "layer_split"
    else:
        placement = "gpu"
    return Evaluated(
        placement=placement,
        devices=devices,
        fits=not reasons,
        reasons=reasons,
        parts=parts,
        weights_read=sum(p.bytes_per_token for p in parts),
        ngl=(n + 1 if output_on_gpu else on_gpu),
        n_cpu_moe=n_cpu_moe,
        tensor_split=split,
        shortfall=shortfall,
        needs=needs,
        have=have,
        ctx_checkpoints=caches.checkpoints,
        cache_ram_mib=caches.cache_ram_mib,
    )


def mtp_bytes(arch: Architecture, layout: WeightLayout) -> int:
    """Weights of the multi-token-prediction layers: as read from the files when they were
    (`unloaded_bytes`), else their parameters at the layout's bytes per parameter."""
    if layout.unloaded_bytes:
        return layout.unloaded_bytes
    if not arch.mtp_layers:
        return 0
    from toolkit.inspect.params import param_breakdown

    b = param_breakdown(arch)
    return int(b.mtp * layout.total_bytes / b.total) if b.total else 0


def lora_bytes(arch: Architecture, *, rank: int, max_loras: int, tp: int) -> int:
    """GPU memory vLLM allocates for LoRA at start (vllm/lora/layers: lora_a_stacked
    [max_loras, 1, rank, in] and lora_b_stacked [max_loras, 1, out, rank] per linear
    module, bf16, in and out split over TP as the module is): per layer q/k/v, o,
    gate/up and down give rank × (7·hidden + (2·q + 2·kv + 3·intermediate) / tp)
    elements. MoE layers count their attention and shared parts only (vLLM's expert LoRA
    is not planned)."""
    h = arch.hidden_size
    q = arch.heads * arch.head_dim
    kv = arch.kv_heads * arch.head_dim
    inter = arch.intermediate_size or 0
    if arch.moe is not None:
        inter = arch.moe.shared_expert_intermediate_size or 0
    per_layer = rank * (7 * h + (2 * q + 2 * kv + 3 * inter) / tp)
    return int(per_layer * arch.layers * max_loras * 2)


def vllm_gpu(
    arch: Architecture,
    layout: WeightLayout,
    gpus: list[Gpu],
    *,
    tp: int,
    pp: int,
    ep: bool,
    util: float,
    ctx: int,
    concurrency: int,
    kv_dtype: str,
    batched_tokens: int | None,
    kv_read_ctx: int,
    version: vm.Version = vm.NEWEST,
    dp: int = 1,
    spec_tokens: int = 0,
    lora: tuple[int, int] | None = None,
    max_position: int = 0,
    mxfp4_kernel: str | None = None,
) -> Evaluated:
    """vLLM on `tp × pp` GPUs, or `dp` data-parallel replicas of the attention with the
    experts spread over all of them (`dp > 1`, expert parallel, TP 1 each). With DP
    every rank holds the whole attention and its own KV pool, so one request's context
    is what one rank's pool holds, and the replicas serve requests side by side.
    `max_position` (the config's max_position_embeddings) sizes the rotary table every
    rank holds beside its share of the weights; `mxfp4_kernel` (`compat.mxfp4_moe_kernel`)
    how the MXFP4 MoE kernel vLLM picks for the GPU pads each rank's experts."""
    used = gpus[: tp * pp * dp]
    total = min(g.total_bytes for g in used)
    free = min(g.free_bytes for g in used)
    loaded = layout.total_bytes
    if spec_tokens:
        loaded += mtp_bytes(arch, layout)  # the MTP layers, loaded to propose tokens
    if dp > 1:
        experts = sum(layout.expert_bytes_per_layer)
        w_gpu = loaded - experts + -(-experts // dp)
    else:
        w_gpu = -(-loaded // (tp * pp))
    w_gpu += vllm_rank_extra_bytes(
        arch, layout, tp=tp, pp=pp, dp=dp, max_position=max_position, mxfp4_kernel=mxfp4_kernel
    )
    if lora is not None:
        w_gpu += lora_bytes(arch, rank=lora[1], max_loras=lora[0], tp=tp) // pp
    terms = vm.vllm_terms(
        arch,
        gpu_total=total,
        gpu_name=used[0].name,
        weights_per_gpu=w_gpu,
        util=util,
        tp=tp,
        pp=pp,
        kv_dtype=kv_dtype,
        version=version,
        batched_tokens=batched_tokens,
        max_model_len=ctx,
        spec_tokens=spec_tokens,
    )
    reasons: list[str] = []
    if terms.budget > free:
        reasons.append(
            f"gpu_memory_utilization {util:.2f} × {total / GiB:.1f} GiB = "
            f"{terms.budget / GiB:.1f} GiB exceeds the {free / GiB:.1f} GiB free"
        )
    kv = max(0, terms.kv_cache)
    # Requests per rank: DP spreads them over the replicas.
    per_rank = -(-concurrency // dp)
    longest = terms.max_length(per_rank)
    max_conc = None
    if ctx:
        per_req = terms.layout.request_blocks(ctx, terms.max_num_batched_tokens)
        max_conc = dp * terms.layout.blocks(kv) / per_req if per_req else None
    if terms.kv_cache <= 0:
        reasons.append(
            f"weights {w_gpu / GiB:.1f} GiB + activations {terms.activation / GiB:.1f} GiB per "
            f"GPU leave no KV cache in {terms.budget / GiB:.1f} GiB"
        )
    elif longest < ctx:
        hold = f"{per_rank} × ctx {ctx:,}" if per_rank > 1 else f"ctx {ctx:,}"
        reasons.append(
            f"KV pool {kv / GiB:.1f} GiB per GPU holds {longest:,} tokens per sequence, "
            f"needs {hold}"
        )
    devices = []
    parts = []
    active = layout.active_bytes or layout.total_bytes
    stage_read = active / pp
    notes: list[str] = []
    graphs_outside = 0 if terms.graphs_in_budget else terms.cuda_graphs
    if terms.budget + graphs_outside > free and terms.budget <= free:
        notes.append(
            f"CUDA graphs (~{terms.cuda_graphs / GiB:.1f} GiB, estimated) may not fit beside "
            f"the {terms.budget / GiB:.1f} GiB budget in {free / GiB:.1f} GiB free; if capture "
            "fails, lower --gpu-mem-util"
        )
    graphs_charged = terms.cuda_graphs if terms.graphs_in_budget else 0
    for g in used:
        devices.append(
            DeviceMemory(
                g.device_id,
                w_gpu,
                kv,
                terms.activation + graphs_charged,
                terms.non_torch,
                w_gpu + kv + terms.activation + graphs_charged + terms.non_torch,
                terms.budget,
                free_bytes=g.free_bytes,
            )
        )
    if dp > 1:
        # Each replica reads the attention and shared weights for its own streams; the
        # routed experts a step touches are spread over every GPU.
        moe = arch.moe
        routed = 0
        if moe is not None and moe.experts:
            routed = int(sum(layout.expert_bytes_per_layer) * moe.experts_per_token / moe.experts)
        routed = min(routed, active)
        kv_read = terms.kv_bytes_per_token * kv_read_ctx
        g0 = used[0]
        parts.append(
            Part(f"{g0.device_id} (attention)", active - routed + kv_read, g0.bandwidth_bytes_s)
        )
        parts.append(Part(f"experts over {dp} GPUs", routed, g0.bandwidth_bytes_s, ranks=dp))
    for s in range(pp if dp == 1 else 0):
        kv_read = terms.kv_bytes_per_token * kv_read_ctx * tp
        g0 = used[s * tp]
        parts.append(
            Part(
                f"{g0.device_id} (stage {s})" if pp > 1 else g0.device_id,
                stage_read + kv_read,
                g0.bandwidth_bytes_s,
                ranks=tp,
            )
        )
    need_total = w_gpu + terms.activation + terms.non_torch + graphs_charged
    need_total += terms.kv_bytes_per_token * ctx * per_rank
    n = tp * pp * dp
    shortfall = max(0, need_total - min(terms.budget, free)) * n
    placement = "gpu"
    if dp > 1:
        placement = "data_parallel"
    elif pp > 1:
        placement = "pipeline_parallel"
    elif tp > 1:
        placement = "tensor_parallel"
    return Evaluated(
        placement=placement,
        devices=devices,
        fits=not reasons,
        reasons=reasons,
        parts=parts,
        tp=tp,
        pp=pp,
        dp=dp,
        ep=ep or dp > 1,
        util=util,
        notes=notes,
        kv_tokens=terms.kv_tokens,
        max_concurrency=max_conc,
        shortfall=shortfall,
        needs=need_total * n,
        have=min(terms.budget, free) * n,
        vllm_terms=terms,
        max_ctx=longest,
    )


def vllm_cpu(
    arch: Architecture,
    layout: WeightLayout,
    hw: Hardware,
    *,
    ctx: int,
    concurrency: int,
    kv_dtype: str,
    kv_read_ctx: int,
) -> Evaluated:
    """vLLM CPU backend: fp32 weights (layout at 32 bit), KV space set explicitly in whole
    GiB (VLLM_CPU_KVCACHE_SPACE), process overhead measured on this kind of machine."""
    per_tok = int(
        vm.kv_layout(arch, version=vm.NEWEST, tp=1, pp=1, kv_dtype=kv_dtype).bytes_per_token()
    )
    need_kv = per_tok * ctx * concurrency
    kv_space = max(1, -(-need_kv // GiB)) * GiB
    total = layout.total_bytes + kv_space + VLLM_CPU_OVERHEAD
    cap = ram_capacity(hw) if hw.host.ram_known else 0
    dev = DeviceMemory(
        "cpu",
        layout.total_bytes,
        kv_space,
        0,
        VLLM_CPU_OVERHEAD,
        total,
        cap,
        free_bytes=hw.host.ram_available_bytes,
    )
    reasons = [r for r in [_check(dev)] if r]
    if not hw.host.ram_known:
        dev = replace(dev, free_bytes=None)
        reasons = [
            f"runs in RAM (needs {total / GiB:.1f} GiB) and the hardware spec gives no RAM: "
            "add ram=SIZE to --hw"
        ]
    bw, _ = ram_bandwidth(hw)
    read = (layout.active_bytes or layout.total_bytes) + per_tok * kv_read_ctx
    tokens = kv_space // (per_tok * 16) * 16 if per_tok else 0  # whole 16-token blocks
    return Evaluated(
        placement="cpu",
        devices=[dev],
        fits=not reasons,
        reasons=reasons,
        parts=[Part("cpu (RAM)", read, bw)],
        kv_tokens=int(tokens),
        max_concurrency=tokens / ctx if ctx else None,
        kv_space=kv_space,
        shortfall=max(0, total - cap),
        needs=total,
        have=cap,
    )
