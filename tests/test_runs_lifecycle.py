"""The run lifecycle without an engine: keys, records, locks, process groups, messages.

Processes here are real (`sleep` in a shell that forks), so stopping a whole group is
tested on the kernel's own process groups, not on mocks.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from toolkit import keys
from toolkit.api import runs as api
from toolkit.errors import IntegrityError, NotFound, UsageError
from toolkit.runs import process, ready, records
from toolkit.runs.records import RunRecord


def test_key_is_private_and_stable(isolated_env: Path) -> None:
    path = keys.ensure_key("smollm2-135m:q4_1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.is_relative_to(isolated_env)
    key = keys.read_key(path)
    assert key.startswith(keys.KEY_PREFIX) and len(key) > 40
    assert keys.ensure_key("smollm2-135m:q4_1") == path
    assert keys.read_key(path) == key  # same name, same key
    assert keys.read_key(keys.ensure_key("other")) != key


def test_loosened_key_file_is_refused() -> None:
    path = keys.ensure_key("x")
    path.chmod(0o644)
    with pytest.raises(IntegrityError, match="others can read it") as info:
        keys.read_key(path)
    assert info.value.hint == f"chmod 600 {path}"


def test_redact() -> None:
    assert keys.redact("Bearer sk-deploy-abc and more", "sk-deploy-abc") == (
        f"Bearer {keys.REDACTED} and more"
    )


def _record(name: str, pid: int | None = None, port: int = 1) -> RunRecord:
    d = records.run_dir(name)
    return RunRecord(
        name=name,
        model="m",
        variant_id="m:q",
        engine="llamacpp",
        engine_version="1",
        state="starting",
        host="127.0.0.1",
        port=port,
        base_url=f"http://127.0.0.1:{port}/v1",
        served_model_name="m",
        log_file=str(d / records.LOG_FILE),
        run_dir=str(d),
        argv=("x",),
        env={},
        started_at=time.time(),
        pid=pid,
        pgid=pid,
        create_time=process.create_time(pid) if pid else None,
    )


def test_record_round_trip_and_atomic_write() -> None:
    rec = _record("a:b@c")
    records.save(rec)
    assert records.load("a:b@c") == rec
    files = sorted(p.name for p in Path(rec.run_dir).iterdir())
    assert files == [records.RECORD_FILE]  # no temp file left behind
    assert json.loads((Path(rec.run_dir) / records.RECORD_FILE).read_text())["schema"] == 1


def test_unknown_run_lists_known_ones() -> None:
    records.save(_record("one"))
    with pytest.raises(NotFound, match="runs: one") as info:
        records.load("two")
    assert info.value.hint == "deploy ps"


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "-x", "a b"])
def test_bad_run_names(bad: str) -> None:
    with pytest.raises(UsageError):
        records.check_name(bad)


def _hold_lock(home: str, started: multiprocessing.synchronize.Event) -> None:
    os.environ["DEPLOY_HOME"] = home
    with records.lock():
        started.set()
        time.sleep(1.0)


def test_lock_excludes_another_process(isolated_env: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    child = ctx.Process(target=_hold_lock, args=(str(isolated_env), started))
    child.start()
    assert started.wait(30)
    t0 = time.monotonic()
    with records.lock():
        waited = time.monotonic() - t0
    child.join(10)
    assert waited > 0.5  # we got the lock only after the other process let go


def _forking_group(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A shell that starts two children which ignore nothing: a real 3-process group."""
    return process.spawn(
        ["sh", "-c", "sleep 300 & sleep 300 & wait"], dict(os.environ), tmp_path / "log", tmp_path
    )


def test_stop_group_terminates_every_member(tmp_path: Path) -> None:
    proc = _forking_group(tmp_path)
    deadline = time.monotonic() + 10
    # the shell, its two sleeps, and the log pump beside them
    while len(process.group_members(proc.pid)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    members = [p.pid for p in process.group_members(proc.pid)]
    assert len(members) == 4
    assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)  # its own group and session
    rss = process.group_rss(proc.pid)
    assert rss is not None and rss > 0
    assert process.stop_group(proc.pid, proc.pid) == "terminated"
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in members)
    assert process.stop_group(proc.pid, proc.pid) == "not running"  # idempotent


