"""llama.cpp's RPC backend: workers that lend their devices over the network.

A worker runs `rpc-server` (built beside llama-server, `deploy rpc-worker`), bound to an
address the user names. rpc-server has NO authentication: whoever reaches its port can
allocate memory and run graphs on that machine's devices. deploy therefore refuses to
bind it to every interface or to a public address unless told
`--i-know-it-is-unauthenticated`, and says so.

`deploy up MODEL --rpc host:port,…` asks llama-server itself which devices it then sees
(`--rpc … --list-devices`: the local GPUs and each worker's devices, with their memory),
plans the layer split over them, and starts llama-server with `--rpc`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from pathlib import Path

from toolkit.errors import EngineError, UsageError
from toolkit.hardware.model import Gpu, Hardware

MiB = 1024**2
_ENDPOINT = re.compile(r"^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):(\d{1,5})$")
_DEVICE = re.compile(r"^\s*(\S+?):\s+(.*?)\s+\((\d+) MiB, (\d+) MiB free\)\s*$")


def check_bind(host: str, unauthenticated_ok: bool) -> None:
    """Loopback and private addresses only, unless the user accepts an open worker."""
    if unauthenticated_ok:
        return
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if host == "localhost":
            return
        raise UsageError(
            f"--host {host!r}: give an IP address (rpc-server binds one)",
            hint="--host 127.0.0.1, or this machine's private LAN address",
        ) from None
    if ip.is_unspecified or not (ip.is_loopback or ip.is_private):
        raise UsageError(
            f"rpc-server has no authentication; binding it to {host} would let anyone who "
            "reaches that address use this machine's devices",
            hint="bind a loopback or private address (--host 10.0.0.5), or pass "
            "--i-know-it-is-unauthenticated",
        )


def endpoints(text: str) -> tuple[str, ...]:
    out = tuple(e.strip() for e in text.split(",") if e.strip())
    if not out:
        raise UsageError("--rpc needs host:port[,host:port…]", hint="--rpc 10.0.0.2:50052")
    for e in out:
        m = _ENDPOINT.match(e)
        if m is None or not 0 < int(m.group(2)) < 65536:
            raise UsageError(f"--rpc {e!r} is not host:port", hint="--rpc 10.0.0.2:50052")
    return out


def devices(llama_server: Path, rpc: tuple[str, ...]) -> list[tuple[str, str, int, int]]:
    """(name, description, total bytes, free bytes) of every device llama-server sees
    with these workers, in its own order (the order --tensor-split follows)."""
    from toolkit.runs.process import run_bounded

    try:
        res = run_bounded([str(llama_server), "--rpc", ",".join(rpc), "--list-devices"], timeout=60)
    except (OSError, TimeoutError) as exc:
        raise EngineError(f"cannot ask llama-server for its devices: {exc}") from None
    found = []
    for line in (res.stdout + res.stderr).splitlines():
        m = _DEVICE.match(line)
        if m:
            found.append((m.group(1), m.group(2), int(m.group(3)) * MiB, int(m.group(4)) * MiB))
    remote = [d for d in found if d[0].upper().startswith("RPC")]
    if len(remote) < len(rpc):
        raise EngineError(
            f"llama-server sees {len(remote)} RPC device(s) for {len(rpc)} worker(s)",
            hint="start each worker (deploy rpc-worker --host … --port …) and check the "
            "addresses; the llama-server build needs the RPC backend "
            "(deploy engines install llamacpp --force)",
        )
    return found


def hardware_with(hw: Hardware, found: list[tuple[str, str, int, int]]) -> Hardware:
    """This machine's host with the devices llama-server sees (local GPUs and the
    workers'), in llama-server's order."""
    gpus = []
    for i, (name, desc, total, free) in enumerate(found):
        local = next((g for g in hw.gpus if g.name in desc), None)
        if local is not None and not name.upper().startswith("RPC"):
            gpus.append(replace(local, index=i))
            continue
        gpus.append(
            Gpu(index=i, name=f"{name} {desc}", vendor="other", total_bytes=total, free_bytes=free)
        )
    return replace(hw, gpus=tuple(gpus))
