"""`deploy`: the click group. Command groups load lazily so `deploy --help` stays fast."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from toolkit import __version__
from toolkit.cli.errors import report
from toolkit.errors import DeployError

#: command name -> (module, attribute, one-line help). Modules import on first use.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "recipes": ("toolkit.cli.recipes", "recipes", "List, show and validate model recipes."),
    "hw": ("toolkit.cli.hw", "hw", "Detect this machine's hardware, or describe another one."),
    "plan": ("toolkit.cli.plan", "plan", "Rank what fits on a machine, how, and how fast."),
    "estimate": ("toolkit.cli.plan", "estimate", "Memory breakdown of one configuration."),
    "engines": ("toolkit.cli.engines", "engines", "List and install inference engines."),
    "up": ("toolkit.cli.runs", "up", "Launch a private OpenAI-compatible server."),
    "ps": ("toolkit.cli.runs", "ps", "List runs."),
    "logs": ("toolkit.cli.runs", "logs", "Show a run's log."),
    "stop": ("toolkit.cli.runs", "stop", "Stop a run (or --all)."),
    "check": ("toolkit.cli.runs", "check", "Check that a run serves what its plan promised."),
    "restart": ("toolkit.cli.runs", "restart", "Stop a run and start it again as it was."),
    "chat": ("toolkit.cli.runs", "chat", "Chat in the terminal with a run (streaming)."),
    "service": ("toolkit.cli.service", "service_group", "Run a model as a service (reboot-proof)."),
    "k8s": ("toolkit.cli.plan", "k8s_group", "Kubernetes manifests for a plan."),
    "cluster": ("toolkit.cli.cluster", "cluster_group", "Serve one model over several machines."),
    "rpc-worker": ("toolkit.cli.rpc", "rpc_worker", "Lend this machine's devices (llama.cpp RPC)."),
    "keys": ("toolkit.cli.keys", "keys_group", "Named API keys for a team."),
    "stack": (
        "toolkit.cli.stack",
        "stack_group",
        "Check a stack file (several models, one endpoint).",
    ),
    "pull": ("toolkit.cli.store", "pull", "Download a model variant into the store."),
    "models": ("toolkit.cli.store", "models", "List models in the store."),
    "rm": ("toolkit.cli.store", "rm", "Remove a model's files from the store."),
    "verify": ("toolkit.cli.store", "verify", "Re-hash files in the store."),
    "bundle": ("toolkit.cli.store", "bundle", "Pack models (and engine, toolkit) for an air gap."),
    "import": ("toolkit.cli.store", "import_", "Import a bundle, verifying every file."),
    "bench": ("toolkit.cli.bench", "bench", "Measure a running server."),
    "calibrate": ("toolkit.cli.bench", "calibrate", "Record a run's measured memory."),
    "cost": ("toolkit.cli.bench", "cost", "Self-hosting cost against API prices."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name][0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not self._available(cmd_name):
            return None
        module, attr, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deploy")
def cli() -> None:
    """Plan, launch and prove a private OpenAI-compatible LLM server on your own hardware.

    Start with: deploy plan MODEL   (what fits here, how, and how fast)
    """


def disk_full(exc: OSError) -> DeployError | None:
    """A full disk or quota, wherever it struck, as one line (exit 3: it does not fit);
    None for any other OS error (re-raised: a bug to see, not to hide)."""
    import errno

    from toolkit.errors import DoesNotFit

    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    where = f" writing {exc.filename}" if exc.filename else ""
    return DoesNotFit(
        f"no space left on the device{where}",
        hint="free disk space (deploy models shows what the store holds), then run it again",
    )


def main(argv: list[str] | None = None) -> Any:
    try:
        rv = cli.main(args=argv, prog_name="deploy", standalone_mode=False)
    except DeployError as exc:
        report(exc)
        sys.exit(exc.exit_code)
    except OSError as exc:
        full = disk_full(exc)
        if full is None:
            raise
        report(full)
        sys.exit(full.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    if isinstance(rv, int):
        sys.exit(rv)
    return rv
