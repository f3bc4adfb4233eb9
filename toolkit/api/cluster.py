"""`deploy cluster up` (the head) and `deploy cluster join` (each worker): vLLM over Ray.

See toolkit.raycluster for how the head and the workers agree on the plan."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from toolkit import keys
from toolkit import raycluster as rc
from toolkit.errors import DoesNotFit, EngineError, IntegrityError, UsageError
from toolkit.planner.types import Plan, PlanRequest
from toolkit.runs import process, ready, records
from toolkit.runs.launch import default_name
from toolkit.runs.records import RunRecord

#: How long `deploy cluster up` waits for the workers and vLLM (override: --timeout).
CLUSTER_TIMEOUT_S = 3600.0
ENV_KEY = "DEPLOY_CLUSTER_KEY"


def check_address(address: str, public_ok: bool) -> None:
    """The cluster interface: a specific private or loopback address, never 0.0.0.0."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise UsageError(
            f"--address {address!r}: give this node's IP address on the cluster network",
            hint="--address 10.0.0.1",
        ) from None
    if ip.is_unspecified:
        raise UsageError(
            f"--address {address}: Ray must bind one interface, not every interface",
            hint="--address 10.0.0.1 (this node's address on the cluster network)",
        )
    if not (ip.is_private or ip.is_loopback) and not public_ok:
        raise UsageError(
            f"--address {address} is a public address: the cluster's ports would face the internet",
            hint="use the private cluster network, or pass --allow-public-address",
        )


@dataclass(frozen=True)
class ClusterUp:
    result: Any  # runs.UpResult
    plan: Plan
    head: str
    join_command: str
    #: Ray: the cluster key; mp: the manifest the workers need.
    token_file: Path
    nodes: list[dict[str, Any]]
    backend: str = "ray"


def _cluster_plan(
    model: str | None, request: PlanRequest, spec: str, plan_file: Path | None
) -> Plan:
    from toolkit.api.plan import does_not_fit, make_plans
    from toolkit.api.runs import load_plan_file

    if plan_file is not None:
        if model is not None:
            raise UsageError("give MODEL or --plan FILE, not both")
        return load_plan_file(plan_file)
    if model is None:
        raise UsageError("give a MODEL or --plan FILE", hint="deploy cluster up MODEL --cluster …")
    result = make_plans(model, replace(request, engine="vllm"), cluster=spec)
    for p in result.plans:
        if p.engine == "vllm" and len({d.split("/")[0] for d in p.devices if "/" in d}) > 1:
            return p
    if result.plans:
        best = result.plans[0]
        raise UsageError(
            f"{best.variant_id} fits one node: serve it there with `deploy up` (one replica per "
            "node for throughput), or spread it with --pp N (one stage per node)",
            hint=f"deploy up {model}",
        )
    raise does_not_fit(model, result)


