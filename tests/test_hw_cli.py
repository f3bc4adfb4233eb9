"""`deploy hw`: this machine, --hw SPEC|FILE, --save round trip, --list-gpus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.clihelp import run
from tests.hwfakes import Tools
from toolkit.hardware.detect import detect
from toolkit.hardware.model import Hardware
from toolkit.hardware.profile import PROFILE_FORMAT, load_hardware, save_profile

GiB = 1024**3
MiB = 1024**2


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tools:
    t = Tools(tmp_path / "bin", monkeypatch)
    t.bin_dir.mkdir()
    t.on_path()
    return t


def _no_gpu_here() -> bool:
    return not any(shutil.which(t) for t in ("nvidia-smi", "rocm-smi", "amd-smi")) and not (
        Path("/proc/driver/nvidia").exists()
    )


def test_this_machine_json() -> None:
    if not _no_gpu_here():
        pytest.skip("this machine has a GPU driver; the no-GPU expectations do not apply")
    res = run("hw", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["format"] == PROFILE_FORMAT and doc["source"] == "detected"
    assert doc["gpus"] == [] and doc["summary"]["gpu_count"] == 0
    assert any(n.startswith("NVML not available") for n in doc["notes"])
    assert any(n.startswith("AMD:") for n in doc["notes"])
    host = doc["host"]
    assert host["logical_cores"] == len(os.sched_getaffinity(0))
    assert host["physical_cores"] <= host["logical_cores"]
    total = psutil.virtual_memory().total
    assert 0 < host["ram_total_bytes"] <= total
    assert 0 < host["ram_available_bytes"] <= host["ram_total_bytes"]
    assert host["disk_free_bytes"] > 0 and host["numa_nodes"] >= 1


def test_spec_json_two_3090s() -> None:
    res = run("hw", "--hw", "2xrtx3090,ram=128G", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [g["total_bytes"] for g in doc["gpus"]] == [24 * GiB, 24 * GiB]
    assert [g["free_bytes"] for g in doc["gpus"]] == [24 * GiB, 24 * GiB]
    assert [g["bandwidth_bytes_s"] for g in doc["gpus"]] == [936e9, 936e9]
    assert doc["host"]["ram_total_bytes"] == 128 * GiB
    assert doc["summary"]["gpu_total_bytes"] == 48 * GiB


def test_table_output() -> None:
    res = run("hw", "--hw", "2xrtx3090,ram=128G")
    assert res.exit_code == 0
    assert "cuda:1" in res.stdout and "936 GB/s" in res.stdout and "128.0 GiB" in res.stdout


def test_save_round_trip_this_machine(tmp_path: Path) -> None:
    path = tmp_path / "box.json"
    res = run("hw", "--save", str(path))
    assert res.exit_code == 0 and "saved" in res.stderr
    saved = json.loads(path.read_text())
    loaded = load_hardware(str(path))
    assert loaded.source == "file" and loaded.origin == str(path)
    assert Hardware.from_dict(saved).host == loaded.host
    again = run("hw", "--hw", str(path), "--json")
    doc = json.loads(again.stdout)
    assert doc["host"] == saved["host"] and doc["gpus"] == saved["gpus"]
    assert doc["summary"]["fingerprint"] == detect().fingerprint()


def test_save_round_trip_is_identical_planning_input(tools: Tools, tmp_path: Path) -> None:
    """Detected MIG slices (through the fake nvidia-smi) survive save → --hw FILE unchanged."""
    tools.nvidia_smi("a100-mig")
    hw = detect()
    assert len(hw.gpus) == 4 and all(g.mig for g in hw.gpus)
    path = save_profile(hw, tmp_path / "a100.json")
    back = load_hardware(str(path))
    assert back.gpus == hw.gpus and back.host == hw.host and back.notes == hw.notes
    assert back.fingerprint() == hw.fingerprint()
    spec = load_hardware("m3-max:128G,cores=16,bw=400")
    assert load_hardware(str(save_profile(spec, tmp_path / "mac.json"))).gpus == spec.gpus


def test_detect_with_fake_smi_and_cuda_visible_devices(
    tools: Tools, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools.nvidia_smi("h100-x8")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,2")
    res = run("hw", "--json")
    doc = json.loads(res.stdout)
    assert [(g["index"], g["physical_index"]) for g in doc["gpus"]] == [(0, 6), (1, 2)]
    assert all(g["bandwidth_bytes_s"] == 3350e9 for g in doc["gpus"])
    assert any("2 of 8 devices visible" in n for n in doc["notes"])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6,2"  # read, never written


def test_env_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_HW", "cpu,ram=24G,cores=2")
    doc = json.loads(run("hw", "--json").stdout)
    assert doc["source"] == "spec" and doc["host"]["physical_cores"] == 2


def test_missing_profile_is_not_found(tmp_path: Path) -> None:
    res = run("hw", "--hw", str(tmp_path / "nope.json"))
    assert res.exit_code == 4 and "no such hardware profile" in res.stderr


def test_not_a_profile(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"host": {}}')
    res = run("hw", "--hw", str(path))
    assert res.exit_code == 2 and "not a hardware profile" in res.stderr


def test_list_gpus() -> None:
    res = run("hw", "--list-gpus", "--json")
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["h100"]["memory_bytes"] == 81559 * MiB
    assert rows["h100"]["bandwidth_bytes_s"] == 3350e9 and rows["h100"]["fp8"]
    assert rows["m3-max"]["memory_options_bytes"] == [48 * GiB, 64 * GiB, 128 * GiB]
    assert all(r["sources"] for r in rows.values())
    table = run("hw", "--list-gpus")
    assert table.exit_code == 0 and "h100-pcie" in table.stdout


def test_hw_imports_no_engine(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from toolkit.cli.main import cli\n"
        "cli.main(['hw', '--json'], standalone_mode=False)\n"
        "bad = [m for m in ('torch', 'vllm', 'llama_cpp', 'transformers') if m in sys.modules]\n"
        "print('HEAVY', bad, file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "HEAVY []" in out.stderr


def test_detection_is_fast() -> None:
    import time

    detect()  # warm imports
    start = time.perf_counter()
    detect()
    assert time.perf_counter() - start < 0.3
