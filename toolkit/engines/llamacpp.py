"""llama.cpp: Plan → argv/env for the native `llama-server`, and for the
`python -m llama_cpp.server` fallback (llama-cpp-python), which is refused for plans it
cannot serve (parallel slots, MoE-expert offload).

Flag names are the ones llama-server's own `--help` lists (tools/server, common/arg.cpp);
a test checks every flag rendered here against the help of the binary deploy builds.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from toolkit.engines import vllm_guard
from toolkit.engines.base import (
    Backend,
    InstalledEngine,
    Launch,
    Origin,
    TlsFiles,
    private_env,
)
from toolkit.engines.flags import parse_help
from toolkit.engines.serving import RecipeServing, render_flags
from toolkit.errors import EngineError, UsageError
from toolkit.planner.types import LlamaCppSettings, Plan

#: Plan KV dtype → llama.cpp cache type name (-ctk/-ctv). fp8 has no llama.cpp cache type.
CACHE_TYPE: dict[str, str] = {
    "f16": "f16",
    "bf16": "bf16",
    "f32": "f32",
    "q8_0": "q8_0",
    "q4_0": "q4_0",
}
#: The same as ggml type numbers, which llama-cpp-python's --type_k/--type_v take
#: (ggml.h enum ggml_type: F32=0, F16=1, Q4_0=2, Q8_0=8, BF16=30).
GGML_TYPE: dict[str, int] = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "bf16": 30}


def parse_help_flags(help_text: str) -> frozenset[str]:
    """Option names from llama-server's --help (`-c,    --ctx-size N   description`)."""
    return parse_help(help_text)


#: Seconds a llama-server --version/--help/--list-devices may take (then its whole process
#: group is killed).
PROBE_TIMEOUT_S = 60.0


