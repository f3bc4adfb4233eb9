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


def choose_port(host: str, port: int | None) -> int:
    """The port to serve on: the one asked for if it is free, else one the OS gives."""
    used = {r.port for r in records.all_records() if process.alive(r.pid, r.create_time)}
    if port is not None:
        if port in used or not process.port_free(host, port):
            raise Conflict(
                f"port {port} on {host} is already in use{holder_of(port)}",
                hint="leave out --port to pick a free one, or: deploy ps",
            )
        return port
    for _ in range(50):
        candidate = process.free_port(host)
        if candidate not in used:
            return candidate
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
