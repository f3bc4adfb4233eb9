"""The speed model: decode and prefill tok/s fitted to published measurements.

A roofline (bytes read per token over bandwidth) is an upper bound. Real engines also pay
a fixed cost per layer per token (kernel launches, synchronisation), reach only part of
the bandwidth (more or less by backend and kernel class), hand activations between GPU
and CPU for each layer whose experts stay in RAM, route MoE tokens, all-reduce across
tensor-parallel ranks, and on a few CPU cores small models are bound by arithmetic, not
memory. Each of those is one term here with one coefficient; the coefficients are fitted
(`toolkit.planner.speedfit`) on sourced measurements in tests/data/speed and stored in
`speed_params.json` with the fit's leave-one-source-out error, which gives the range
printed with every estimate.

Pure: a SpeedCase and the coefficients in, seconds per token out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

#: Coefficients and their starting values (units in the names). The fit moves them in
#: log space; `speed_params.json` holds the fitted values.
DEFAULTS: dict[str, float] = {
    # fraction of peak bandwidth reached by decode, per engine and backend
    "bw_llamacpp_cuda": 0.75,
    "bw_llamacpp_rocm": 0.6,
    "bw_llamacpp_metal": 0.75,
    "bw_llamacpp_vulkan": 0.6,
    "bw_vllm_cuda": 0.75,
    "bw_vllm_rocm": 0.6,
    "bw_ram": 0.6,
    # bandwidth one decode stream can draw at most (bytes/s): a single token's matrix ×
    # vector products keep too few reads in flight to fill HBM or a large Apple chip, so
    # the effective rate saturates: ((eff × peak)^-p + cap^-p)^(-1/p)
    "cap_llamacpp_cuda_bps": 2.0e12,
    "cap_llamacpp_metal_bps": 1.0e12,
    "cap_vllm_cuda_bps": 4.0e12,
    # vLLM kernel classes relative to bf16 (Marlin int4, fp8, mxfp4/nvfp4); FP8 MoE layers
    # run the fused-MoE block-FP8 kernels, a class of their own (dense FP8 runs
    # scaled-mm GEMMs)
    "k_vllm_int4": 0.7,
    "k_vllm_fp8": 0.9,
    "k_vllm_fp8_moe": 0.9,
    "k_vllm_fp4": 0.6,
    # seconds per layer per token
    "layer_llamacpp_gpu_s": 20e-6,
    # llama.cpp CUDA builds before CUDA graphs (ggml-org/llama.cpp#6766, May 2024)
    "layer_llamacpp_nograph_s": 60e-6,
    "layer_llamacpp_metal_s": 30e-6,
    "layer_llamacpp_cpu_s": 20e-6,
    "layer_vllm_s": 20e-6,
    "layer_vllm_eager_s": 100e-6,
    "layer_vllm_cpu_s": 1000e-6,
    # extra seconds per MoE layer (routing, expert gather)
    "moe_layer_s": 10e-6,
    # vLLM: extra seconds per multi-head-latent-attention layer (DeepSeek V2/V3, Kimi K2:
    # the latent projections and the decoupled RoPE path are several more kernels a layer)
    "mla_layer_vllm_s": 20e-6,
    # seconds per layer whose experts run on the CPU (GPU↔CPU hand-off)
    "handoff_s": 100e-6,
    # seconds per layer per token for the tensor-parallel all-reduce, over PCIe and over a
    # GPU fabric (NVLink/NVSwitch, Infinity Fabric)
    "allreduce_s": 10e-6,
    "allreduce_fabric_s": 5e-6,
    # vLLM: seconds per step for each stream beyond the first (scheduling, sampling and
    # detokenising grow with the batch)
    "seq_vllm_s": 50e-6,
    # CPU: fraction of the peak FP32 FLOP/s reached by prefill (matrix × matrix) and by
    # decode (matrix × vector: small models on few cores are bound by this, not by RAM)
    "cpu_flop_eff": 0.5,
    "cpu_dec_flop_eff": 0.15,
    # seconds per decode step outside the layers (sampling, scheduling, Python)
    "step_llamacpp_s": 200e-6,
    "step_vllm_s": 1000e-6,
    # GPU prefill: fraction of the dense fp16 tensor FLOP/s reached
    "pp_llamacpp_cuda": 0.35,
    "pp_llamacpp_metal": 0.5,
    "pp_llamacpp_rocm": 0.25,
    # llama.cpp's HIP prefill on AMD's datacenter CDNA parts (MI210/MI250/MI300X), whose
    # matrix cores its kernels use differently from consumer RDNA's WMMA
    "pp_llamacpp_rocm_cdna": 0.25,
    "pp_llamacpp_vulkan": 0.25,
    "pp_vllm_cuda": 0.5,
    # vLLM batching: fraction of the GPU FLOP/s a decode step reaches
    "dec_flop_eff": 0.4,
}


@dataclass(frozen=True)
class Place:
    """Bytes read per token from one place."""

    kind: str  # "gpu" or "cpu"
    bytes_per_token: float
    bandwidth: float | None
    #: Tensor-parallel ranks reading these bytes at the same time.
    ranks: int = 1
    #: Share of the model's FLOPs done here (by active bytes).
    flop_share: float = 0.0


@dataclass(frozen=True)
class SpeedCase:
    """What the model needs about one configuration: from a plan or a measurement."""

    engine: str  # llamacpp | vllm
    backend: str  # cuda | rocm | metal | vulkan | cpu
    places: tuple[Place, ...]
    layers: int
    moe_layers: int = 0
    #: Layers with multi-head latent attention (DeepSeek-style MLA).
    mla_layers: int = 0
    #: Layers whose experts (or whole layer) run on the CPU while the rest is on a GPU.
    handoff_layers: int = 0
    tp: int = 1
    concurrency: int = 1
    #: vLLM data-parallel replicas, each serving `concurrency` streams.
    replicas: int = 1
    #: 2 × active parameters.
    flops_per_token: float = 0.0
    #: Dense fp16 FLOP/s of the GPU(s) that compute (per rank × ranks), None if unknown.
    gpu_flops: float | None = None
    #: Peak FP32 FLOP/s of the CPU cores used, None if unknown.
    cpu_flops: float | None = None
    #: vLLM kernel class: bf16 | fp8 | int4 | fp4.
    kernel: str = "bf16"
    cuda_graphs: bool = True
    #: Weight bytes of the places (read once per step, shared by concurrent streams).
    weight_share: float = 1.0
    #: MoE: routed experts, experts per token, and the routed experts' share of the
    #: active weight bytes. With N streams a step reads every expert some token picked:
    #: E × (1 − (1 − k/E)^N) of them instead of k.
    experts: int = 0
    experts_per_token: int = 0
    expert_share: float = 0.0
    #: The tensor-parallel ranks talk over a GPU fabric (NVLink, Infinity Fabric), not PCIe.
    fabric: bool = False
    #: The GPU's architecture family from the spec table ("cdna3", "rdna3", "hopper" ...).
    gpu_arch: str = ""


#: Sharpness of the bandwidth saturation: the rate one stream draws is the p-norm
#: combination of (efficiency × peak) and the cap; large p approaches min(). Chosen by
#: leave-one-source-out error (p = 1, 2, 3, 6 tried; docs/planner.md).
SATURATION_P = 4.0


def _gpu_rate(case: SpeedCase, bandwidth: float, p: dict[str, float]) -> float:
    """Bytes per second one GPU delivers to a decode step."""
    if case.engine == "vllm":
        eff = p.get(f"bw_vllm_{case.backend}", p["bw_vllm_cuda"])
        k = {"int4": "k_vllm_int4", "fp8": "k_vllm_fp8", "fp4": "k_vllm_fp4"}.get(case.kernel)
        if k == "k_vllm_fp8" and case.moe_layers:
            k = "k_vllm_fp8_moe"
        eff *= p[k] if k else 1.0
        cap = p["cap_vllm_cuda_bps"]
    else:
        eff = p.get(f"bw_llamacpp_{case.backend}", p["bw_llamacpp_cuda"])
        cap = p.get(f"cap_llamacpp_{case.backend}_bps", p["cap_llamacpp_cuda_bps"])
    sp = SATURATION_P
    return float(((eff * bandwidth) ** -sp + cap**-sp) ** (-1 / sp))


def _layer_cost(case: SpeedCase, p: dict[str, float]) -> float:
    if case.engine == "vllm":
        if case.backend == "cpu":
            return p["layer_vllm_cpu_s"]
        return p["layer_vllm_s"] if case.cuda_graphs else p["layer_vllm_eager_s"]
    if case.backend == "metal":
        return p["layer_llamacpp_metal_s"]
    if case.backend == "cpu":
        return p["layer_llamacpp_cpu_s"]
    return p["layer_llamacpp_gpu_s"] if case.cuda_graphs else p["layer_llamacpp_nograph_s"]


def weights_read_factor(case: SpeedCase) -> float:
    """Weight bytes one step reads for `concurrency` streams, relative to one stream."""
    n = max(1, case.concurrency)
    if n == 1 or not case.experts or not case.experts_per_token or case.expert_share <= 0:
        return 1.0
    e, k = case.experts, case.experts_per_token
    touched = e * (1.0 - (1.0 - k / e) ** n)
    return (1.0 - case.expert_share) + case.expert_share * touched / k


def decode_step_seconds(case: SpeedCase, p: dict[str, float]) -> float | None:
    """Seconds for one decode step serving `concurrency` streams; None when a bandwidth
    the case needs is unknown."""
    n = max(1, case.concurrency)
    wf = weights_read_factor(case)
    mem = 0.0
    cpu_compute = 0.0
    for pl in case.places:
        if pl.bytes_per_token <= 0:
            continue
        if not pl.bandwidth:
            return None
        rate = _gpu_rate(case, pl.bandwidth, p) if pl.kind == "gpu" else pl.bandwidth * p["bw_ram"]
        weights = pl.bytes_per_token * case.weight_share
        kv = pl.bytes_per_token - weights
        t = (weights * wf + kv * n) / pl.ranks / rate
        if pl.kind == "cpu" and case.cpu_flops:
            flops = case.flops_per_token * pl.flop_share * n
            c = flops / (case.cpu_flops * p["cpu_dec_flop_eff"])
            cpu_compute += max(0.0, c - t)
        mem += t
    fixed = p["step_vllm_s"] if case.engine == "vllm" else p["step_llamacpp_s"]
    fixed += case.layers * _layer_cost(case, p)
    fixed += case.moe_layers * p["moe_layer_s"]
    if case.engine == "vllm":
        fixed += case.mla_layers * p["mla_layer_vllm_s"]
    fixed += case.handoff_layers * p["handoff_s"]
    if case.tp > 1:
        ar = p["allreduce_fabric_s"] if case.fabric else p["allreduce_s"]
        fixed += case.layers * ar * math.log2(case.tp)
    if case.engine == "vllm" and n > 1:
        fixed += (n - 1) * p["seq_vllm_s"]
    step = mem + cpu_compute + fixed
    if n > 1 and case.gpu_flops and case.backend != "cpu":
        gpu_share = 1.0 - sum(pl.flop_share for pl in case.places if pl.kind == "cpu")
        compute = case.flops_per_token * gpu_share * n / (case.gpu_flops * p["dec_flop_eff"])
        step = max(step, compute + fixed)
    return step


def decode_tok_s(case: SpeedCase, p: dict[str, float]) -> tuple[float, float] | None:
    """(per-stream tok/s, aggregate tok/s)."""
    step = decode_step_seconds(case, p)
    if step is None or step <= 0:
        return None
    n = max(1, case.concurrency)
    return 1.0 / step, n * max(1, case.replicas) / step


def prefill_tok_s(case: SpeedCase, p: dict[str, float]) -> float | None:
    """Prompt tokens per second: each place computes its FLOP share at its efficiency."""
    if case.flops_per_token <= 0:
        return None
    seconds = 0.0
    for pl in case.places:
        if pl.flop_share <= 0:
            continue
        if pl.kind == "cpu":
            if not case.cpu_flops:
                return None
            rate = case.cpu_flops * p["cpu_flop_eff"]
        else:
            if not case.gpu_flops:
                return None
            key = f"pp_{case.engine}_{case.backend}"
            if case.backend == "rocm" and case.gpu_arch.startswith("cdna"):
                key += "_cdna"
            rate = case.gpu_flops * p.get(key, p["pp_llamacpp_cuda"])
        seconds += pl.flop_share * case.flops_per_token / rate
    return 1.0 / seconds if seconds > 0 else None


def prefill_rate(
    engine: str, backend: str, quant: str, fp16: float | None, int8: float | None
) -> float | None:
    """The GPU rate prompt processing runs at: llama.cpp's CUDA backend multiplies
    integer-quantized GGUF weights with int8 tensor-core MMA (its MMQ kernels), so those
    run at the int8 rate when the table has one; everything else at dense fp16."""
    q = quant.lower()
    if engine == "llamacpp" and backend == "cuda" and int8 and q[:1] in ("q", "i", "u"):
        return int8
    return fp16


@dataclass(frozen=True)
class Fitted:
    """The stored fit: coefficients, and the spread of measured/estimated seen when each
    source was left out (the range printed with an estimate)."""

    params: dict[str, float]
    decode_low: float
    decode_high: float
    prefill_low: float
    prefill_high: float
    cases: int
    sources: int


@cache
def fitted() -> Fitted:
    """The coefficients shipped in speed_params.json (DEFAULTS when absent)."""
    try:
        text = Path(__file__).with_name("speed_params.json").read_text("utf-8")
        doc = json.loads(text)
    except (OSError, ValueError):
        return Fitted(dict(DEFAULTS), 0.5, 1.5, 0.5, 1.5, 0, 0)
    params = {**DEFAULTS, **{k: float(v) for k, v in doc["params"].items() if k in DEFAULTS}}
    r = doc["range"]
    return Fitted(
        params,
        float(r["decode_low"]),
        float(r["decode_high"]),
        float(r["prefill_low"]),
        float(r["prefill_high"]),
        int(doc.get("cases", 0)),
        int(doc.get("sources", 0)),
    )