def run_binary(path: Path, *args: str) -> str:
    try:
        from toolkit.runs.process import run_bounded

        proc = run_bounded([str(path), *args], timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EngineError(
            f"cannot run {path}: {exc}", hint="deploy engines install llamacpp"
        ) from exc
    return proc.stdout + proc.stderr


def binary_version(path: Path) -> str:
    """`version: 1 (0c1e570)` → '1 (0c1e570)'."""
    out = run_binary(path, "--version")
    m = re.search(r"version:\s*(.+)", out)
    if not m:
        raise EngineError(
            f"{path} --version printed no version: {out.strip()[:200]!r}",
            hint="deploy engines install llamacpp",
        )
    return m.group(1).strip()


def binary_backend(path: Path) -> Backend:
    """From `--list-devices`: CUDA0 / ROCm0 / Metal / none (CPU)."""
    out = run_binary(path, "--list-devices")
    if re.search(r"^\s*CUDA\d", out, re.M):
        return "CUDA"
    if re.search(r"^\s*(ROCm|HIP)\d", out, re.M):
        return "ROCm"
    if re.search(r"^\s*(Metal|MTL)\d?", out, re.M):
        return "Metal"
    return "CPU"


def describe_binary(path: Path, *, origin: Origin) -> InstalledEngine:
    """An InstalledEngine for a llama-server binary found outside deploy's engines dir."""
    return InstalledEngine(
        name="llamacpp",
        path=path,
        version=binary_version(path),
        backend=binary_backend(path),
        origin=origin,
        flags=parse_help_flags(run_binary(path, "--help")),
    )


def _settings(plan: Plan) -> LlamaCppSettings:
    if plan.llamacpp is None:
        raise UsageError(
            f"plan for {plan.variant_id} has no llama.cpp settings (engine {plan.engine})",
            hint=f"deploy plan {plan.model_id} --engine llamacpp",
        )
    return plan.llamacpp


def _cache_type(plan: Plan) -> str:
    try:
        return CACHE_TYPE[plan.kv_dtype]
    except KeyError:
        raise UsageError(
            f"llama.cpp has no {plan.kv_dtype} KV cache type (it has {', '.join(CACHE_TYPE)})",
            hint=f"deploy plan {plan.model_id} --engine llamacpp --kv-dtype q8_0",
        ) from None


def _sampling_args(serving: RecipeServing) -> list[str]:
    s = serving.sampling
    if s is None:
        return []
    argv: list[str] = []
    for flag, value in (
        ("--temp", s.temperature),
        ("--top-p", s.top_p),
        ("--top-k", s.top_k),
        ("--min-p", s.min_p),
        ("--repeat-penalty", s.repetition_penalty),
    ):
        if value is not None:
            argv += [flag, _num(value)]
    return argv


def _num(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def native_launch(
    plan: Plan,
    installed: InstalledEngine,
    *,
    model_path: Path,
    served_model_name: str,
    host: str,
    port: int,
    api_key_file: Path,
    online: bool,
    tls: TlsFiles | None,
    serving: RecipeServing,
) -> Launch:
    s = _settings(plan)
    cache = _cache_type(plan)
    argv: list[str] = [
        str(installed.path),
        "--model",
        str(model_path),
        "--alias",
        served_model_name,
        "--host",
        host,
        "--port",
        str(port),
        # -c is the total context; each of the -np slots gets ctx.
        "--ctx-size",
        str(plan.ctx * s.slots),
        "--parallel",
        str(s.slots),
        "--n-gpu-layers",
        str(s.n_gpu_layers),
    ]
    if s.n_cpu_moe:
        argv += ["--n-cpu-moe", str(s.n_cpu_moe)]
    if s.rpc:
        argv += ["--rpc", ",".join(s.rpc)]
    if s.tensor_split:
        argv += ["--tensor-split", ",".join(_num(x) for x in s.tensor_split)]
    if s.threads is not None:
        argv += ["--threads", str(s.threads)]
    argv += [
        "--batch-size",
        str(s.batch),
        "--ubatch-size",
        str(s.ubatch),
        "--flash-attn",
        s.flash_attn,
        "--cache-type-k",
        cache,
        "--cache-type-v",
        cache,
    ]
    if not s.mmap:
        argv.append("--no-mmap")

    # The RAM caches the plan budgeted (llama-server's defaults: 8 GiB, 32 checkpoints);
    # left out for a binary whose --help does not list them (it has no such caches).
    def known(flag: str) -> bool:
        return not installed.flags or flag in installed.flags

    if s.cache_ram_mib is not None and known("--cache-ram"):
        argv += ["--cache-ram", str(s.cache_ram_mib)]
    if s.ctx_checkpoints is not None and known("--ctx-checkpoints"):
        argv += ["--ctx-checkpoints", str(s.ctx_checkpoints)]
    if not online:
        argv.append("--offline")
    # Prometheus counters on /metrics (behind the API key like every other endpoint):
    # what `deploy ps` shows as tokens out and tok/s.
    if known("--metrics"):
        argv.append("--metrics")
    # Level 4 makes llama-server log its model/KV/compute buffer sizes at startup: the
    # memory report `deploy up` turns into a calibration record (no prompt text is logged).
    argv += ["--log-verbosity", "4"]
    argv += _sampling_args(serving)
    argv += render_flags(serving.flags)
    argv += ["--api-key-file", str(api_key_file)]
    if tls is not None:
        argv += ["--ssl-key-file", str(tls.key), "--ssl-cert-file", str(tls.cert)]
    env = private_env(online)
    env.update(serving.env)
    return Launch(
        engine="llamacpp",
        engine_version=installed.version,
        argv=tuple(argv),
        env=env,
        served_model_name=served_model_name,
        host=host,
        port=port,
        scheme="https" if tls else "http",
        health_path="/health",
        ready_path="/v1/models",
    )


def python_refusal(plan: Plan) -> str | None:
    """Why llama-cpp-python's server cannot serve this plan, or None when it can."""
    s = _settings(plan)
    if s.slots > 1 or plan.concurrency > 1:
        return (
            f"the plan serves {max(s.slots, plan.concurrency)} requests at once; "
            "llama-cpp-python's server handles one at a time (no parallel slots)"
        )
    if s.n_cpu_moe:
        return (
            f"the plan keeps the MoE experts of {s.n_cpu_moe} layers on the CPU "
            "(--n-cpu-moe); llama-cpp-python's server has no MoE-expert offload"
        )
    return None


def python_launch(
    plan: Plan,
    installed: InstalledEngine,
    *,
    model_path: Path,
    served_model_name: str,
    host: str,
    port: int,
    api_key_file: Path,
    online: bool,
    tls: TlsFiles | None,
    serving: RecipeServing,
    run_dir: Path,
) -> Launch:
    reason = python_refusal(plan)
    if reason is not None:
        raise EngineError(
            f"llama-cpp-python cannot run this plan: {reason}",
            hint="deploy engines install llamacpp   (the native llama-server)",
        )
    s = _settings(plan)
    cache = _cache_type(plan)
    assert installed.python is not None
    argv: list[str] = [
        str(installed.python),
        "-m",
        vllm_guard.PYTHON_MAIN_MODULE,
        "--model",
        str(model_path),
        "--model_alias",
        served_model_name,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(plan.ctx),
        "--n_gpu_layers",
        str(s.n_gpu_layers),
        "--n_batch",
        str(s.batch),
        "--n_ubatch",
        str(s.ubatch),
    ]
    if s.threads is not None:
        argv += ["--n_threads", str(s.threads), "--n_threads_batch", str(s.threads)]
    if s.tensor_split:
        argv += ["--tensor_split", *(_num(x) for x in s.tensor_split)]
    if s.flash_attn != "auto":
        argv += ["--flash_attn", "true" if s.flash_attn == "on" else "false"]
    if cache != "f16":
        argv += ["--type_k", str(GGML_TYPE[cache]), "--type_v", str(GGML_TYPE[cache])]
    if not s.mmap:
        argv += ["--use_mmap", "false"]
    # Its default lets a new request cancel the one running; a server must not.
    argv += ["--interrupt_requests", "false"]
    if tls is not None:
        argv += ["--ssl_keyfile", str(tls.key), "--ssl_certfile", str(tls.cert)]
    env = private_env(online)
    # llama_cpp.server reads its settings from the environment too (pydantic-settings,
    # no prefix), and its __main__ lets HOST/PORT override --host/--port: pin both.
    env["HOST"] = host
    env["PORT"] = str(port)
    # The server's own check takes one key; deploy's guard (toolkit/engines/vllm_guard.py)
    # takes the run's key and the team's from this file, read again when it changes, on
    # every path. PYTHONPATH holds only the guard's two modules.
    guard_dir = run_dir / "guard"
    env["PYTHONPATH"] = str(guard_dir)
    env[vllm_guard.KEYS_FILE_VAR] = str(api_key_file)
    notes: list[str] = []
    if serving.sampling is not None:
        notes.append("llama-cpp-python's server has no sampling-default flags; clients set them")
    if serving.flags:
        notes.append(
            "recipe llama.cpp flags ("
            + ", ".join(serving.flags)
            + ") are for llama-server and are not passed to llama-cpp-python"
        )
    return Launch(
        engine="llamacpp-python",
        engine_version=installed.version,
        argv=tuple(argv),
        env=env,
        served_model_name=served_model_name,
        host=host,
        port=port,
        scheme="https" if tls else "http",
        health_path="/v1/models",
        ready_path="/v1/models",
        notes=tuple(notes),
        files={
            guard_dir / f"{vllm_guard.MODULE}.py": vllm_guard.SOURCE,
            guard_dir / f"{vllm_guard.PYTHON_MAIN_MODULE}.py": vllm_guard.PYTHON_MAIN,
        },
    )
