"""Server processes: start detached in their own session, see whether they live, stop the
whole process group (TERM, wait, KILL), measure its memory.

An engine may fork helpers (vLLM's engine core, llama-cpp-python's workers); they share
the server's process group, so everything here acts on the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

#: Seconds between TERM and KILL when stopping.
STOP_TIMEOUT_S = 15.0


#: The engine's log is rotated at this size, keeping LOG_KEEP older files
#: (DEPLOY_LOG_MAX_BYTES overrides it): llama-server at log level 4 writes ~5 KB a request.
LOG_MAX_BYTES = 64 * 1024 * 1024
LOG_KEEP = 2


def log_max_bytes() -> int:
    value = os.environ.get("DEPLOY_LOG_MAX_BYTES", "")
    return int(value) if value.isdigit() and int(value) > 0 else LOG_MAX_BYTES


def spawn(
    argv: Sequence[str], env: Mapping[str, str], log_file: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session (its own process group). `toolkit.runs.logpump
    --exec` starts the log pump beside it and then execs the engine, so the returned
    process IS the engine; its output goes through a pipe to the pump, which appends it
    to log_file and rotates that at log_max_bytes()."""
    import sys

    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.touch()
    launcher = [sys.executable, "-m", "toolkit.runs.logpump", "--exec", str(log_file),
                str(log_max_bytes()), str(LOG_KEEP), "--", *argv]  # fmt: skip
    return subprocess.Popen(
        launcher,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def run_bounded(
    argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a short command (an engine's --version, --help, a version probe) in its own
    session; past `timeout` its whole process group is killed — children a wrapper script
    started too — and subprocess.TimeoutExpired is raised."""
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=None if env is None else dict(env),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def reap(pid: int) -> None:
    """Collect the exit status of our own child so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int | None, started: float | None = None) -> bool:
    """True when `pid` runs (not a zombie) and is the process that started at `started`."""
    if pid is None:
        return False
    reap(pid)
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - started) < 0.5
    except psutil.Error:
        return False


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of a process group."""
    members: list[psutil.Process] = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) != pgid:
                continue
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                reap(proc.pid)
                continue
            members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def group_rss(pgid: int | None) -> int | None:
    """Resident memory of every process in the group, in bytes (None when none lives)."""
    if pgid is None:
        return None
    total, seen = 0, False
    for proc in group_members(pgid):
        try:
            total += proc.memory_info().rss
            seen = True
        except psutil.Error:
            continue
    return total if seen else None


def stop_group(pgid: int | None, pid: int | None = None, timeout: float = STOP_TIMEOUT_S) -> str:
    """TERM the group, wait up to `timeout`, then KILL what is left. Idempotent.

    Returns "not running", "terminated" or "killed".
    """
    if pgid is None:
        return "not running"
    if pid is not None:
        reap(pid)
        if not alive(pid):
            # The engine is gone; its log pump ends as soon as it has copied the last
            # output: give it that moment before calling the group still running.
            _wait_group_gone(pgid, pid, 2.0)
    if not group_members(pgid):
        return "not running"
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    if _wait_group_gone(pgid, pid, timeout):
        return "terminated"
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    _wait_group_gone(pgid, pid, 10.0)
    return "killed"


def _wait_group_gone(pgid: int, pid: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pid is not None:
            reap(pid)
        if not group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port and we could bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # TIME_WAIT leftovers do not count as taken (servers set SO_REUSEADDR too); a
        # listening socket still does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """A port the OS says is free on `host` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
    return port


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
