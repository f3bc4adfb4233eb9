"""`deploy rpc-worker`: lend this machine's devices to a llama-server on the network."""

from __future__ import annotations

import os

import click

from toolkit.errors import EngineError


@click.command(name="rpc-worker")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=50052, show_default=True)
@click.option("--threads", type=click.IntRange(1, 4096), help="CPU threads (CPU device).")
@click.option(
    "--i-know-it-is-unauthenticated",
    "unauthenticated_ok",
    is_flag=True,
    help="Allow 0.0.0.0 or a public address (rpc-server has no authentication).",
)
def rpc_worker(host: str, port: int, threads: int | None, unauthenticated_ok: bool) -> None:
    """Run llama.cpp's rpc-server here, in the foreground, for `deploy up … --rpc`.

    rpc-server has no authentication: anyone who reaches HOST:PORT can use this
    machine's devices. Loopback and private addresses only, unless you say otherwise.
    """
    from toolkit import rpc
    from toolkit.engines.base import engine_home
    from toolkit.engines.install import RPC_SERVER

    rpc.check_bind(host, unauthenticated_ok)
    binary = engine_home("llamacpp") / "bin" / RPC_SERVER
    if not binary.exists():
        raise EngineError(
            "no rpc-server in the llama.cpp engine",
            hint="deploy engines install llamacpp --force   (builds it with the RPC backend)",
        )
    argv = [str(binary), "--host", host, "--port", str(port)]
    if threads:
        argv += ["--threads", str(threads)]
    click.echo(
        f"rpc-server on {host}:{port} (no authentication: keep it on a trusted network)",
        err=True,
    )
    os.execv(str(binary), argv)