def up(
    model: str | None,
    request: PlanRequest,
    *,
    cluster: str,
    address: str,
    ray_port: int,
    opts: Any,  # runs.UpOptions (host, port, name, timeout, online)
    plan_file: Path | None = None,
    public_ok: bool = False,
    wait: bool = True,
    progress: ready.Progress | None = None,
    say: Any = None,
    backend: str = "ray",
) -> ClusterUp:
    """Start the cluster's head and its run; with `wait`, return once vLLM answers.

    backend "ray": a Ray head (token auth) that the workers join, then vLLM on Ray.
    backend "mp": vLLM's own multi-node mode; this node is rank 0 and serves the API, each
    worker runs a headless vLLM (`deploy cluster join --backend mp --manifest FILE`)."""
    from toolkit.api.hardware import hardware
    from toolkit.api.runs import _start, check_host, model_files, verify_failure
    from toolkit.cluster import parse_cluster
    from toolkit.engines.base import build_launch, find_engine
    from toolkit.engines.flags import unknown_flags

    notify = say or (lambda _m: None)
    check_address(address, public_ok)
    check_host(opts.host)
    plan = _cluster_plan(model, request, cluster, plan_file)
    cl = parse_cluster(cluster)
    needs = rc.node_needs(plan, cl)
    if len(needs) < 2:
        raise UsageError(
            f"the plan for {plan.variant_id} uses one node of {cluster}: serve it with deploy up",
            hint="plan it over the cluster: deploy plan MODEL --cluster … --json > plan.json",
        )
    installed = find_engine("vllm")
    tools = rc.ray_tools(installed) if backend == "ray" else None
    here = rc.hardware_problems(needs[0], hardware())
    if here:
        raise DoesNotFit(
            f"this machine is not node {needs[0]['name']} of the plan: " + "; ".join(here),
            hint="run `deploy cluster up` on a machine that matches the cluster's first node",
        )
    path = model_files(plan)
    mismatch = verify_failure(plan)
    if mismatch:
        raise IntegrityError(
            f"{plan.variant_id}: {mismatch}", hint=f"deploy verify {plan.variant_id}"
        )
    head = f"{address}:{ray_port}"
    notify(f"hashing the model files for the workers' check ({path})")
    doc = rc.manifest(
        plan=plan,
        cluster=cl,
        engine_version=installed.version,
        tools=tools,
        model_path=path,
        head=head,
        backend=backend,
    )
    name = records.check_name(opts.name or f"cluster-{default_name(plan)}")
    rdir = records.run_dir(name)
    key_file = keys.key_path(name)
    engine_keys = rdir / keys.ENGINE_KEYS_FILE  # the run's key and the team's (live)
    token_file = rdir / rc.TOKEN_FILE

    def launch_for(port: int) -> Any:
        launch = build_launch(
            plan,
            installed,
            model_path=path,
            host=opts.host,
            port=port,
            api_key_file=engine_keys,
            run_dir=rdir,
            online=opts.online,
        )
        if tools is None:  # vLLM's own multi-node: this node is rank 0 and the master
            vllm_argv = (*launch.argv, "--distributed-executor-backend", "mp",
                         "--nnodes", str(len(needs)), "--node-rank", "0",
                         "--master-addr", address, "--master-port", str(ray_port))  # fmt: skip
        else:
            vllm_argv = (*launch.argv, "--distributed-executor-backend", "ray")
        unknown = unknown_flags(vllm_argv[1:], installed.flags, engine="vllm")
        if unknown:
            raise EngineError(
                f"the installed vLLM does not know {', '.join(unknown)}",
                hint="deploy engines install vllm --force",
            )
        if tools is None:
            env = {**launch.env, "VLLM_HOST_IP": address}
            if installed.backend == "CPU":
                env["VLLM_TARGET_DEVICE"] = "cpu"
            doc["vllm_args"] = rc.follower_args(vllm_argv)
            doc["env"] = {k: v for k, v in env.items() if k.startswith("VLLM_TARGET")}
            records.write_json_atomic(rdir / rc.MANIFEST_FILE, doc)
            return replace(launch, argv=vllm_argv, env=env)
        ray_argv = [
            str(tools.ray), "start", "--head", "--block",
            "--node-ip-address", address, "--port", str(ray_port),
            "--include-dashboard", "false", "--dashboard-host", address,
            "--num-gpus", str(len(needs[0]["gpus"])), "--disable-usage-stats",
        ]  # fmt: skip
        if not token_file.exists():
            keys.write_key(token_file, rc.new_token())
        cfg = {
            "python": str(tools.python),
            "ray": str(tools.ray),
            "ray_version": tools.version,
            "address": head,
            "ray_argv": ray_argv,
            "vllm_argv": list(vllm_argv),
            "manifest": doc,
        }
        records.write_json_atomic(rdir / rc.CLUSTER_FILE, cfg)
        return replace(
            launch,
            argv=(sys.executable, "-m", "toolkit.raycluster", "head", str(rdir)),
            env={**launch.env, **rc.ray_env(token_file)},
        )

    result = _start(
        name=name,
        model_label=model or plan.model_id,
        variant_id=plan.variant_id,
        plan_doc=plan.to_dict(),
        installed=installed,
        launch_for=launch_for,
        opts=opts,
        key_file=key_file,
        engine_keys=engine_keys,
        tls=None,
        timeout=opts.timeout or CLUSTER_TIMEOUT_S,
        progress=progress,
        warnings=[],
        say=notify,
        calibrate=None,
        wait=wait,
    )
    join = (
        f"deploy cluster join {head} --key-file {token_file}"
        if tools is not None
        else f"deploy cluster join {head} --backend mp --manifest {rdir / rc.MANIFEST_FILE}"
    )
    return ClusterUp(
        result=result,
        plan=plan,
        head=head,
        join_command=join,
        token_file=token_file if tools is not None else rdir / rc.MANIFEST_FILE,
        nodes=needs,
        backend=backend,
    )


