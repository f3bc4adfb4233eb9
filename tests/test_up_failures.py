"""`deploy up` failure paths, one test each, against the real llama-server where a server
is involved: the right exit code, a message naming the cause and the next command, and
nothing left running."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import run
from tests.upfixtures import pids_in_group, smollm2_plan, write_plan

pytestmark = [pytest.mark.engine, pytest.mark.llamacpp]


def _binary(llama_server: Any) -> str:
    return str(getattr(llama_server, "path", llama_server))


def _up(llama_server: Any, *args: str) -> Any:
    return run("up", *args, "--llama-server", _binary(llama_server))


def test_port_already_taken(llama_server: Any, smollm2_gguf: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = _up(llama_server, str(smollm2_gguf), "--port", str(port))
    assert res.exit_code == 7
    assert f"port {port} on 127.0.0.1 is already in use" in res.stderr
    assert f"pid {os.getpid()}" in res.stderr  # who holds it
    assert json.loads(run("ps", "--json").stdout) == []


def test_model_file_missing(llama_server: Any, smollm2_gguf: Path, tmp_path: Path) -> None:
    plan = smollm2_plan(smollm2_gguf, ctx=512)
    gone = replace(plan, model_path=str(tmp_path / "moved-away.gguf"))
    res = _up(llama_server, "--plan", str(write_plan(gone, tmp_path / "plan.json")))
    assert res.exit_code == 4
    assert "moved-away.gguf does not exist" in res.stderr


def test_recipe_files_not_pulled(llama_server: Any) -> None:
    res = _up(llama_server, "smollm2-135m:q4_1")
    assert res.exit_code == 4, res.stderr
    assert "deploy pull smollm2-135m:q4_1" in res.stderr


def test_engine_not_installed(tmp_path: Path, smollm2_gguf: Path, monkeypatch: Any) -> None:
    import importlib.util

    monkeypatch.setenv("DEPLOY_ENGINES_DIR", str(tmp_path / "no-engines"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    res = run("up", str(smollm2_gguf), "--ctx", "512")
    if importlib.util.find_spec("llama_cpp") is None:  # no fallback in this interpreter
        assert res.exit_code == 5, res.stderr
        assert "neither the native llama-server nor llama-cpp-python" in res.stderr
        assert "deploy engines install llamacpp" in res.stderr
        assert "deploy engines install llamacpp-python" in res.stderr
    res = run("up", str(smollm2_gguf), "--llama-server", str(tmp_path / "llama-server"))
    assert res.exit_code == 5
    assert "llama-server does not exist" in res.stderr
    assert "deploy engines install llamacpp" in res.stderr


def test_engine_exits_during_startup(llama_server: Any, tmp_path: Path, smollm2_gguf: Path) -> None:
    plan = smollm2_plan(smollm2_gguf, ctx=512)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(4096))  # a GGUF header that is garbage
    plan_file = write_plan(replace(plan, model_path=str(broken)), tmp_path / "plan.json")
    res = _up(llama_server, "--plan", str(plan_file), "--name", "broken")
    assert res.exit_code == 5
    assert "failed to start" in res.stderr and "Likely cause: a model file" in res.stderr
    assert "Last " in res.stderr and "lines of" in res.stderr  # the log tail is shown
    assert "deploy logs broken" in res.stderr
    (row,) = json.loads(run("ps", "--json").stdout)
    assert row["state"] == "dead" and row["error"]
    assert run("stop", "broken").exit_code == 0
    assert json.loads(run("ps", "--json").stdout) == []


def test_sigkill_then_ps_and_stop(llama_server: Any, smollm2_gguf: Path) -> None:
    res = _up(llama_server, str(smollm2_gguf), "--ctx", "512", "--name", "victim", "--json")
    assert res.exit_code == 0, res.stderr
    pid = json.loads(res.stdout)["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        (row,) = json.loads(run("ps", "--json").stdout)
        if row["state"] == "dead":
            break
        time.sleep(0.1)
    assert row["state"] == "dead" and row["rss_bytes"] is None
    assert "dead" in run("ps").stdout
    res = run("stop", "victim")
    assert res.exit_code == 0 and "not running" in res.stdout
    assert json.loads(run("ps", "--json").stdout) == []
    assert pids_in_group(pid) == []


def test_plan_does_not_fit_free_memory(
    llama_server: Any, smollm2_gguf: Path, tmp_path: Path
) -> None:
    import psutil

    plan = smollm2_plan(smollm2_gguf, ctx=512)
    huge = 4 * psutil.virtual_memory().total
    memory = tuple(replace(m, total_bytes=huge) for m in plan.memory)
    plan_file = write_plan(replace(plan, memory=memory), tmp_path / "plan.json")
    res = _up(llama_server, "--plan", str(plan_file), "--name", "toobig")
    assert res.exit_code == 3
    assert "does not fit the memory free now" in res.stderr and "--force" in res.stderr
    assert json.loads(run("ps", "--json").stdout) == []  # nothing started
    forced = _up(llama_server, "--plan", str(plan_file), "--name", "toobig", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert "STARTING ANYWAY" in forced.stderr
    assert run("stop", "toobig").exit_code == 0


def test_dry_run_redacts_the_key(llama_server: Any, smollm2_gguf: Path) -> None:
    res = _up(llama_server, str(smollm2_gguf), "--ctx", "512", "--dry-run")
    assert res.exit_code == 0, res.stderr
    assert "--api-key-file" in res.stdout and "HF_HUB_OFFLINE=1" in res.stdout
    assert "--host 127.0.0.1" in res.stdout
    assert "sk-deploy-" not in res.stdout
    assert json.loads(run("ps", "--json").stdout) == []


def test_two_deploys_at_once_same_name(llama_server: Any, smollm2_gguf: Path) -> None:
    """Two `deploy up` processes race for one name: the lock lets exactly one start."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "toolkit", "up", str(smollm2_gguf), "--ctx", "512",
            "--name", "race", "--llama-server", _binary(llama_server)]  # fmt: skip
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = sorted(p.wait(timeout=300) for p in procs)
    errors = "".join(p.stderr.read() for p in procs if p.stderr)
    assert outcomes == [0, 7], errors
    assert "run 'race' is already running" in errors
    rows = json.loads(run("ps", "--json").stdout)
    assert [(r["name"], r["state"]) for r in rows] == [("race", "ready")]
    assert run("stop", "race").exit_code == 0


