"""`deploy cluster up` on the head node and `deploy cluster join` on each worker: vLLM
over a Ray cluster (docs/cluster.md)."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli.output import console, emit_json, json_option
from toolkit.errors import UsageError
from toolkit.planner.types import PlanRequest


@click.group(name="cluster")
def cluster_group() -> None:
    """Serve one model over several machines: vLLM on a Ray cluster."""


@cluster_group.command()
@click.argument("model", required=False)
@click.option("--cluster", "spec", required=True, help="'2x[8xh100,ram=2T],net=ib400' or a file.")
@click.option("--address", required=True, help="This node's IP on the cluster network.")
@click.option(
    "--backend",
    type=click.Choice(["ray", "mp"]),
    default="ray",
    show_default=True,
    help="ray: a Ray cluster (token auth); mp: vLLM's own multi-node mode (no Ray).",
)
@click.option(
    "--cluster-port",
    type=click.IntRange(1, 65535),
    help="Ray's port (6379) or vLLM's master port with --backend mp (29500).",
)
@click.option("--plan", "plan_file", type=click.Path(path_type=Path), help="A cluster plan file.")
@click.option("--ctx", type=int, help="Context per stream.")
@click.option("--concurrency", type=int, default=1, show_default=True)
@click.option("--variant", help="A variant id.")
@click.option("--quant", help="Weight format (fp8, awq, bf16 …).")
@click.option("--tp", type=int, help="Tensor-parallel size inside each node.")
@click.option("--pp", type=click.IntRange(1, 64), help="Pipeline stages (= nodes).")
@click.option("--vllm-version", help="Plan memory as this vLLM version budgets it.")
@click.option("--name", help="Run name (default: cluster-<variant>).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the API binds.")
@click.option("--port", type=click.IntRange(1, 65535), help="API port (default: saved or free).")
@click.option("--timeout", type=float, help="Seconds to wait for workers and vLLM (3600).")
@click.option("--no-wait", is_flag=True, help="Return once the Ray head is up.")
@click.option(
    "--allow-public-address", "public_ok", is_flag=True, help="Let Ray bind a public address."
)
@json_option
def up(
    model: str | None,
    spec: str,
    address: str,
    backend: str,
    cluster_port: int | None,
    plan_file: Path | None,
    name: str | None,
    host: str,
    port: int | None,
    timeout: float | None,
    no_wait: bool,
    public_ok: bool,
    as_json: bool,
    **kw: object,
) -> None:
    """Start the Ray head here, print the join command, and serve MODEL once every node
    has joined (vLLM with --distributed-executor-backend ray, TP × PP from the plan).

    Ray uses token authentication with the cluster key and binds --address only (the
    dashboard is off); the API binds --host with the run's API key, as `deploy up` does.
    """
    from toolkit.api import cluster as api
    from toolkit.api.runs import UpOptions

    request = PlanRequest(
        ctx=kw["ctx"],  # type: ignore[arg-type]
        concurrency=kw["concurrency"],  # type: ignore[arg-type]
        variant=kw["variant"],  # type: ignore[arg-type]
        quant=kw["quant"],  # type: ignore[arg-type]
        tp=kw["tp"],  # type: ignore[arg-type]
        pp=kw["pp"],  # type: ignore[arg-type]
        vllm_version=kw["vllm_version"],  # type: ignore[arg-type]
    )
    opts = UpOptions(name=name, host=host, port=port, timeout=timeout)
    err = console(stderr=True)
    shown: list[bool] = []

    def say(msg: str) -> None:
        err.print(f"[dim]…[/dim] {msg}")

    def progress(phase: str, elapsed: float) -> None:
        if not shown:
            shown.append(True)
            err.print(f"waiting for the workers, then vLLM ({phase})")

    started = api.up(
        model,
        request,
        cluster=spec,
        address=address,
        ray_port=cluster_port or (6379 if backend == "ray" else 29500),
        opts=opts,
        plan_file=plan_file,
        public_ok=public_ok,
        wait=not no_wait and not as_json,
        progress=progress,
        say=say,
        backend=backend,
    )
    rec = started.result.record
    if backend == "ray":
        key = started.token_file.read_text(encoding="utf-8").strip()
        join = f"deploy cluster join {started.head} --key {key}"
    else:
        join = started.join_command
    if as_json:
        emit_json(
            {
                "name": rec.name,
                "head": started.head,
                "base_url": rec.base_url,
                "key_file": str(started.result.key_file),
                ("cluster_key_file" if backend == "ray" else "manifest_file"): str(
                    started.token_file
                ),
                "join_command": join,
                "nodes": started.nodes,
                "plan": started.plan.to_dict(),
            }
        )
        return
    out = console()
    out.print(f"Ray head {started.head} (token authentication); run {rec.name}")
    if backend == "ray":
        out.print(
            f"On each worker (same vLLM, Ray and model path), run:\n  {join}\n"
            f"(or copy {started.token_file} there and use --key-file: argv is visible in ps)"
        )
    else:
        out.print(
            f"Copy {started.token_file} to each worker (same vLLM and model path), then run:\n"
            f"  {join}\n(vLLM's master port has no authentication: a private network only)"
        )
    if no_wait:
        out.print(f"Then: deploy logs {rec.name} -f   (vLLM starts when every node is in)")
        return
    out.print(
        f"Serving {rec.served_model_name} at {rec.base_url}  (key: {started.result.key_file})"
    )


@cluster_group.command()
@click.argument("head")
@click.option("--backend", type=click.Choice(["ray", "mp"]), default="ray", show_default=True)
@click.option(
    "--manifest",
    "manifest_file",
    type=click.Path(path_type=Path),
    help="--backend mp: the head's manifest.json.",
)
@click.option("--key-file", type=click.Path(path_type=Path), help="The cluster key (0600 file).")
@click.option("--key", help="The cluster key (visible to other users in ps: prefer --key-file).")
@click.option("--address", help="This node's IP on the cluster network.")
@click.option("--node", help="Join as this node of the plan (default: the next free one).")
@click.option("--name", help="Run name here (default: cluster-worker).")
@click.option(
    "--allow-public-address", "public_ok", is_flag=True, help="Let Ray bind a public address."
)
@json_option
def join(
    head: str,
    backend: str,
    manifest_file: Path | None,
    key_file: Path | None,
    key: str | None,
    address: str | None,
    node: str | None,
    name: str | None,
    public_ok: bool,
    as_json: bool,
) -> None:
    """Join the Ray cluster at HEAD (host:port) as a worker node of its plan.

    Before joining, this machine is checked against the head's plan: the same vLLM and Ray,
    the GPUs and free memory the plan gives this node, and the model's files at the same
    path with the same content. Anything different: nothing starts, each difference said.
    """
    from toolkit.api import cluster as api

    if backend == "mp":
        if manifest_file is None:
            raise UsageError(
                "--backend mp needs --manifest FILE (the head's manifest.json)",
                hint=f"deploy cluster join {head} --backend mp --manifest manifest.json",
            )
        joined = api.join_mp(
            head,
            manifest_file=manifest_file,
            address=address,
            node=node,
            name=name,
            public_ok=public_ok,
        )
    else:
        joined = api.join(
            head,
            key=api.read_key(key, key_file),
            address=address,
            node=node,
            name=name,
            public_ok=public_ok,
        )
    if as_json:
        rec = joined.record
        emit_json(
            {
                "name": rec.name,
                "node": joined.node,
                "head": joined.head,
                "pid": rec.pid,
                "address": rec.host,
            }
        )
        return
    console().print(
        f"joined {joined.head} as {joined.node} (run {joined.record.name}; "
        f"deploy stop {joined.record.name} leaves the cluster)"
    )