# ---------------------------------------------------------------- join


def join_mp(
    master: str,
    *,
    manifest_file: Path,
    address: str | None,
    node: str | None = None,
    name: str | None = None,
    public_ok: bool = False,
) -> Joined:
    """vLLM's own multi-node: check this machine against the head's manifest (copied
    here), then start a headless vLLM as the manifest's node, rank by its place."""
    from toolkit.api.hardware import hardware
    from toolkit.engines.base import find_engine

    try:
        m = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read the cluster manifest {manifest_file}: {exc}",
            hint="copy manifest.json from the head's run folder (deploy cluster up printed it)",
        ) from None
    if not isinstance(m, dict) or m.get("backend") != "mp" or "vllm_args" not in m:
        raise UsageError(f"{manifest_file} is not a manifest of `deploy cluster up --backend mp`")
    if m["head"] != master:
        raise UsageError(f"{manifest_file} is for the head {m['head']}, not {master}")
    installed = find_engine("vllm")
    check = rc.check_worker(
        {"manifest": m, "claims": {}},
        hw=hardware(),
        engine_version=installed.version,
        ray_version=None,
        node=node,
    )
    if check.problems:
        raise DoesNotFit(
            f"this machine cannot join as {check.node}: " + "; ".join(check.problems),
            hint="fix it here and run the same join command again",
        )
    rank = [n["name"] for n in m["nodes"]].index(check.node)
    own = address or m["nodes"][rank].get("address")
    if not own:
        raise UsageError("give --address: this node's IP address on the cluster network")
    check_address(own, public_ok)
    run = records.check_name(name or f"cluster-{check.node}")
    rdir = records.run_dir(run)
    cli = rdir / "vllm_cli.py"
    python = Path(installed.python or installed.path)
    argv = [str(python), str(cli), *m["vllm_args"], "--headless", "--node-rank", str(rank)]
    env = {**os.environ, **m.get("env", {}), "VLLM_HOST_IP": own, "HF_HUB_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}  # fmt: skip
    return _spawn_worker(run, rdir, argv, env, m, check.node, own, master,
                         files={cli: rc.VLLM_CLI}, engine="vllm",
                         version=installed.version)  # fmt: skip


def _spawn_worker(
    run: str,
    rdir: Path,
    argv: list[str],
    env: dict[str, str],
    m: dict[str, Any],
    node: str,
    own: str,
    head: str,
    *,
    files: dict[Path, str],
    engine: str,
    version: str | None,
    joined: Any = None,
    timeout: float = 120.0,
    on_fail: Any = None,
) -> Joined:
    """Start the worker's process as a run; ready once `joined()` says so (default: still
    alive after 3 s). On failure `on_fail()` undoes what the caller claimed."""
    with records.lock():
        existing = records.find(run)
        if existing is not None and process.alive(existing.pid, existing.create_time):
            raise UsageError(
                f"this machine already runs {run!r} (pid {existing.pid})",
                hint=f"deploy stop {run}   or   --name {run}-2",
            )
        rdir.mkdir(parents=True, exist_ok=True)
        for path, text in files.items():
            path.write_text(text, encoding="utf-8")
        log = rdir / records.LOG_FILE
        proc = process.spawn(argv, env, log, rdir)
        record = RunRecord(
            name=run,
            model=m["model"],
            variant_id=m["variant_id"],
            engine=engine,
            engine_version=version,
            state="starting",
            host=own,
            port=int(head.rsplit(":", 1)[1]),
            base_url=f"{m.get('backend', 'ray')}://{head}",
            served_model_name=f"{node} of {m['variant_id']}",
            log_file=str(log),
            run_dir=str(rdir),
            argv=tuple(argv),
            env={k: v for k, v in env.items() if k.startswith(("RAY_", "VLLM_"))},
            started_at=time.time(),
            pid=proc.pid,
            pgid=proc.pid,
            create_time=process.create_time(proc.pid),
            plan=m["plan"],
        )
        records.save(record)
    deadline = time.monotonic() + (3.0 if joined is None else timeout)
    while True:
        time.sleep(1)
        if proc.poll() is not None:
            if on_fail is not None:
                on_fail()
            records.update(record, state="dead", error=f"exited ({proc.returncode})")
            tail = " | ".join(ready.tail(log, 5))
            raise EngineError(
                f"the worker exited ({proc.returncode}): {tail}", hint=f"deploy logs {run}"
            )
        if joined is not None and joined():
            break
        if time.monotonic() > deadline:
            if joined is None:
                break
            process.stop_group(record.pgid, record.pid)
            if on_fail is not None:
                on_fail()
            records.update(record, state="dead", error="did not join in time")
            raise EngineError(f"this node did not appear in the cluster in {timeout:.0f} s")
    record = records.update(record, state="ready", ready_at=time.time())
    return Joined(record, node, head)


@dataclass(frozen=True)
class Joined:
    record: RunRecord
    node: str
    head: str


def read_key(key: str | None, key_file: Path | None) -> str:
    if key and key_file:
        raise UsageError("give --key or --key-file, not both")
    if key_file is not None:
        try:
            text = key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read {key_file}: {exc.strerror}") from None
    else:
        text = (key or os.environ.get(ENV_KEY) or "").strip()
    if len(text) < 32:
        raise UsageError(
            "the cluster key is missing or too short",
            hint=f"--key-file FILE (the head's run folder has it as {rc.TOKEN_FILE}), or "
            f"{ENV_KEY}=…",
        )
    return text


def join(
    head: str,
    *,
    key: str,
    address: str | None,
    node: str | None = None,
    name: str | None = None,
    public_ok: bool = False,
    timeout: float = 120.0,
) -> Joined:
    """Check this machine against the head's plan, then join its Ray cluster."""
    from toolkit.api.hardware import hardware
    from toolkit.engines.base import find_engine
    from toolkit.rpc import endpoints

    endpoints(head)  # host:port
    installed = find_engine("vllm")
    tools = rc.ray_tools(installed)
    run = records.check_name(name or "cluster-worker")
    rdir = records.run_dir(run)
    with records.lock():
        existing = records.find(run)
        if existing is not None and process.alive(existing.pid, existing.create_time):
            raise UsageError(
                f"this machine already runs {run!r} (pid {existing.pid})",
                hint=f"deploy stop {run}   or   --name {run}-2",
            )
        rdir.mkdir(parents=True, exist_ok=True)
        token_file = rdir / rc.TOKEN_FILE
        keys.write_key(token_file, key)
    doc = rc.gcs(tools, "get", head, token_file)
    check = rc.check_worker(
        doc,
        hw=hardware(),
        engine_version=installed.version,
        ray_version=tools.version,
        node=node,
    )
    if check.problems:
        raise DoesNotFit(
            f"this machine cannot join as {check.node}: " + "; ".join(check.problems),
            hint="fix it here (deploy engines install vllm, deploy import BUNDLE, free the "
            "GPUs) and run the same join command again",
        )
    chosen = next(n for n in check.manifest["nodes"] if n["name"] == check.node)
    own = address or chosen.get("address")
    if not own:
        raise UsageError(
            "give --address: this node's IP address on the cluster network",
            hint=f"deploy cluster join {head} --key-file FILE --address 10.0.0.2",
        )
    check_address(own, public_ok)
    claim = json.dumps({"address": own, "at": time.time()})
    if not rc.gcs(tools, "claim", head, token_file, check.node, claim)["claimed"]:
        raise UsageError(f"another machine joined as {check.node} just now", hint="run join again")
    argv = [
        str(tools.ray), "start", "--address", head, "--node-ip-address", own,
        "--num-gpus", str(len(chosen["gpus"])), "--block", "--disable-usage-stats",
    ]  # fmt: skip
    want = len(rc.gcs(tools, "get", head, token_file)["claims"]) + 1

    def in_cluster() -> bool:  # the head and every claimed node, this one included, alive
        return bool(sum(n["alive"] for n in rc.gcs(tools, "nodes", head, token_file)) >= want)

    return _spawn_worker(
        run, rdir, argv, {**os.environ, **rc.ray_env(token_file)}, check.manifest,
        check.node, own, head, files={}, engine="ray", version=tools.version,
        joined=in_cluster, timeout=timeout,
        on_fail=lambda: rc.gcs(tools, "unclaim", head, token_file, check.node),
    )  # fmt: skip
