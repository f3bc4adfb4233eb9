"""Fit the speed model's coefficients to published measurements and score the fit.

Each measurement (tests/data/speed/*.yaml; schema in that folder's README) becomes a
SpeedCase built from what the source states — model size or parameters × the quant's
bits, the GPU's bandwidth and FLOP/s from the spec table, the placement — so the model
sees measurements the way the planner sees plans. The fit minimises a robust (Cauchy)
loss of the log2 error (decode and prefill together), so that a source no term explains
(a kernel regression, an unusual build) pulls the shared coefficients less than a squared
error lets it, with a weak pull toward the starting values so a coefficient with little
data stays plausible; coordinate descent in log space with a golden-section line search
(no SciPy needed). Leave-one-source-out: refit without one source, predict it, repeat for
every source.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from toolkit.planner.quant import quant_info
from toolkit.planner.speed import ASSUMED_CPU_HZ, DEFAULT_RAM_BW, cpu_flop_per_cycle
from toolkit.planner.speedmodel import (
    DEFAULTS,
    Place,
    SpeedCase,
    decode_tok_s,
    prefill_rate,
    prefill_tok_s,
)

#: Bounds per coefficient family (fractions of peak at most 1; seconds positive).
_SECONDS = (1e-7, 5e-3)
_BYTES_PER_S = (5e10, 2e13)
_FRACTION = (0.02, 1.0)
#: Weight of the pull toward DEFAULTS (per coefficient, squared log2 distance).
PRIOR = 0.02
#: Scale of the Cauchy loss, in log2 units: errors well inside it count as squared, far
#: outside it about logarithmically. Chosen by leave-one-source-out error over squared
#: error, Huber at 0.15 / 0.3 and Cauchy at 0.2 / 0.3 / 0.5 (docs/planner.md, Speed).
ROBUST_SCALE = 0.3
#: Share of an MoE model's active parameters in its routed experts, when the source does
#: not say (Qwen3-30B-A3B 0.55, gpt-oss-20b 0.66 from their configs).
EXPERT_ACTIVE_SHARE = 0.6
#: Prefill rates measured on shorter prompts are not used (llama-bench uses 512).
MIN_PREFILL_TOKENS = 128


@dataclass(frozen=True)
class Measurement:
    id: str
    source: str
    test: str  # tg | tg_total | pp
    value: float
    case: SpeedCase


def _bounds(name: str) -> tuple[float, float]:
    if name.endswith("_bps"):
        return _BYTES_PER_S
    return _SECONDS if name.endswith("_s") else _FRACTION


def _weights_bytes(m: Mapping[str, Any]) -> float | None:
    if m.get("size_gib"):
        return float(m["size_gib"]) * 1024**3
    params = (m.get("model") or {}).get("params_b")
    info = quant_info(str(m.get("quant", "")))
    if not params or info is None:
        return None
    return float(params) * 1e9 * info.layer_bpw / 8


def to_measurement(
    m: Mapping[str, Any],
    gpu_spec: Callable[[str], tuple[float | None, float | None, float | None]],
    fabric_of: Callable[[str], str | None] = lambda gpu: None,
    arch_of: Callable[[str], str | None] = lambda gpu: None,
) -> Measurement | str:
    """A measurement dict → Measurement.
    `gpu_spec(id)` gives (bandwidth bytes/s, dense fp16 FLOP/s, dense int8 OP/s) from the
    spec table, `fabric_of(id)` its GPU-to-GPU link. A string instead of a Measurement
    says why the row is not used."""
    if m.get("exclude"):
        return f"excluded: {m['exclude']}"
    model = m.get("model") or {}
    hw = m.get("hardware") or {}
    weights = _weights_bytes(m)
    params = model.get("params_b")
    if weights is None or not params:
        return "no model size (size_gib, or params_b and a known quant)"
    active_b = float(model.get("active_b") or params)
    active = weights * active_b / float(params)
    layers = int(model.get("layers") or 0)
    if layers <= 0:
        return "no layer count"
    value = m.get("value_tok_s")
    test = str(m.get("test"))
    if value is None and m.get("tpot_ms"):
        value = 1000.0 / float(m["tpot_ms"])
    if value is None and m.get("ttft_ms") and m.get("n_tokens"):
        value = float(m["n_tokens"]) / (float(m["ttft_ms"]) / 1000.0)
        test = "pp"
    if value is None or test not in ("tg", "tg_total", "pp"):
        return "no tok/s figure"
    if test == "pp" and 0 < int(m.get("n_tokens") or 512) < MIN_PREFILL_TOKENS:
        # A prompt this short times the request's fixed costs, not prompt throughput.
        return f"prefill on a prompt under {MIN_PREFILL_TOKENS} tokens"
    placement = str(m.get("placement", "gpu"))
    engine = str(m.get("engine"))
    backend = str(m.get("backend"))
    n_gpus = int(hw.get("gpus") or 1)
    tp = int(m.get("tp") or (n_gpus if placement == "tensor_parallel" else 1))
    bw = flops = None
    if hw.get("gpu"):
        bw, flops, int8 = gpu_spec(str(hw["gpu"]))
        flops = prefill_rate(engine, backend, str(m.get("quant", "")), flops, int8)
        if bw is None:
            return f"GPU {hw['gpu']} has no bandwidth in the spec table"
    ram_bw = float(hw["ram_bw_gb_s"]) * 1e9 if hw.get("ram_bw_gb_s") else DEFAULT_RAM_BW
    cores = int(hw.get("cores") or 0)
    cpu_flops = None
    if cores:
        arm = any(w in str(hw.get("cpu", "")).lower() for w in ("arm", "apple", "qualcomm", "cix"))
        per, _ = cpu_flop_per_cycle(("neon",) if arm else ("avx2", "fma"))
        cpu_flops = cores * per * ASSUMED_CPU_HZ
    moe = bool(model.get("moe"))
    places: list[Place]
    handoff = 0
    if placement == "cpu" or backend == "cpu":
        places = [Place("cpu", active, ram_bw, 1, 1.0)]
    elif placement == "expert_offload":
        k = int(m.get("n_cpu_moe") or layers)
        share = float(model.get("expert_active_share") or EXPERT_ACTIVE_SHARE)
        on_cpu = active * share * min(1.0, k / layers)
        places = [
            Place("gpu", active - on_cpu, bw, 1, (active - on_cpu) / active),
            Place("cpu", on_cpu, ram_bw, 1, on_cpu / active),
        ]
        handoff = min(k, layers)
    elif placement == "partial_offload" and m.get("ngl") is not None:
        on_gpu = min(1.0, int(m["ngl"]) / layers)
        places = [
            Place("gpu", active * on_gpu, bw, 1, on_gpu),
            Place("cpu", active * (1 - on_gpu), ram_bw, 1, 1 - on_gpu),
        ]
        handoff = 1
    else:
        places = [Place("gpu", active, bw, tp if placement == "tensor_parallel" else 1, 1.0)]
    kernel = {
        "awq": "int4",
        "gptq": "int4",
        "int4": "int4",
        "fp8": "fp8",
        "mxfp4": "fp4",
        "nvfp4": "fp4",
    }.get(str(m.get("quant", "")).lower(), "bf16")
    depth = float(m.get("depth") or 0)
    hidden = float(model.get("hidden") or 0)
    # Decode reads the KV cache of every token before it (when the source's model facts
    # give its size per token): the depth plus half the generated tokens on average.
    kv_read = float(model.get("kv_bytes_per_token") or 0) * (
        depth + float(m.get("n_tokens") or 0) / 2
    )
    # Split over tensor-parallel ranks like the weights, except an MLA latent cache, which
    # every rank holds and reads whole (`kv_split_by_tp: false`).
    kv_read *= 1 if model.get("kv_split_by_tp", True) else tp
    if test != "pp" and kv_read > 0:
        places = [
            replace(
                pl, bytes_per_token=pl.bytes_per_token + kv_read * (pl.bytes_per_token / active)
            )
            for pl in places
        ]
    # Attention at depth: QKᵀ and AV over `depth` cached tokens, 4·hidden FLOPs each per layer.
    attn = 4.0 * layers * hidden * (depth + float(m.get("n_tokens") or 0) / 2)
    case = SpeedCase(
        engine=engine,
        backend="cpu" if placement == "cpu" else backend,
        places=tuple(places),
        layers=layers,
        moe_layers=layers if moe else 0,
        mla_layers=layers if model.get("mla") else 0,
        handoff_layers=handoff,
        tp=tp,
        concurrency=int(m.get("concurrency") or 1),
        flops_per_token=2 * active_b * 1e9 + (attn if test == "pp" else 0.0),
        gpu_flops=flops * tp if flops else None,
        cpu_flops=cpu_flops,
        kernel=kernel if engine == "vllm" else "bf16",
        cuda_graphs=_graphs(m, engine, backend),
        fabric=bool(hw.get("gpu") and fabric_of(str(hw["gpu"]))),
        gpu_arch=(arch_of(str(hw["gpu"])) or "") if hw.get("gpu") else "",
        weight_share=active / (active + kv_read) if test != "pp" else 1.0,
        experts=int(model.get("experts") or 0),
        experts_per_token=int(model.get("experts_per_token") or 0),
        expert_share=float(model.get("expert_active_share") or (EXPERT_ACTIVE_SHARE if moe else 0)),
    )
    if test == "tg" and case.concurrency == 1 and value > roofline(case):
        # Faster than reading the weights once at full bandwidth: not plain decode
        # (speculative decoding, a misread column); it would teach the fit nonsense.
        return "faster than the bandwidth roofline: not plain decode"
    return Measurement(str(m["id"]), str(m.get("source") or m.get("url")), test, value, case)


def roofline(case: SpeedCase) -> float:
    """Decode tok/s if every byte streamed at 100 % of peak bandwidth and nothing else cost
    time (infinite when a bandwidth is unknown)."""
    t = sum(
        pl.bytes_per_token / pl.ranks / pl.bandwidth
        for pl in case.places
        if pl.bandwidth and pl.bytes_per_token > 0
    )
    return 1.0 / t if t > 0 else math.inf


#: llama.cpp's CUDA backend launches a decode step as one CUDA graph since
#: ggml-org/llama.cpp#6766 (May 2024); earlier measurements paid a launch per kernel.
LLAMACPP_GRAPHS_SINCE = "2024-05"


def _graphs(m: Mapping[str, Any], engine: str, backend: str) -> bool:
    if m.get("cuda_graphs") is False:
        return False
    if engine == "llamacpp" and backend == "cuda" and m.get("date"):
        return str(m["date"]) >= LLAMACPP_GRAPHS_SINCE
    return True


def predict(meas: Measurement, params: Mapping[str, float]) -> float | None:
    p = dict(params)
    if meas.test == "pp":
        return prefill_tok_s(meas.case, p)
    dec = decode_tok_s(meas.case, p)
    if dec is None:
        return None
    return dec[1] if meas.test == "tg_total" else dec[0]


def _loss(ms: Sequence[Measurement], params: Mapping[str, float]) -> float:
    total = 0.0
    for m in ms:
        est = predict(m, params)
        if est is None or est <= 0:
            continue
        total += robust(math.log2(est / m.value))
    prior = sum(math.log2(params[k] / DEFAULTS[k]) ** 2 for k in DEFAULTS)
    return total + PRIOR * prior


def robust(err: float, scale: float = ROBUST_SCALE) -> float:
    """Cauchy loss of a log2 error: about err² near 0, growing like log(err²) far out."""
    return scale * scale * math.log1p((err / scale) ** 2)


def _used(ms: Sequence[Measurement]) -> list[str]:
    """Coefficients that change some prediction (the others keep their defaults)."""
    base = dict(DEFAULTS)
    ref = [predict(m, base) for m in ms]
    used = []
    for k in DEFAULTS:
        bumped = {**base, k: base[k] * 1.5}
        if any(predict(m, bumped) != r for m, r in zip(ms, ref, strict=True)):
            used.append(k)
    return used


def fit(
    ms: Sequence[Measurement], start: Mapping[str, float] | None = None, rounds: int = 6
) -> dict[str, float]:
    """Coefficients minimising the robust loss of the log2 error over `ms` (plus the prior)."""
    params = dict(start or DEFAULTS)
    keys = _used(ms)
    for _ in range(rounds):
        before = _loss(ms, params)
        for k in keys:
            lo, hi = (math.log(b) for b in _bounds(k))

            def at(x: float, k: str = k) -> float:
                return _loss(ms, {**params, k: math.exp(x)})

            params[k] = math.exp(golden_section(at, lo, hi))
        if before - _loss(ms, params) < 1e-6:
            break
    return params


def golden_section(f: Callable[[float], float], lo: float, hi: float, iters: int = 40) -> float:
    """The minimum of a unimodal f on [lo, hi] (golden-section search)."""
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2


@dataclass(frozen=True)
class Scored:
    id: str
    source: str
    test: str
    measured: float
    estimated: float

    @property
    def log2_error(self) -> float:
        return math.log2(self.estimated / self.measured)


def leave_one_source_out(ms: Sequence[Measurement], rounds: int = 6) -> list[Scored]:
    """Each source predicted by a fit on all the others."""
    out: list[Scored] = []
    for src in sorted({m.source for m in ms}):
        train = [m for m in ms if m.source != src]
        # From the starting values, never from a fit that saw the held-out source.
        params = fit(train, rounds=rounds)
        for m in ms:
            if m.source != src:
                continue
            est = predict(m, params)
            if est is not None and est > 0:
                out.append(Scored(m.id, m.source, m.test, m.value, est))
    return out


def summary(scored: Iterable[Scored], tests: Sequence[str]) -> dict[str, float]:
    """Median |log2 error|, share within ±25 %, and the 10th/90th percentile of
    measured/estimated (the printed range) for the given tests."""
    rows = [s for s in scored if s.test in tests]
    if not rows:
        return {"cases": 0}
    errs = sorted(abs(s.log2_error) for s in rows)
    ratios = sorted(s.measured / s.estimated for s in rows)
    within = sum(1 for s in rows if 0.75 <= s.estimated / s.measured <= 1.25)
    return {
        "cases": len(rows),
        "median_abs_log2": round(statistics.median(errs), 3),
        "within_25pct": round(within / len(rows), 3),
        "ratio_p10": round(_quantile(ratios, 0.1), 3),
        "ratio_p90": round(_quantile(ratios, 0.9), 3),
    }


def _quantile(xs: Sequence[float], q: float) -> float:
    pos = q * (len(xs) - 1)
    i = int(pos)
    j = min(i + 1, len(xs) - 1)
    return xs[i] + (xs[j] - xs[i]) * (pos - i)
