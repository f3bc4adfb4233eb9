"""Shared by the `deploy up` tests: plans for the real SmolLM2 GGUF, a session-scoped
running server, and a context that points deploy at one DEPLOY_HOME.

The session run is started ONCE (real llama-server, 4 slots) and stopped at the end;
tests that need their own server (stop, SIGKILL, failures) start small ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from toolkit import keys
from toolkit.planner.types import Plan


@contextmanager
def deploy_env(home: Path, **extra: str) -> Iterator[None]:
    """DEPLOY_HOME (and HF_HOME) pointed at `home` for the duration."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEPLOY_HOME", str(home))
        mp.setenv("HF_HOME", str(home / "hf"))
        for k, v in extra.items():
            mp.setenv(k, v)
        yield


def smollm2_plan(gguf: Path, *, ctx: int = 2048, slots: int = 1) -> Plan:
    """The planner's best llama.cpp plan for the GGUF at this context and concurrency."""
    from toolkit.api import plan as planner
    from toolkit.planner.types import PlanRequest

    request = PlanRequest(ctx=ctx, concurrency=slots, engine="llamacpp")
    return planner.best_plan(str(gguf), request)


def write_plan(plan: Plan, path: Path) -> Path:
    path.write_text(json.dumps(plan.to_dict(), indent=2))
    return path


@dataclass(frozen=True)
class LiveRun:
    home: Path
    name: str
    base_url: str
    model: str
    key: str
    pid: int
    port: int
    plan: Plan


def read_key(home: Path, name: str) -> str:
    with deploy_env(home):
        return keys.read_key(keys.key_path(name))


def pids_in_group(pgid: int) -> list[int]:
    """The run's processes, without the log pump that runs beside every engine."""
    from toolkit.runs.process import group_members

    out = []
    for p in group_members(pgid):
        try:
            if "toolkit.runs.logpump" in " ".join(p.cmdline()):
                continue
        except Exception:  # gone meanwhile
            continue
        out.append(p.pid)
    return out


def environ_without_engines() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DEPLOY_ENGINES_DIR"}


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A one-day self-signed certificate for 127.0.0.1 and its key (tls.crt, tls.key in
    `folder`), made with the openssl command."""
    import subprocess

    cert, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key
