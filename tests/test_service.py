"""`deploy service`: a unit written from the frozen plan (checked by systemd-analyze where
it is installed), whose own command really serves and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import plistlib
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.clihelp import run
from tests.upfixtures import read_key
from toolkit import service

pytestmark = [pytest.mark.engine, pytest.mark.llamacpp]


def _exec_start(unit: str) -> tuple[list[str], dict[str, str]]:
    argv = shlex.split(re.search(r"^ExecStart=(.*)$", unit, re.M).group(1))  # type: ignore[union-attr]
    env = dict(
        shlex.split(m)[0].split("=", 1) for m in re.findall(r"^Environment=(.*)$", unit, re.M)
    )
    return argv, env


def test_service_from_a_running_run(
    llama_server: Any,
    smollm2_gguf: Path,
    tmp_path: Path,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    res = run("up", str(smollm2_gguf), "--ctx", "1024", "--name", "svc", "--llama-server",
              str(llama_server.path), "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    port = json.loads(res.stdout)["port"]
    inst = run("service", "install", "svc", "--no-start")
    assert inst.exit_code == 0, inst.stderr
    unit_file = tmp_path / "config" / "systemd" / "user" / "deploy-svc.service"
    unit = unit_file.read_text()
    assert "Restart=on-failure" in unit and "KillSignal=SIGTERM" in unit
    if shutil.which("systemd-analyze"):
        ok, why = service.verify_unit(unit_file)
        assert ok, why
    argv, env = _exec_start(unit)
    assert argv[argv.index("--port") + 1] == str(port) and "--foreground" in argv
    frozen = json.loads(Path(argv[argv.index("--plan") + 1]).read_text())
    assert frozen["variant_id"] == json.loads(res.stdout)["name"] or frozen["ctx"] == 1024
    assert run("stop", "svc").exit_code == 0

    # What systemd would run, run for real; then what `systemctl stop` sends: SIGTERM.
    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, env={**os.environ, **env}, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def runs() -> list[dict[str, Any]]:
        return list(json.loads(run("ps", "--json").stdout))

    def wait_for(state: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
        deadline = time.monotonic() + 120
        while True:
            now = [r for r in runs() if r["state"] == state]
            if now:
                return now[0]
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    proc = start()
    try:
        ready = wait_for("ready", proc)
        key = read_key(isolated_env, "svc")
        r = httpx.get(f"http://127.0.0.1:{port}/v1/models",
                      headers={"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip
        assert r.status_code == 200 and ready["port"] == port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert gone(ready["pid"]) and runs() == []

    # A stop that comes while the model is still loading never orphans the engine.
    proc = start()
    try:
        starting = wait_for("starting", proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert gone(starting["pid"])
    assert all(r["state"] == "dead" for r in runs())
    run("stop", "svc")

    removed = run("service", "uninstall", "svc")
    assert removed.exit_code == 0 and not unit_file.exists()
    assert run("service", "status", "svc").exit_code == 4


def test_units_for_a_stack_and_for_macos(
    smollm2_gguf: Path, tmp_path: Path, isolated_env: Path
) -> None:
    f = tmp_path / "deploy.yaml"
    f.write_text(f"name: team\nmodels:\n  - {{alias: chat, model: {smollm2_gguf}}}\n")
    printed = run("service", "install", "-f", str(f), "--print")
    assert printed.exit_code == 0, printed.stderr
    assert f"-f {f.resolve()}" in printed.stdout and "--foreground" in printed.stdout
    svc = service.make_service("team", ("/usr/bin/python3", "-m", "toolkit", "up"),
                               scope="user", description="x", kind="launchd")  # fmt: skip
    doc = plistlib.loads(svc.text.encode())
    assert doc["Label"] == "com.deploy.team" and doc["KeepAlive"] == {"SuccessfulExit": False}
    assert doc["EnvironmentVariables"]["DEPLOY_HOME"] == str(isolated_env)
    assert run("service", "install", "--print").exit_code == 2
