"""`deploy keys add | list | revoke | rotate`: named API keys for a team."""

from __future__ import annotations

import click

from toolkit import keys
from toolkit.cli.output import console, emit_json, json_option


@click.group(name="keys")
def keys_group() -> None:
    """Named API keys, accepted by every run (llama-server, llama-cpp-python, vLLM) beside
    the run's own key.

    A key is shown once, when it is made; deploy keeps it in keys/team/NAME.key (mode
    0600) and never puts it on a command line or in a log. vLLM and llama-cpp-python runs
    take a change at once; llama-server reads its keys when it starts, so revoke and
    rotate restart those runs (--no-restart to leave them).
    """


def _restart(restart: bool) -> None:
    from toolkit.api import runs as api

    refreshed = api.refresh_keys()
    if refreshed:
        names = ", ".join(refreshed)
        console().print(f"in force now for {names} (their key guard reads keys live)")
    holders = api.key_holders()
    if not holders:
        return
    if not restart:
        console().print(
            "runs still accept the old keys until they restart: "
            + ", ".join(f"deploy restart {n}" for n in holders)
        )
        return
    for name in holders:
        result = api.restart(name)
        console().print(f"restarted {name} on {result.record.base_url}")


@keys_group.command()
@click.argument("name")
def add(name: str) -> None:
    """Make a key named NAME and print it (once)."""
    from toolkit.api import runs as api

    key = keys.add_team_key(name)
    click.echo(key)
    api.refresh_keys()
    holders = api.key_holders()
    note = f" (runs take it at their next start: {', '.join(holders)})" if holders else ""
    click.echo(
        f"key {name!r} ({keys.fingerprint(key)}) stored in {keys.team_dir()}{note}", err=True
    )


@keys_group.command(name="list")
@json_option
def list_(as_json: bool) -> None:
    """Named keys: name, fingerprint, created (the keys themselves are not shown)."""
    import datetime as dt

    rows = []
    for name, path in keys.team_keys().items():
        created = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)
        rows.append(
            {
                "name": name,
                "fingerprint": keys.fingerprint(keys.read_key(path)),
                "created": created.isoformat(timespec="seconds"),
            }
        )
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no named keys (deploy keys add NAME)")
    for r in rows:
        click.echo(f"{r['name']:24} {r['fingerprint']}  {r['created']}")


@keys_group.command()
@click.argument("name")
@click.option("--restart/--no-restart", default=True, show_default=True)
def revoke(name: str, restart: bool) -> None:
    """Delete key NAME; running llama-server runs restart without it."""
    keys.revoke_team_key(name)
    click.echo(f"revoked {name!r}")
    _restart(restart)


@keys_group.command()
@click.argument("name")
@click.option("--restart/--no-restart", default=True, show_default=True)
def rotate(name: str, restart: bool) -> None:
    """Replace key NAME with a new one (printed once); running runs restart with it."""
    key = keys.rotate_team_key(name)
    click.echo(key)
    click.echo(f"key {name!r} is now {keys.fingerprint(key)}", err=True)
    _restart(restart)
