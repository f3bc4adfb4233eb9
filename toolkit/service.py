"""A run as a service that survives a reboot: a systemd unit (Linux) or a launchd agent
(macOS) whose command is `deploy up --plan FROZEN.json --foreground` (or `-f STACK`).

The plan is frozen when the service is installed (copied from the running run, or made
then), so what starts after a reboot is what was planned, on the same port. The unit runs
deploy in the foreground: systemd's SIGTERM (stop, shutdown) stops the engine's whole
process group, the engine's log goes to the journal, and `Restart=on-failure` brings a
crashed server back.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from toolkit import settings
from toolkit.errors import EngineError, UsageError

Scope = Literal["user", "system"]
PREFIX = "deploy-"


@dataclass(frozen=True)
class Service:
    name: str
    scope: Scope
    kind: Literal["systemd", "launchd"]
    unit_path: Path
    text: str
    argv: tuple[str, ...]


def services_dir() -> Path:
    return settings.home() / "services"


def _systemd_quote(arg: str) -> str:
    """One ExecStart word: double-quoted when it holds spaces or quotes (systemd.service,
    "Command lines"); % doubled (systemd specifiers)."""
    arg = arg.replace("%", "%%")
    if arg and not any(c in arg for c in " \t\"'\\;$"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_path(name: str, scope: Scope, kind: str) -> Path:
    if kind == "launchd":
        base = Path.home() / "Library" / "LaunchAgents"
        if scope == "system":
            base = Path("/Library/LaunchDaemons")
        return base / f"com.deploy.{name}.plist"
    if scope == "system":
        return Path("/etc/systemd/system") / f"{PREFIX}{name}.service"
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "systemd" / "user" / f"{PREFIX}{name}.service"


def environment() -> dict[str, str]:
    """What the service needs to find the same state and engines as this shell."""
    env = {"DEPLOY_HOME": str(settings.home())}
    for var in ("DEPLOY_ENGINES_DIR", "DEPLOY_RECIPES_PATH", "DEPLOY_STORE", "HF_HOME"):
        if os.environ.get(var):
            env[var] = os.environ[var]
    return env


def systemd_unit(name: str, argv: tuple[str, ...], scope: Scope, description: str) -> str:
    env = "\n".join(f"Environment={_systemd_quote(f'{k}={v}')}" for k, v in environment().items())
    wanted = "multi-user.target" if scope == "system" else "default.target"
    return f"""[Unit]
Description=deploy: {description}
After=network.target

[Service]
Type=simple
ExecStart={" ".join(_systemd_quote(a) for a in argv)}
{env}
Restart=on-failure
RestartSec=5
# deploy stops the engine's whole process group on SIGTERM; give a large model time.
KillSignal=SIGTERM
TimeoutStopSec=90
StandardOutput=journal
StandardError=journal
NoNewPrivileges=true

[Install]
WantedBy={wanted}
"""


def launchd_plist(name: str, argv: tuple[str, ...], log_dir: Path) -> str:
    doc = {
        "Label": f"com.deploy.{name}",
        "ProgramArguments": list(argv),
        "EnvironmentVariables": environment(),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "StandardOutPath": str(log_dir / f"{name}.service.log"),
        "StandardErrorPath": str(log_dir / f"{name}.service.log"),
    }
    return plistlib.dumps(doc).decode()


def make_service(
    name: str,
    argv: tuple[str, ...],
    *,
    scope: Scope,
    description: str,
    kind: Literal["systemd", "launchd"] | None = None,
) -> Service:
    kind = kind or ("launchd" if sys.platform == "darwin" else "systemd")
    path = unit_path(name, scope, kind)
    if kind == "launchd":
        text = launchd_plist(name, argv, services_dir())
    else:
        text = systemd_unit(name, argv, scope, description)
    return Service(name, scope, kind, path, text, argv)


def write_service(svc: Service) -> None:
    """Write the unit atomically (never a half-written unit)."""
    try:
        svc.unit_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = svc.unit_path.with_name(f".{svc.unit_path.name}.tmp")
        tmp.write_text(svc.text, encoding="utf-8")
        tmp.replace(svc.unit_path)
    except PermissionError:
        raise UsageError(
            f"cannot write {svc.unit_path} (permission denied)",
            hint="a system service needs root (sudo); or install for your user: --user",
        ) from None


def manager_command(svc: Service, action: str) -> list[str]:
    """The service manager's command for install (enable --now), uninstall, status."""
    if svc.kind == "launchd":
        verb = {"start": "load", "stop": "unload", "status": "list"}[action]
        return (
            ["launchctl", verb, str(svc.unit_path)]
            if verb != "list"
            else [
                "launchctl",
                "list",
                f"com.deploy.{svc.name}",
            ]
        )
    unit = svc.unit_path.name
    user = ["--user"] if svc.scope == "user" else []
    return {
        "start": ["systemctl", *user, "enable", "--now", unit],
        "stop": ["systemctl", *user, "disable", "--now", unit],
        "status": ["systemctl", *user, "status", "--no-pager", unit],
    }[action]


def run_manager(cmd: list[str], *, required: bool) -> tuple[bool, str]:
    """Run systemctl/launchctl; (ok, output). Not there or not running (containers, CI):
    (False, why) unless `required`."""
    if shutil.which(cmd[0]) is None:
        if required:
            raise EngineError(f"{cmd[0]} not found", hint="install it, or run the command yourself")
        return False, f"{cmd[0]} not found"
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    out = (res.stdout + res.stderr).strip()
    return res.returncode == 0, out


def verify_unit(path: Path) -> tuple[bool, str]:
    """`systemd-analyze verify` on a unit file, where systemd-analyze is installed."""
    if shutil.which("systemd-analyze") is None:
        return True, "systemd-analyze not installed; not verified"
    res = subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return res.returncode == 0, (res.stdout + res.stderr).strip()
