"""Named keys for a team on the real llama-server: a second key works beside the run's
own, `deploy keys revoke` restarts the run (same port) and the revoked key gets 401, the
keys never reach argv or the log."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clihelp import run
from tests.upfixtures import read_key

pytestmark = [pytest.mark.engine, pytest.mark.llamacpp]


def _status(base_url: str, key: str) -> int:
    return httpx.get(
        f"{base_url}/models", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ).status_code


def test_named_keys_add_list_revoke(
    llama_server: Any, smollm2_gguf: Path, isolated_env: Path
) -> None:
    added = run("keys", "add", "alice")
    assert added.exit_code == 0, added.stderr
    alice = added.stdout.strip()
    assert alice.startswith("sk-deploy-") and "alice" in added.stderr
    path = isolated_env / "keys" / "team" / "alice.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run("keys", "add", "alice").exit_code == 7  # exists: rotate instead
    assert run("keys", "add", "Bad Name").exit_code == 2

    res = run("up", str(smollm2_gguf), "--ctx", "512", "--name", "team", "--llama-server",
              str(llama_server.path), "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    base, port = doc["base_url"], doc["port"]
    own = read_key(isolated_env, "team")
    try:
        assert _status(base, own) == 200
        assert _status(base, alice) == 200
        assert _status(base, "sk-deploy-not-a-key-at-all-xxxxxxxx") == 401
        from toolkit.runs import records

        rdir = isolated_env / "runs" / "team"
        argv = " ".join(json.loads((rdir / records.RECORD_FILE).read_text())["argv"])
        assert "--api-key-file" in argv
        log = (rdir / records.LOG_FILE).read_text(errors="replace")
        for secret in (own, alice):
            assert secret not in argv and secret not in log
        listed = json.loads(run("keys", "list", "--json").stdout)
        assert [k["name"] for k in listed] == ["alice"] and alice not in json.dumps(listed)

        revoked = run("keys", "revoke", "alice")
        assert revoked.exit_code == 0, revoked.stderr
        assert "restarted team" in revoked.stdout
        after = json.loads(run("ps", "--json").stdout)[0]
        assert after["port"] == port and after["state"] == "ready"
        assert _status(base, alice) == 401
        assert _status(base, own) == 200
        assert run("keys", "revoke", "alice").exit_code == 4  # gone
    finally:
        run("stop", "team")
    assert os.listdir(isolated_env / "keys" / "team") == []