@pytest.mark.parametrize("content", ["", "\n", "short\n", "two words-but-long-enough\n"])
def test_an_unusable_key_file_is_refused_not_served_open(
    llama_server: Any, smollm2_gguf: Path, content: str
) -> None:
    """An empty key file would start a server that answers anyone: exit 6, nothing runs,
    and the file is left as it was (a new key is made only when the user removes it)."""
    from toolkit import keys

    path = keys.key_path("smol")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(content)
    path.chmod(0o600)
    res = _up(llama_server, str(smollm2_gguf), "--ctx", "512", "--name", "smol")
    assert res.exit_code == 6, res.stderr
    assert "would not be private" in res.stderr and f"rm {path}" in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 2  # the error and its hint
    assert json.loads(run("ps", "--json").stdout) == []
    assert path.read_text() == content
    path.unlink()
    ok = _up(llama_server, str(smollm2_gguf), "--ctx", "512", "--name", "smol")
    assert ok.exit_code == 0, ok.stderr
    assert len(keys.read_key(path)) >= keys.MIN_KEY_CHARS
    assert run("stop", "smol").exit_code == 0


def test_a_relative_llama_server_path_is_not_looked_up_on_path(
    llama_server: Any, smollm2_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--llama-server llama-server` means ./llama-server: an impostor of the same name
    earlier on PATH never runs."""
    impostor_dir = tmp_path / "bin"
    impostor_dir.mkdir()
    marker = tmp_path / "impostor-ran"
    impostor = impostor_dir / "llama-server"
    impostor.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    impostor.chmod(0o755)
    here = tmp_path / "here"
    here.mkdir()
    (here / "llama-server").symlink_to(_binary(llama_server))
    monkeypatch.setenv("PATH", f"{impostor_dir}:{os.environ['PATH']}")
    monkeypatch.chdir(here)
    res = run(
        "up", str(smollm2_gguf), "--ctx", "512", "--dry-run", "--llama-server", "llama-server"
    )
    assert res.exit_code == 0, res.stderr
    assert not marker.exists()
    assert str(here / "llama-server") in res.stdout


def test_a_file_verify_found_changed_is_not_served(llama_server: Any) -> None:
    """`deploy verify` marked the Q4_1 GGUF MISMATCH: `deploy up` refuses (exit 6, naming
    the file and how to fetch it again); --force serves it with a warning."""
    pulled = run("pull", "smollm2-135m:q4_1", "--json")
    assert pulled.exit_code == 0, pulled.stderr
    (path,) = (Path(p) for p in json.loads(pulled.stdout)["paths"])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one byte of tensor data: the file still loads, its hash differs
    path.write_bytes(bytes(data))
    assert run("verify", "smollm2-135m:q4_1").exit_code == 6
    res = _up(llama_server, "smollm2-135m:q4_1", "--ctx", "512", "--name", "changed")
    assert res.exit_code == 6, res.stderr
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in res.stderr and "deploy rm" in res.stderr
    assert json.loads(run("ps", "--json").stdout) == []
    forced = _up(llama_server, "smollm2-135m:q4_1", "--ctx", "512", "--name", "changed", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert "--force: serving smollm2-135m:q4_1 although" in forced.stderr
    assert run("stop", "changed").exit_code == 0


def test_rm_refuses_a_model_a_run_is_serving(llama_server: Any) -> None:
    pulled = run("pull", "smollm2-135m:q4_1", "--json")
    assert pulled.exit_code == 0, pulled.stderr
    (path,) = (Path(p) for p in json.loads(pulled.stdout)["paths"])
    up = _up(llama_server, "smollm2-135m:q4_1", "--ctx", "512", "--name", "served")
    assert up.exit_code == 0, up.stderr
    try:
        res = run("rm", "smollm2-135m:q4_1")
        assert res.exit_code == 7 and "served by run 'served'" in res.stderr
        assert "deploy stop served" in res.stderr and path.is_file()
    finally:
        assert run("stop", "served").exit_code == 0
    assert run("rm", "smollm2-135m:q4_1").exit_code == 0
    assert not path.exists()


def test_a_damaged_run_record_still_shows_and_stops(llama_server: Any, smollm2_gguf: Path) -> None:
    """record.json overwritten with junk while the server runs: `ps` lists the run as
    unreadable with the server's pid, `up --name` refuses (7), `stop` ends the server."""
    from toolkit.runs import records

    up = _up(llama_server, str(smollm2_gguf), "--ctx", "512", "--name", "smol")
    assert up.exit_code == 0, up.stderr
    (row,) = json.loads(run("ps", "--json").stdout)
    pid = row["pid"]
    (records.run_dir("smol") / records.RECORD_FILE).write_text("{not json")
    try:
        (row,) = json.loads(run("ps", "--json").stdout)
        assert row["state"] == "unreadable" and row["pid"] == pid
        again = _up(llama_server, str(smollm2_gguf), "--ctx", "512", "--name", "smol")
        assert again.exit_code == 7, again.stderr
        assert "deploy stop smol" in again.stderr
    finally:
        res = run("stop", "smol")
    assert res.exit_code == 0, res.stderr
    assert pids_in_group(pid) == []
    assert json.loads(run("ps", "--json").stdout) == []


def test_a_full_deploy_home_is_one_line_and_leaves_nothing(
    llama_server: Any, smollm2_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEPLOY_HOME on a full disk: exit 3 naming the cause, no server, no temp files."""
    import subprocess

    mnt = tmp_path / "full"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=False
    )
    if mounted.returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        monkeypatch.setenv("DEPLOY_HOME", str(mnt / "home"))
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass  # full
        finally:
            os.close(fd)
        res = _up(llama_server, str(smollm2_gguf), "--ctx", "512", "--name", "full")
        assert res.exit_code == 3, res.stderr
        assert "no space left on the device" in res.stderr and "Traceback" not in res.stderr
        assert json.loads(run("ps", "--json").stdout) == []
        assert not [p for p in mnt.rglob("*.tmp")]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_run_names_that_share_a_folder_are_refused(llama_server: Any, smollm2_gguf: Path) -> None:
    up = _up(llama_server, str(smollm2_gguf), "--ctx", "512", "--name", "smol:a")
    assert up.exit_code == 0, up.stderr
    try:
        res = _up(llama_server, str(smollm2_gguf), "--ctx", "512", "--name", "smol_a")
        assert res.exit_code == 7 and "shares its folder and key with run 'smol:a'" in res.stderr
    finally:
        assert run("stop", "smol:a").exit_code == 0


def test_stop_during_a_start_is_not_blamed_on_the_oom_killer(
    llama_server: Any, smollm2_gguf: Path, tmp_path: Path
) -> None:
    """`deploy stop --all` while `deploy up` waits for a server that is still loading: up
    says the run was stopped, not that the kernel killed it, and leaves no record."""
    import subprocess
    import sys

    real = _binary(llama_server)
    slow = tmp_path / "llama-server"
    slow.write_text(
        "#!/bin/sh\n"
        f'case "$1" in --version|--help|--list-devices) exec {real} "$@";; esac\n'
        "exec sleep 120\n"  # never answers: a model still loading
    )
    slow.chmod(0o755)
    cmd = [sys.executable, "-m", "toolkit", "up", str(smollm2_gguf), "--ctx", "512",
           "--name", "slow", "--timeout", "60", "--llama-server", str(slow)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = json.loads(run("ps", "--json").stdout)
            if rows and rows[0]["pid"]:
                break
            time.sleep(0.2)
        assert run("stop", "--all").exit_code == 0
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 5, err
    assert "was stopped (deploy stop) while it was starting" in err
    assert "out-of-memory" not in err
    assert json.loads(run("ps", "--json").stdout) == []


def test_a_hung_version_check_leaves_no_children(
    tmp_path: Path, smollm2_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `llama-server` whose --version hangs after starting a child: the check times
    out, says so, and the child is gone too."""
    import psutil

    from toolkit.engines import llamacpp

    marker = tmp_path / "child.pid"
    hang = tmp_path / "llama-server"
    hang.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {marker}\nwait\n")
    hang.chmod(0o755)
    monkeypatch.setattr(llamacpp, "PROBE_TIMEOUT_S", 2.0, raising=False)
    res = run("up", str(smollm2_gguf), "--ctx", "512", "--llama-server", str(hang), "--dry-run")
    assert res.exit_code == 5 and "timed out" in res.stderr, res.stderr
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(child) and psutil.Process(child).status() != "zombie":
        assert time.monotonic() < deadline, "the version check's child is still running"
        time.sleep(0.1)
