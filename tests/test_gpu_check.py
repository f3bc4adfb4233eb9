"""scripts/gpu-check --dry-run: the GPU memory check with everything but the GPU (a
recorded nvidia-smi, the CPU llama-server on a fabricated GGUF, a recorded CUDA log and a
published vLLM startup log), so the script works the first time a GPU machine runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from toolkit.engines.base import InstalledEngine

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_compares_every_term(llama_server: InstalledEngine, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "gpu-check"),
            "--dry-run",
            "--out",
            str(out),
            "--llama-server",
            str(llama_server.path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads((out / "gpu-check.json").read_text())
    assert doc["dry_run"] is True and "H100" in doc["device"]
    terms = {(r["engine"], r["term"]) for r in doc["rows"]}
    assert {("llamacpp", "weights"), ("llamacpp", "kv"), ("llamacpp", "compute")} <= terms
    assert {("vllm", "weights"), ("vllm", "available_kv"), ("vllm", "kv_tokens")} <= terms
    assert all(r["ok"] for r in doc["rows"])
    assert "planned" in res.stdout and "measured" in res.stdout


def test_without_a_gpu_it_says_to_use_the_dry_run() -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu-check")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 2 and "--dry-run" in res.stderr
