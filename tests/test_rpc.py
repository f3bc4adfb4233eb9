"""llama.cpp RPC for real on this machine: two `deploy rpc-worker` processes on
127.0.0.1 and `deploy up --rpc` serving SmolLM2 split across them; the devices come from
llama-server itself, and each worker's buffers in the log match the plan's split.
rpc-server has no authentication, so deploy binds it to loopback or private addresses only."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import run
from toolkit.errors import UsageError
from toolkit.rpc import check_bind, endpoints

pytestmark = [pytest.mark.engine, pytest.mark.llamacpp]
MiB = 2**20


def test_workers_bind_only_where_that_is_safe() -> None:
    for ok in ("127.0.0.1", "10.0.0.5", "192.168.1.20", "::1", "localhost"):
        check_bind(ok, False)
    for bad in ("0.0.0.0", "8.8.8.8", "::", "example.com"):
        with pytest.raises(UsageError):
            check_bind(bad, False)
    check_bind("0.0.0.0", True)
    assert endpoints("10.0.0.2:50052, 10.0.0.3:50052") == ("10.0.0.2:50052", "10.0.0.3:50052")
    for bad in ("10.0.0.2", "host:99999", ""):
        with pytest.raises(UsageError):
            endpoints(bad)
    res = run("rpc-worker", "--host", "0.0.0.0")
    assert res.exit_code == 2 and "no authentication" in res.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_model_split_over_two_workers(
    llama_server: Any, smollm2_gguf: Path, isolated_env: Path
) -> None:
    from openai import OpenAI

    engines = Path(llama_server.path).parents[2]
    env = {**os.environ, "DEPLOY_ENGINES_DIR": str(engines), "DEPLOY_HOME": str(isolated_env)}
    ports = [_free_port(), _free_port()]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "toolkit",
                "rpc-worker",
                "--host",
                "127.0.0.1",
                "--port",
                str(p),
                "--threads",
                "1",
            ],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in ports
    ]
    try:
        deadline = time.monotonic() + 30
        while not all(_listening(p) for p in ports):
            assert time.monotonic() < deadline, "rpc-server did not listen"
            time.sleep(0.2)
        rpc = ",".join(f"127.0.0.1:{p}" for p in ports)
        res = run("up", str(smollm2_gguf), "--ctx", "1024", "--name", "split", "--rpc", rpc,
                  "--llama-server", str(llama_server.path), "--json")  # fmt: skip
        assert res.exit_code == 0, res.stderr
        doc = json.loads(res.stdout)
        from toolkit.runs import records

        rec = json.loads((isolated_env / "runs" / "split" / records.RECORD_FILE).read_text())
        assert rec["argv"][rec["argv"].index("--rpc") + 1] == rpc
        plan = rec["plan"]
        assert plan["llamacpp"]["rpc"] == rpc.split(",")
        key = (isolated_env / "keys" / "split.key").read_text().strip()
        client = OpenAI(base_url=doc["base_url"], api_key=key, max_retries=2)
        reply = client.chat.completions.create(
            model=doc["served_model_name"],
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
        )
        assert reply.choices[0].message.content
        log = (isolated_env / "runs" / "split" / records.LOG_FILE).read_text(errors="replace")

        def logged(kind: str) -> list[float]:
            """The buffer each worker logged, in --rpc order (the log's order varies)."""
            pat = rf"RPC\d*\[([^\]]+)\] {kind} buffer size =\s+([\d.]+) MiB"
            found = dict(re.findall(pat, log))
            return [float(found[e]) for e in rpc.split(",") if e in found]

        gpus = [d for d in plan["memory"] if d["id"] != "cpu"]
        assert len(gpus) == 2, plan["memory"]
        # weights and KV per worker: as llama.cpp allocates them (its log rounds to 0.01 MiB)
        for kind, field in (("model", "weights_bytes"), ("KV", "kv_cache_bytes")):
            got = logged(kind)
            want = [d[field] / MiB for d in gpus]
            assert len(got) == 2, (kind, log[-3000:])
            for g, w in zip(got, want, strict=True):
                assert abs(g - w) <= 0.01, (kind, got, want)
        # compute buffers (pipeline parallelism over the two workers): within 10 %
        for g, d in zip(logged("compute"), gpus, strict=True):
            assert abs(g - d["compute_bytes"] / MiB) <= 0.1 * g, (g, d)
    finally:
        run("stop", "split")
        for w in workers:
            w.terminate()
            w.wait(10)
