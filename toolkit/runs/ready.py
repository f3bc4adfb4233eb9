"""Ready means the MODEL ANSWERS (STYLE habit 11): the models endpoint lists it, then a
1-token completion with the API key comes back. An open port is not enough.

Also here: the log tail and the likely cause of a failed start, read from the log.
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Progress callback: (phase, seconds since start).
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Probe:
    """Where and how to ask a server whether it answers."""

    base_url: str
    model: str
    key: str | None
    #: CA file for a TLS server (its own self-signed cert), or None.
    verify: str | None = None


class NotReady(Exception):
    """The server did not answer yet (the message says what it is doing)."""


class KeyRejected(Exception):
    """The server answered 401 to deploy's own key."""


class ServerDied(Exception):
    """The server process exited while deploy waited (message: the phase it was in)."""


def auth_headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def tls_verify(probe: Probe) -> ssl.SSLContext | bool:
    """Trust the server's own certificate when it has one; else the system's CAs."""
    if probe.verify:
        return ssl.create_default_context(cafile=probe.verify)
    return True


def probe_once(probe: Probe, timeout: float = 30.0) -> str:
    """One readiness probe. Returns "ready" or raises NotReady(phase)."""
    import httpx

    verify = tls_verify(probe)
    with httpx.Client(headers=auth_headers(probe.key), timeout=timeout, verify=verify) as client:
        try:
            r = client.get(f"{probe.base_url}/v1/models", timeout=5.0)
        except httpx.HTTPError as exc:
            raise NotReady("waiting for the server to listen") from exc
        if r.status_code == 401:
            raise KeyRejected("the server rejected deploy's API key on /v1/models")
        if r.status_code != 200:
            raise NotReady(f"loading the model (/v1/models: HTTP {r.status_code})")
        ids = [m.get("id") for m in r.json().get("data", [])]
        if probe.model not in ids:
            raise NotReady(f"loading the model (/v1/models lists {ids})")
        try:
            r = client.post(
                f"{probe.base_url}/v1/completions",
                json={"model": probe.model, "prompt": "Hello", "max_tokens": 1},
            )
        except httpx.HTTPError as exc:
            raise NotReady(f"first token: {type(exc).__name__}") from exc
        if r.status_code == 401:
            raise KeyRejected("the server rejected deploy's API key on /v1/completions")
        if r.status_code != 200:
            raise NotReady(f"first token (HTTP {r.status_code})")
        choices = r.json().get("choices") or []
        if not choices:
            raise NotReady("first token (empty answer)")
    return "ready"


def wait_ready(
    probe: Probe,
    *,
    is_alive: Callable[[], bool],
    timeout: float,
    progress: Progress | None = None,
    interval: float = 0.25,
) -> float:
    """Poll until the model answers. Returns seconds waited.

    Raises ServerDied when the process exits, TimeoutError when `timeout` passes, and
    KeyRejected when the server refuses the key.
    """
    t0 = time.monotonic()
    phase = "starting the engine"
    while True:
        elapsed = time.monotonic() - t0
        if progress is not None:
            progress(phase, elapsed)
        if not is_alive():
            raise ServerDied(phase)
        try:
            probe_once(probe, timeout=max(5.0, timeout - elapsed))
            return time.monotonic() - t0
        except NotReady as exc:
            phase = str(exc)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(phase)
        time.sleep(interval)


def tail(path: Path, n: int = 40) -> list[str]:
    """The last n lines of a text file (reads at most the last 1 MiB)."""
    if not path.exists() or n <= 0:
        return []
    with path.open("rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - (1 << 20)))
        data = fh.read()
    return data.decode(errors="replace").splitlines()[-n:]


def follow(path: Path, n: int, *, stop: Callable[[], bool], poll: float = 0.25) -> Iterator[str]:
    """Yield the last n lines, then new lines as they are written, until stop() is true."""
    yield from tail(path, n)
    with path.open("rb") as fh:
        fh.seek(0, 2)
        buf = b""
        while True:
            chunk = fh.read()
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
                continue
            if stop():
                if buf:
                    yield buf.decode(errors="replace")
                return
            time.sleep(poll)


#: (pattern in the log, cause shown to the user). First match wins; order matters.
_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), cause)
    for p, cause in (
        (
            r"out of memory|OutOfMemoryError|cannot allocate memory|failed to allocate|"
            r"bad_alloc|unable to allocate|alloc_buffer: failed|insufficient memory|"
            r"No available memory for the cache blocks",
            "out of memory: the plan needs more memory than the engine could get "
            "(try a smaller --ctx or quant: deploy plan MODEL)",
        ),
        (
            r"address already in use|couldn't bind|bind\(\) failed|failed to bind",
            "the port is already taken by another program (use --port or leave it out)",
        ),
        (
            r"unrecognized arguments?|unknown argument|invalid argument|no such option|"
            r"error: unrecognized|invalid choice|unknown option",
            "the engine rejected a flag: its version differs from what the plan was "
            "rendered for (deploy engines; deploy up --dry-run shows the argv)",
        ),
        (
            r"no such file or directory|FileNotFoundError|failed to open|does not exist|"
            r"failed to load model|error loading model|not a valid|invalid magic|"
            r"OSError: .*(config\.json|safetensors)",
            "a model file is missing, unreadable or not what the engine expects "
            "(deploy models; deploy verify)",
        ),
        (
            r"illegal instruction|SIGILL",
            "the engine binary uses CPU instructions this machine lacks "
            "(rebuild it: deploy engines install llamacpp)",
        ),
    )
)


def likely_cause(log_lines: list[str], returncode: int | None = None) -> str | None:
    text = "\n".join(log_lines)
    for pattern, cause in _CAUSES:
        if pattern.search(text):
            return cause
    if returncode in (-9, 137):
        return "killed by SIGKILL: often the kernel's out-of-memory killer (dmesg shows it)"
    if returncode in (-11, 139):
        return (
            "the engine crashed (SIGSEGV); a llama.cpp built with -march=native crashes on "
            "AMX CPUs: rebuild with deploy engines install llamacpp"
        )
    if returncode in (-4, 132):
        return "illegal instruction: the engine binary does not fit this CPU"
    return None
