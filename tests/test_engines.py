"""Engines: the pure Plan → argv/env builders, lookup and install errors (no engine runs)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from tests.clihelp import run
from toolkit.engines import InstalledEngine, Launch, TlsFiles, build_launch, find_engine
from toolkit.engines.base import ENGINE_NAMES, INSTALL_HINT, read_record, write_record
from toolkit.engines.flags import parse_help, parse_vllm_flag_index, unknown_flags
from toolkit.engines.install import (
    cmake_args,
    default_backend,
    find_nvcc,
    llama_cpp_tree,
    nvidia_gpu_present,
)
from toolkit.engines.llamacpp import python_refusal
from toolkit.engines.serving import NONE, RecipeServing, recipe_serving
from toolkit.errors import EngineError, UsageError
from toolkit.planner.types import (
    DeviceMemory,
    LlamaCppSettings,
    Plan,
    SpeedEstimate,
    VllmSettings,
)

GOLDEN = Path(__file__).parent / "golden" / "argv"
VLLM_032_FLAGS = parse_vllm_flag_index((GOLDEN / "vllm-0.32.0-flags.txt").read_text())
SECRET = "sk-test-7d1f0c2a-never-in-argv"

LLAMA = InstalledEngine(
    name="llamacpp",
    path=Path("/opt/engines/llamacpp/bin/llama-server"),
    version="1 (abc)",
    backend="CPU",
)
LLAMA_CUDA = replace(LLAMA, backend="CUDA")
LLAMA_PY = InstalledEngine(
    name="llamacpp-python",
    path=Path("/opt/engines/lcp/venv/bin/python"),
    version="0.3.36",
    backend="CPU",
    python=Path("/opt/engines/lcp/venv/bin/python"),
    distribution="llama-cpp-python",
)
VLLM_CPU = InstalledEngine(
    name="vllm",
    path=Path("/opt/engines/vllm/venv/bin/python"),
    version="0.32.0",
    backend="CPU",
    python=Path("/opt/engines/vllm/venv/bin/python"),
    distribution="vllm-cpu",
    flags=VLLM_032_FLAGS,
)
VLLM_CUDA = InstalledEngine(
    name="vllm",
    path=Path("/opt/engines/vllm/venv/bin/vllm"),
    version="0.33.0",
    backend="CUDA",
    python=Path("/opt/engines/vllm/venv/bin/python"),
    distribution="vllm",
    flags=VLLM_032_FLAGS,
)


def make_plan(engine: str = "llamacpp", **kw: object) -> Plan:
    base: dict[str, object] = {
        "model_id": "smollm2-135m",
        "variant_id": "smollm2-135m:q4_1" if engine == "llamacpp" else "smollm2-135m:bf16",
        "engine": engine,
        "placement": "cpu",
        "devices": ("cpu",),
        "ctx": 2048,
        "concurrency": 1,
        "kv_dtype": "f16",
        "memory": (DeviceMemory("cpu", 98_362_432, 47_185_920, 0, 0, 145_548_352, 20 << 30),),
        "speed": SpeedEstimate(None, None, None, "test"),
        "kernel": "gguf cpu",
        "format": "gguf" if engine == "llamacpp" else "bf16",
        "quant": "q4_1" if engine == "llamacpp" else "bf16",
        "download_bytes": None,
        "weights_bytes": 98_362_432,
        "kv_bytes_per_token": 23_040,
        "llamacpp": LlamaCppSettings(threads=2) if engine == "llamacpp" else None,
        "vllm": VllmSettings(device="cpu", enforce_eager=True, kv_cache_bytes=1 << 30)
        if engine == "vllm"
        else None,
    }
    base.update(kw)
    return Plan(**base)  # type: ignore[arg-type]


def launch(plan: Plan, engine: InstalledEngine, tmp_path: Path, **kw: object) -> Launch:
    key = tmp_path / "key"
    key.write_text(SECRET + "\n")
    args: dict[str, object] = {
        "model_path": tmp_path / "model",
        "host": "127.0.0.1",
        "port": 8123,
        "api_key_file": key,
        "run_dir": tmp_path / "run",
        # the recipe lookup reads the catalog; tests of recipe flags pass serving=None
        "serving": NONE,
    }
    args.update(kw)
    return build_launch(plan, engine, **args)  # type: ignore[arg-type]


def opt(argv: tuple[str, ...], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# ------------------------------------------------------------------ llama-server


def test_llama_server_argv_says_the_plan(tmp_path: Path) -> None:
    plan = make_plan(
        ctx=4096,
        concurrency=4,
        llamacpp=LlamaCppSettings(
            n_gpu_layers=20,
            n_cpu_moe=7,
            tensor_split=(0.6, 0.4),
            flash_attn="on",
            batch=1024,
            ubatch=256,
            threads=6,
            slots=4,
            mmap=False,
        ),
        kv_dtype="q8_0",
        devices=("cuda:0", "cuda:1", "cpu"),
    )
    argv = launch(plan, LLAMA_CUDA, tmp_path).argv
    assert argv[0] == str(LLAMA.path)
    assert opt(argv, "--model") == str(tmp_path / "model")
    assert int(opt(argv, "--ctx-size")) == 4096 * 4  # ctx per slot × slots
    assert opt(argv, "--parallel") == "4"
    assert opt(argv, "--n-gpu-layers") == "20"
    assert opt(argv, "--n-cpu-moe") == "7"
    assert opt(argv, "--tensor-split") == "0.6,0.4"
    assert opt(argv, "--threads") == "6"
    assert (opt(argv, "--batch-size"), opt(argv, "--ubatch-size")) == ("1024", "256")
    assert opt(argv, "--flash-attn") == "on"
    assert opt(argv, "--cache-type-k") == opt(argv, "--cache-type-v") == "q8_0"
    assert "--no-mmap" in argv
    assert opt(argv, "--host") == "127.0.0.1" and opt(argv, "--port") == "8123"


def test_llama_server_omits_what_the_plan_does_not_use(tmp_path: Path) -> None:
    argv = launch(make_plan(llamacpp=LlamaCppSettings()), LLAMA, tmp_path).argv
    for flag in ("--n-cpu-moe", "--tensor-split", "--threads", "--no-mmap", "--ssl-key-file"):
        assert flag not in argv


def test_recipe_flags_and_sampling_pass_through(tmp_path: Path) -> None:
    plan = make_plan(model_id="qwen3-coder-30b-a3b", variant_id="qwen3-coder-30b-a3b:q4_k_m")
    serving = recipe_serving(plan, "llamacpp")
    assert serving.flags.get("--jinja") is True and serving.sampling is not None
    argv = launch(plan, LLAMA, tmp_path, serving=None).argv
    assert "--jinja" in argv
    s = serving.sampling
    assert float(opt(argv, "--temp")) == s.temperature
    assert float(opt(argv, "--top-p")) == s.top_p
    assert int(opt(argv, "--top-k")) == s.top_k
    assert float(opt(argv, "--repeat-penalty")) == s.repetition_penalty


def test_fp8_kv_is_refused_for_llama_cpp(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no fp8 KV cache type"):
        launch(make_plan(kv_dtype="fp8"), LLAMA, tmp_path)


def test_tls_files_are_handed_to_each_engine(tmp_path: Path) -> None:
    tls = TlsFiles(cert=tmp_path / "c.pem", key=tmp_path / "k.pem")
    cases = [
        (make_plan(), LLAMA, ("--ssl-key-file", "--ssl-cert-file")),
        (make_plan(), LLAMA_PY, ("--ssl_keyfile", "--ssl_certfile")),
        (make_plan("vllm"), VLLM_CPU, ("--ssl-keyfile", "--ssl-certfile")),
    ]
    for plan, engine, (key_flag, cert_flag) in cases:
        la = launch(plan, engine, tmp_path, tls=tls)
        assert opt(la.argv, key_flag) == str(tls.key)
        assert opt(la.argv, cert_flag) == str(tls.cert)
        assert la.base_url.startswith("https://")


# ------------------------------------------------------------------ secrets and privacy


@pytest.mark.parametrize(
    ("engine", "plan_engine"),
    [(LLAMA, "llamacpp"), (LLAMA_PY, "llamacpp"), (VLLM_CPU, "vllm"), (VLLM_CUDA, "vllm")],
)
def test_api_key_never_on_the_command_line(
    tmp_path: Path, engine: InstalledEngine, plan_engine: str
) -> None:
    plan = make_plan(plan_engine)
    if engine is VLLM_CUDA:
        plan = replace(plan, devices=("cuda:0",), vllm=VllmSettings())
    la = launch(plan, engine, tmp_path)
    assert not any(SECRET in a for a in la.argv)
    assert not any(SECRET in v for v in la.env.values())
    assert SECRET not in json.dumps(la.redacted())
    assert "--api-key" not in la.argv
    # …yet the engine gets it, by file: llama-server's own, or the one deploy's key guard
    # reads (vLLM, llama-cpp-python), whose engines' own single-key checks stay off.
    if engine.name == "llamacpp" and engine is not LLAMA_PY:
        assert Path(opt(la.argv, "--api-key-file")).read_text().strip() == SECRET
    else:
        env = la.process_env({})
        assert Path(env["DEPLOY_API_KEYS_FILE"]).read_text().strip() == SECRET
        assert "VLLM_API_KEY" not in env and "API_KEY" not in env
        guard = Path(env["PYTHONPATH"]) / "deploy_vllm_guard.py"
        assert guard in la.files and "RequireKey" in la.files[guard]


@pytest.mark.parametrize("engine", [LLAMA, LLAMA_PY, VLLM_CPU])
def test_private_by_default_online_on_request(tmp_path: Path, engine: InstalledEngine) -> None:
    plan = make_plan("vllm" if engine.name == "vllm" else "llamacpp")
    env = launch(plan, engine, tmp_path).env
    for var in ("HF_HUB_OFFLINE", "DO_NOT_TRACK", "VLLM_NO_USAGE_STATS"):
        assert env[var] == "1"
    online = launch(plan, engine, tmp_path, online=True)
    assert "HF_HUB_OFFLINE" not in online.env and online.env["DO_NOT_TRACK"] == "1"
    if engine.name == "llamacpp":
        assert "--offline" in launch(plan, engine, tmp_path).argv
        assert "--offline" not in online.argv


def test_vllm_keeps_its_files_in_the_run_dir(tmp_path: Path) -> None:
    la = launch(make_plan("vllm"), VLLM_CPU, tmp_path)
    env = la.env
    assert env["VLLM_HOST_IP"] == "127.0.0.1"
    assert not (tmp_path / "run" / "tmp").exists()
    la.process_env({})  # at start: the folders the engine expects are made
    assert all(d.is_dir() and d.is_relative_to(tmp_path / "run") for d in la.dirs)
    assert Path(la.process_env({})["TMPDIR"]).is_dir()
    for var in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TMPDIR"):
        assert Path(env[var]).is_relative_to(tmp_path / "run")


def test_devices_are_pinned(tmp_path: Path) -> None:
    gpu_plan = make_plan(devices=("cuda:1", "cuda:3"), placement="layer_split")
    assert launch(gpu_plan, LLAMA_CUDA, tmp_path).env["CUDA_VISIBLE_DEVICES"] == "1,3"
    # a CPU plan on a CUDA build hides the GPUs, so it cannot take one by accident
    assert launch(make_plan(), LLAMA_CUDA, tmp_path).env["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in launch(make_plan(), LLAMA, tmp_path).env
    vplan = make_plan("vllm", devices=("cuda:2",), vllm=VllmSettings())
    assert launch(vplan, VLLM_CUDA, tmp_path).env["CUDA_VISIBLE_DEVICES"] == "2"


# ------------------------------------------------------------------ llama-cpp-python


def test_python_fallback_argv(tmp_path: Path) -> None:
    la = launch(make_plan(kv_dtype="q8_0"), LLAMA_PY, tmp_path)
    # llama_cpp.server, run by deploy's wrapper that adds the key guard to its app
    assert list(la.argv[:3]) == [str(LLAMA_PY.python), "-m", "deploy_llamacpp_python"]
    main = next(t for p, t in la.files.items() if p.name == "deploy_llamacpp_python.py")
    assert 'run_module("llama_cpp.server"' in main and "add_middleware(RequireKey)" in main
    assert opt(la.argv, "--n_ctx") == "2048"
    assert opt(la.argv, "--n_threads") == "2"
    assert opt(la.argv, "--type_k") == "8"  # ggml type number of q8_0
    assert opt(la.argv, "--interrupt_requests") == "false"
    # its __main__ lets HOST/PORT in the environment override the flags: pinned to match
    assert (la.env["HOST"], la.env["PORT"]) == ("127.0.0.1", "8123")


def test_python_fallback_refuses_slots_and_moe_offload(tmp_path: Path) -> None:
    assert python_refusal(make_plan()) is None
    slots = make_plan(concurrency=4, llamacpp=LlamaCppSettings(slots=4))
    moe = make_plan(llamacpp=LlamaCppSettings(n_cpu_moe=12))
    for plan, reason in ((slots, "one at a time"), (moe, "no MoE-expert offload")):
        assert reason in (python_refusal(plan) or "")
        with pytest.raises(EngineError, match=reason) as info:
            launch(plan, LLAMA_PY, tmp_path)
        assert info.value.exit_code == 5
        assert "deploy engines install llamacpp" in (info.value.hint or "")
        # the native server runs the same plan
        launch(plan, LLAMA, tmp_path)


# ------------------------------------------------------------------ vLLM


def test_vllm_cpu_rules(tmp_path: Path) -> None:
    plan = make_plan(
        "vllm",
        vllm=VllmSettings(
            device="cpu", enforce_eager=True, dtype="bfloat16", kv_cache_bytes=3 << 29
        ),
    )
    la = launch(plan, VLLM_CPU, tmp_path)
    # vllm-cpu's console script cannot start: the module entry point is used
    assert list(la.argv[1:3]) == ["-m", "vllm.entrypoints.openai.api_server"]
    assert opt(la.argv, "--dtype") == "float32" and "--enforce-eager" in la.argv
    assert any("float32" in n for n in la.notes)
    assert la.env["VLLM_CPU_KVCACHE_SPACE"] == "2"  # 1.5 GiB rounded up to whole GiB
    assert "--gpu-memory-utilization" not in la.argv
    assert opt(la.argv, "--max-model-len") == "2048"


def test_vllm_cpu_without_kv_size_takes_it_from_the_memory_line(tmp_path: Path) -> None:
    plan = make_plan("vllm", vllm=VllmSettings(device="cpu"))
    assert launch(plan, VLLM_CPU, tmp_path).env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    bare = replace(plan, memory=())
    with pytest.raises(UsageError, match="20 GiB"):
        launch(bare, VLLM_CPU, tmp_path)


def test_vllm_gpu_argv(tmp_path: Path) -> None:
    plan = make_plan(
        "vllm",
        model_id="qwen3-coder-30b-a3b",
        variant_id="qwen3-coder-30b-a3b:fp8",
        devices=("cuda:0", "cuda:1"),
        kv_dtype="fp8",
        vllm=VllmSettings(
            tensor_parallel=2,
            expert_parallel=True,
            gpu_memory_utilization=0.92,
            quantization="fp8",
            max_num_seqs=16,
            dtype="bfloat16",
        ),
    )
    la = launch(plan, VLLM_CUDA, tmp_path, serving=None)
    assert list(la.argv[:3]) == [str(VLLM_CUDA.path), "serve", str(tmp_path / "model")]
    assert opt(la.argv, "--tensor-parallel-size") == "2"
    assert "--enable-expert-parallel" in la.argv
    assert opt(la.argv, "--gpu-memory-utilization") == "0.92"
    assert opt(la.argv, "--quantization") == "fp8"
    assert opt(la.argv, "--kv-cache-dtype") == "fp8"
    assert opt(la.argv, "--max-num-seqs") == "16"
    assert opt(la.argv, "--tool-call-parser") == "qwen3_coder"
    assert "--enable-auto-tool-choice" in la.argv
    gen = json.loads(opt(la.argv, "--override-generation-config"))
    assert gen["temperature"] == recipe_serving(plan, "vllm").sampling.temperature  # type: ignore[union-attr]
    assert "VLLM_CPU_KVCACHE_SPACE" not in la.env


def test_vllm_cpu_plan_refused_on_cuda_build(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="CUDA build"):
        launch(make_plan("vllm"), VLLM_CUDA, tmp_path)


def test_unknown_flag_is_refused_with_the_engine_version(tmp_path: Path) -> None:
    serving = RecipeServing(flags={"--disable-prefix-caching": True})
    with pytest.raises(EngineError, match=r"0\.32\.0 does not accept: --disable-prefix-caching"):
        launch(make_plan("vllm"), VLLM_CPU, tmp_path, serving=serving)
    ok = RecipeServing(flags={"--no-enable-prefix-caching": True})
    assert (
        "--no-enable-prefix-caching"
        in launch(make_plan("vllm"), VLLM_CPU, tmp_path, serving=ok).argv
    )


def test_plan_for_another_engine_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="plan is for vllm"):
        launch(make_plan("vllm"), LLAMA, tmp_path, serving=NONE)


# ------------------------------------------------------------------ flag lists


def test_vllm_flag_normalisation() -> None:
    argv = [
        "py",
        "-m",
        "mod",
        "--max_model_len",
        "8",
        "--compilation-config.mode",
        "0",
        "-O0",
        "--port=5",
        "--nope",
    ]
    assert unknown_flags(argv, VLLM_032_FLAGS, engine="vllm") == ["--nope"]


def test_parse_help_reads_both_styles() -> None:
    text = (
        "-c,    --ctx-size N                    size of the prompt context\n"
        "-fa,   --flash-attn [on|off|auto]      set Flash Attention use\n"
        "  --enforce-eager, --no-enforce-eager\n"
        "  --tensor-parallel-size TENSOR_PARALLEL_SIZE, -tp TENSOR_PARALLEL_SIZE\n"
        "                        use -x for y\n"
    )
    assert parse_help(text) == {
        "-c",
        "--ctx-size",
        "-fa",
        "--flash-attn",
        "--enforce-eager",
        "--no-enforce-eager",
        "--tensor-parallel-size",
        "-tp",
    }


# ------------------------------------------------------------------ lookup and install


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_missing_engine_names_the_install_command(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    if name != "llamacpp":
        import importlib.util

        module = "llama_cpp" if name == "llamacpp-python" else "vllm"
        if importlib.util.find_spec(module) is not None:
            pytest.fail(f"{module} is importable in the test venv; it must not be")
    with pytest.raises(EngineError) as info:
        find_engine(name)
    assert info.value.exit_code == 5
    assert INSTALL_HINT[name] in (info.value.hint or "")
    assert f"deploy engines install {name}" in (info.value.hint or "")
    if name == "llamacpp-python":
        assert "deploy-toolkit[llamacpp]" in (info.value.hint or "")


def test_unknown_engine_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        find_engine("ollama")


def test_installed_engine_record_round_trip_and_listing(tmp_path: Path) -> None:
    home = Path(os.environ["DEPLOY_HOME"]) / "engines" / "llamacpp"
    binary = home / "bin" / "llama-server"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    engine = replace(LLAMA, path=binary, details={"build_seconds": 1.5})
    write_record(home, engine)
    found = read_record(home)
    assert found is not None
    assert (found.path, found.version, found.backend) == (binary, "1 (abc)", "CPU")
    assert found == find_engine("llamacpp")
    res = run("engines", "--json")
    assert res.exit_code == 0
    rows = json.loads(res.stdout)
    assert [(r["name"], r["version"], r["backend"], r["path"]) for r in rows] == [
        ("llamacpp", "1 (abc)", "CPU", str(binary))
    ]
    table = run("engines")
    assert "llamacpp" in table.stdout and "1 (abc)" in table.stdout


def test_cli_lists_nothing_when_nothing_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    res = run("engines", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout) == []


def test_install_source_without_llama_cpp_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no llama\.cpp source"):
        llama_cpp_tree(tmp_path)
    res = run("engines", "install", "llamacpp", "--source", str(tmp_path))
    assert res.exit_code == 2 and "--source" in res.stderr


def test_build_never_uses_march_native() -> None:
    for backend in ("CPU", "CUDA", "Metal", "ROCm"):
        args = cmake_args(backend)  # type: ignore[arg-type]
        assert "-DGGML_NATIVE=OFF" in args
        assert not any("march=native" in a for a in args)


def test_default_backend_follows_the_machine() -> None:
    backend, why = default_backend()
    expected = "CUDA" if nvidia_gpu_present() and find_nvcc() else backend
    assert backend == expected and why
