"""Copy an engine's output into its log file, rotating it at a size cap.

`toolkit.runs.process.spawn` runs, in a new session:

    python -m toolkit.runs.logpump --exec LOG_FILE MAX_BYTES KEEP -- ENGINE ARGV…

which starts the pump (this module without --exec) as a child reading a pipe, points its
own stdout and stderr at that pipe and execs the engine: the engine keeps the pid and
leads the process group, with the pump in it.

When the file reaches MAX_BYTES it becomes LOG_FILE.1 (LOG_FILE.1 becomes .2 …, KEEP
files kept) and a new one starts, so a server that answers for months holds at most
(KEEP + 1) × MAX_BYTES of log. It ignores SIGTERM, SIGINT and SIGHUP (deploy stop signals
the whole group) and ends at end of input, when the engine has exited, so the engine's
last words are kept.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def rotate(path: Path, keep: int) -> None:
    for i in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{i + 1}"))
    if keep > 0 and path.exists():
        path.replace(path.with_name(f"{path.name}.1"))
    elif path.exists():
        path.unlink()


def pump(fd_in: int, path: Path, max_bytes: int, keep: int) -> None:
    """Append what arrives on fd_in to path; a file never grows past max_bytes (cut at a
    line end where one fits), and the newest output is always in `path` itself."""
    out = path.open("ab")
    size = out.tell()

    def next_file() -> None:
        nonlocal out, size
        out.close()
        rotate(path, keep)
        out = path.open("ab")
        size = 0

    try:
        while True:
            chunk = os.read(fd_in, 1 << 16)
            if not chunk:
                return
            while chunk:
                room = max_bytes - size
                if len(chunk) <= room:
                    out.write(chunk)
                    size += len(chunk)
                    break
                cut = chunk.rfind(b"\n", 0, max(room, 0)) + 1
                if cut == 0:
                    if size > 0:
                        next_file()  # the line starts a fresh file
                        continue
                    cut = room  # one line longer than the cap: split it
                out.write(chunk[:cut])
                chunk = chunk[cut:]
                next_file()
            out.flush()
    finally:
        out.close()


def launch(argv: list[str]) -> int:
    """--exec: start the pump on a pipe, then become the engine writing into it."""
    import subprocess

    log_file, max_bytes, keep = argv[0], argv[1], argv[2]
    if argv[3:4] != ["--"] or len(argv) < 5:
        print("usage: logpump --exec LOG_FILE MAX_BYTES KEEP -- ARGV...", file=sys.stderr)
        return 2
    read_end, write_end = os.pipe()
    subprocess.Popen(
        [sys.executable, "-m", "toolkit.runs.logpump", log_file, max_bytes, keep],
        stdin=read_end,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(read_end)
    os.close(write_end)
    try:
        os.execvp(argv[4], argv[4:])
    except OSError as exc:
        os.write(2, f"cannot start {argv[4]}: {exc}\n".encode())
        return 127


def main(argv: list[str]) -> int:
    if argv[:1] == ["--exec"]:
        return launch(argv[1:])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    path, max_bytes, keep = Path(argv[0]), int(argv[1]), int(argv[2])
    pump(sys.stdin.fileno(), path, max(4096, max_bytes), max(0, keep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