def test_log_pump_rotates_at_the_cap_and_keeps_the_last_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's output reaches its log through the pump in its process group; at the
    cap the log rotates (server.log.1, .2), and what the engine says as it exits is kept."""
    monkeypatch.setenv("DEPLOY_LOG_MAX_BYTES", "8192")
    log = tmp_path / "server.log"
    proc = process.spawn(
        ["sh", "-c", "i=0; while [ $i -lt 600 ]; do echo line $i xxxxxxxxxxxxxxxxxxxxxxxxx;"
         " i=$((i+1)); done; echo last words"],
        dict(os.environ), log, tmp_path,
    )  # fmt: skip
    assert proc.wait(30) == 0
    deadline = time.monotonic() + 10
    while process.group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text().rstrip().endswith("last words")
    rotated = sorted(p.name for p in tmp_path.glob("server.log.*"))
    assert rotated == ["server.log.1", "server.log.2"]  # two kept, older ones dropped
    assert all(p.stat().st_size <= 8192 + 64 for p in tmp_path.glob("server.log*"))


def test_stop_group_kills_what_ignores_term(tmp_path: Path) -> None:
    proc = process.spawn(
        ["sh", "-c", "trap '' TERM; sleep 300 & trap '' TERM; wait; sleep 300"],
        dict(os.environ),
        tmp_path / "log",
        tmp_path,
    )
    time.sleep(0.3)
    assert process.stop_group(proc.pid, proc.pid, timeout=1.0) == "killed"
    assert not process.group_members(proc.pid)


def test_alive_tells_pid_reuse_apart() -> None:
    me = os.getpid()
    assert process.alive(me, process.create_time(me))
    assert not process.alive(me, (process.create_time(me) or 0) - 1000)
    assert not process.alive(None)


def test_port_checks() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert not process.port_free("127.0.0.1", taken)
    port = process.free_port("127.0.0.1")
    assert process.port_free("127.0.0.1", port)
    assert process.is_loopback("127.0.0.1") and process.is_loopback("::1")
    assert process.is_loopback("localhost") and not process.is_loopback("0.0.0.0")


@pytest.mark.parametrize(
    ("line", "rc", "word"),
    [
        ("ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer", 1, "memory"),
        ("torch.OutOfMemoryError: CUDA out of memory.", 1, "memory"),
        ("error: unrecognized arguments: --bogus", 2, "flag"),
        ("error: invalid argument: --ctx-sizee", 1, "flag"),
        ("gguf_init_from_file: failed to open GGUF file 'x.gguf'", 1, "model file"),
        ("OSError: Can't load config.json", 1, "model file"),
        ("couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8080", 1, "port"),
        ("", -9, "SIGKILL"),
        ("", -11, "SIGSEGV"),
    ],
)
def test_likely_cause(line: str, rc: int, word: str) -> None:
    cause = ready.likely_cause(["startup...", line], rc)
    assert cause is not None and word in cause


def test_no_cause_invented() -> None:
    assert ready.likely_cause(["all fine"], 0) is None


def test_tail_and_follow(tmp_path: Path) -> None:
    log = tmp_path / "l"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert ready.tail(log, 3) == ["line 97", "line 98", "line 99"]
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import time\nfor i in range(3):\n"
            f"    open({str(log)!r}, 'a').write(f'new {{i}}\\n'); time.sleep(0.2)",
        ]
    )
    got = list(ready.follow(log, 1, stop=lambda: writer.poll() is not None, poll=0.05))
    assert got == ["line 99", "new 0", "new 1", "new 2"]


def test_snippets_never_contain_the_key(tmp_path: Path) -> None:
    path = keys.ensure_key("k")
    key = keys.read_key(path)
    snippets = api.client_snippets("http://127.0.0.1:9/v1", "smollm2-135m", path)
    text = "\n".join(snippets.values())
    assert key not in text
    assert f"$(cat {path})" in snippets["curl"]
    assert 'base_url="http://127.0.0.1:9/v1"' in snippets["python"]
    compile(snippets["python"], "snippet", "exec")  # valid Python


def test_non_loopback_without_tls_warns() -> None:
    assert api.security_warnings(api.UpOptions()) == []
    (warning,) = api.security_warnings(api.UpOptions(host="0.0.0.0"))
    assert "without TLS" in warning
    assert (
        api.security_warnings(api.UpOptions(host="0.0.0.0", tls_cert=Path("c"), tls_key=Path("k")))
        == []
    )


def test_stop_unknown_run_is_not_an_error() -> None:
    (s,) = api.stop("never-started")
    assert s.outcome.startswith("not running")
    with pytest.raises(UsageError):
        api.stop(None)


def test_dead_record_shows_dead_and_stop_cleans_it(tmp_path: Path) -> None:
    proc = _forking_group(tmp_path)
    rec = _record("gone", pid=proc.pid)
    records.save(rec)
    assert api.ps()[0].state == "starting"
    assert api.ps()[0].rss_bytes
    os.killpg(proc.pid, 9)
    proc.wait()
    (st,) = api.ps()
    assert st.state == "dead" and st.rss_bytes is None and st.uptime_s is None
    assert [s.outcome for s in api.stop("gone")] == ["not running"]
    assert api.ps() == []


def test_logs_follow_until_the_server_exits(tmp_path: Path) -> None:
    rec = _record("chatty")
    log = Path(rec.log_file)
    proc = process.spawn(
        ["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.2; done"],
        dict(os.environ),
        log,
        tmp_path,
    )
    records.save(
        replace(rec, pid=proc.pid, pgid=proc.pid, create_time=process.create_time(proc.pid))
    )
    assert list(api.logs("chatty", lines=10, follow=True)) == ["line 1", "line 2", "line 3"]
    assert list(api.logs("chatty", lines=1)) == ["line 3"]
    with pytest.raises(NotFound):
        list(api.logs("nobody"))
