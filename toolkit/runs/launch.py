"""Pieces of `deploy up` that need no engine: memory fit, run names, ports, the child's
environment, client snippets. Pure or nearly (ports and temp dirs touch the OS)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import Conflict
from toolkit.planner.types import Plan
from toolkit.runs import process, records
from toolkit.runs.records import RunRecord
from toolkit.units import format_bytes

if TYPE_CHECKING:
    from toolkit.engines.base import Launch

#: Variables an engine reads as ITS API key; removed from the inherited environment so
#: only deploy's key (given by file or by `Launch.secret_env`) is in force.
_INHERITED_KEY_VARS = ("LLAMA_API_KEY", "LLAMA_ARG_API_KEY", "VLLM_API_KEY", "API_KEY")


def fit_problems(plan: Plan, free: dict[str, int]) -> list[str]:
    """One line per device where the plan needs more than is free now. Pure."""
    out = []
    for dev in plan.memory:
        have = free.get(dev.id)
        if have is None and dev.total_bytes > 0:
            made_for = (plan.hardware or {}).get("origin") or "another machine"
            out.append(
                f"{dev.id}: the plan uses it, this machine has none (planned for {made_for})"
            )
            continue
        if have is not None and dev.needed_bytes > have:
            out.append(
                f"{dev.id}: needs {format_bytes(dev.needed_bytes)}, {format_bytes(have)} free now"
            )
    return out


def default_name(plan: Plan) -> str:
    import re

    # A local file's variant id is "file:<name>"; its model id reads better.
    base = plan.model_id if plan.variant_id.startswith("file:") else plan.variant_id
    name = re.sub(r"[^A-Za-z0-9._:@+-]+", "-", base).strip("-.") or "run"
    return name[:128]


def holder_of(port: int) -> str:
    for rec in records.all_records():
        if rec.port == port and process.alive(rec.pid, rec.create_time):
            return f" by run {rec.name!r} (pid {rec.pid})"
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == "LISTEN" and conn.pid:
                return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except (psutil.Error, OSError):
        pass
    return ""


#: Ports given to run names, kept so a name gets the same port at every start (an IDE
#: plugin or agent configured yesterday still works today): runs/ports.json.
PORTS_FILE = "ports.json"


def saved_ports() -> dict[str, int]:
    path = records.runs_root() / PORTS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int) and 0 < v < 65536}


def save_port(name: str, port: int) -> None:
    """Remember NAME's port (call under records.lock())."""
    ports = saved_ports()
    if ports.get(name) != port:
        ports[name] = port
        records.write_json_atomic(records.runs_root() / PORTS_FILE, ports)


def choose_port(host: str, port: int | None, name: str | None = None) -> tuple[int, str | None]:
    """The port to serve on, and a note when it is not the one this name had before.

    Asked for: that port, if free. Otherwise the port this run name got the last time,
    if it is free; else a free one from the OS. The choice is saved for the name (call
    under records.lock())."""
    used = {r.port for r in records.all_records() if process.alive(r.pid, r.create_time)}
    if port is not None:
        if port in used or not process.port_free(host, port):
            raise Conflict(
                f"port {port} on {host} is already in use{holder_of(port)}",
                hint="leave out --port to pick a free one, or: deploy ps",
            )
        if name:
            save_port(name, port)
        return port, None
    note = None
    before = saved_ports().get(name) if name else None
    if before is not None:
        if before not in used and process.port_free(host, before):
            return before, None
        note = (
            f"port {before}, which run {name!r} had before, is in use{holder_of(before)}; "
            "serving on a new port, saved for next time (or free it and start again)"
        )
    for _ in range(50):
        candidate = process.free_port(host)
        if candidate not in used and candidate not in saved_ports().values():
            if name:
                save_port(name, candidate)
            return candidate, note
    raise Conflict(f"no free port found on {host}")


#: Longest TMPDIR that leaves room for the unix sockets engines make in it (vLLM: ZMQ
#: `ipc://$TMPDIR/<uuid4>`; sun_path holds 107 bytes, a uuid4 takes 37 with the slash).
MAX_TMPDIR_LEN = 64


def child_env(launch: Launch, run_dir: Path) -> tuple[dict[str, str], Path | None]:
    """The engine's environment, and a short scratch dir made for it when the run's own
    temp dir is too deep for unix socket paths (removed by `deploy stop`)."""
    base = {k: v for k, v in os.environ.items() if k not in _INHERITED_KEY_VARS}
    tmp = run_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    base["TMPDIR"] = str(tmp)
    env = launch.process_env(base)
    scratch = None
    if len(env["TMPDIR"]) > MAX_TMPDIR_LEN:
        import tempfile

        scratch = Path(tempfile.mkdtemp(prefix="deploy-", dir="/tmp"))
        env["TMPDIR"] = str(scratch)
    return env, scratch


def remove_scratch(record: RunRecord) -> None:
    if record.scratch_dir:
        import shutil

        shutil.rmtree(record.scratch_dir, ignore_errors=True)


def tls_cert_from_argv(argv: tuple[str, ...]) -> str | None:
    for flag in ("--ssl-cert-file", "--ssl-certfile", "--ssl_certfile"):
        if flag in argv:
            return argv[argv.index(flag) + 1]
    return None


def client_snippets(
    base_url: str, model: str, key_file: Path | None, cacert: str | None = None
) -> dict[str, str]:
    """Copy-paste clients. The key is read from its file, never printed. With TLS,
    `cacert` is the certificate to trust (a self-signed server cert works). Pure."""
    auth = f' -H "Authorization: Bearer $(cat {key_file})"' if key_file else ""
    key_expr = f'Path("{key_file}").read_text().strip()' if key_file else '"none"'
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]})
    trust = f" --cacert {cacert}" if cacert else ""
    imports = "from pathlib import Path\n"
    extra = ""
    if cacert:
        imports += "import ssl\n\nimport httpx\n"
        extra = f', http_client=httpx.Client(verify=ssl.create_default_context(cafile="{cacert}"))'
    return {
        "key": f"cat {key_file}" if key_file else "(no key)",
        "curl": f"curl -s{trust} {base_url}/chat/completions{auth} \\\n"
        f"  -H 'Content-Type: application/json' \\\n  -d '{body}'",
        "python": f"{imports}from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base_url}", api_key={key_expr}{extra})\n'
        "reply = client.chat.completions.create(\n"
        f'    model="{model}", messages=[{{"role": "user", "content": "Hello!"}}]\n)\n'
        "print(reply.choices[0].message.content)",
    }
