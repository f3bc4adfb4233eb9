"""Zero network, proven: a model bundled from the store (with the engine and deploy's own
wheels) is imported on a fresh machine and served inside a network namespace that has
only loopback.

Connected side: the real huggingface_hub client pulls the SmolLM2 GGUF from the loopback
hub; `deploy bundle --with-engine --with-toolkit` packs it with the built llama-server and
deploy's wheels plus dependencies (pip download, PyPI being the one network tests use).
Target side: a fresh DEPLOY_HOME/HF_HOME and engines dir, offline. `deploy import` runs in
this process under a socket guard that fails any non-loopback connection or name lookup.
Then, under `unshare --net` as root (only `lo` exists): deploy is installed into a new venv
from the bundle's wheels with `pip install --no-index`, that deploy runs `deploy up`, the
engine it starts loads the imported model, and the model answers a chat request.
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import run
from tests.hubserver import HubServer
from tests.storefixtures import SMOL_NAME, SMOL_SHA256, SMOL_SIZE
from tests.testcache import CACHE

pytestmark = [pytest.mark.engine, pytest.mark.llamacpp, pytest.mark.netns]

RECIPE = f"""\
schema_version: 1
family: airgaptest
models:
  - id: airgap-smol
    name: SmolLM2-135M-Instruct (air-gap test copy)
    repo: test-org/Airgap-Smol
    params: {{total: 135e6}}
    context: {{native: 8192}}
    architecture:
      model_type: llama
      layers: 30
      hidden_size: 576
      intermediate_size: 1536
      heads: 9
      kv_heads: 3
      head_dim: 64
      vocab_size: 49152
      tied_embeddings: true
    variants:
      - quant: q4_1
        format: gguf
        repo: test-org/Airgap-Smol-GGUF
        files: [{{name: {SMOL_NAME}, size: {SMOL_SIZE}, sha256: {SMOL_SHA256}}}]
    serving:
      llamacpp: {{flags: {{"--jinja": true}}}}
"""


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@contextmanager
def socket_guard() -> Iterator[list[str]]:
    """Refuse (and record) every non-loopback connect or DNS lookup in this process."""
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0])
            if not _is_loopback(host):
                attempts.append(f"connect {address}")
                raise ConnectionRefusedError(f"socket guard: non-loopback connect to {address}")

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    def numeric(host: str) -> bool:
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return True

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not _is_loopback(str(name)) and not numeric(str(name)):
            attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror(f"socket guard: name lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        yield attempts


def test_socket_guard_catches_non_loopback() -> None:
    with socket_guard() as attempts:
        with pytest.raises(OSError):
            socket.create_connection(("192.0.2.1", 80), timeout=1)
        with pytest.raises(OSError):
            socket.getaddrinfo("huggingface.co", 443)
    assert attempts == ["connect ('192.0.2.1', 80)", "getaddrinfo huggingface.co"]


def _netns_or_skip() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip to make a network namespace")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"unshare --net is not permitted here: {probe.stderr.decode().strip()}")


NETNS_SCRIPT = r"""
set -e
ip link set lo up
echo "LINKS: $(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')"
# deploy itself, installed from the bundle's wheels with no index at all.
mkdir -p "$WORK/unpacked"
tar -xf "$BUNDLE" -C "$WORK/unpacked" wheels
"$BASE_PY" -m venv "$WORK/venv"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$WORK/venv/bin/pip" install -q --no-index \
    --find-links "$WORK/unpacked/wheels" deploy-toolkit
PY="$WORK/venv/bin/python"
DEPLOY="$WORK/venv/bin/deploy"
echo "INSTALLED: $("$DEPLOY" --version)"
"$PY" -c "import toolkit, sys; print('TOOLKIT FROM:', toolkit.__file__)"
"$PY" - <<'PYCODE'
import socket
try:
    socket.create_connection(("192.0.2.1", 80), timeout=3)
    print("OUTSIDE: reachable")
except OSError as exc:
    print(f"OUTSIDE: unreachable ({exc})")
PYCODE
"$DEPLOY" up airgap-smol:q4_1 --name airgap --ctx 512 --timeout 120 --json > "$WORK/up.json"
"$PY" - <<'PYCODE'
import json, os, pathlib, httpx
up = json.loads(pathlib.Path(os.environ["WORK"], "up.json").read_text())
key = pathlib.Path(up["key_file"]).read_text().strip()
base = up["base_url"].rstrip("/")
url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
r = httpx.post(
    url,
    headers={"Authorization": f"Bearer {key}"},
    json={"model": up["served_model_name"], "max_tokens": 16, "temperature": 0,
          "messages": [{"role": "user", "content": "What is the capital of France?"}]},
    timeout=60,
)
r.raise_for_status()
print("ANSWER:", json.dumps(r.json()["choices"][0]["message"]["content"]))
PYCODE
"$DEPLOY" stop airgap
"""


def test_import_then_up_with_no_network(
    llama_server: Any, smollm2_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _netns_or_skip()
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "airgaptest.yaml").write_text(RECIPE)
    monkeypatch.setenv("DEPLOY_RECIPES_PATH", str(recipes))
    engines = CACHE / "engines"

    # Connected machine: pull from the (loopback) hub, bundle with the built engine.
    monkeypatch.setenv("DEPLOY_HOME", str(tmp_path / "connected"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "connected-hf"))
    monkeypatch.setenv("DEPLOY_ENGINES_DIR", str(engines))
    bundle = tmp_path / "airgap.tar"
    with HubServer() as hub:
        hub.add_repo("test-org/Airgap-Smol-GGUF", {SMOL_NAME: smollm2_gguf})
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        res = run("pull", "airgap-smol:q4_1", "-q")
        assert res.exit_code == 0, res.stderr
    # The wheels are for an explicit target platform, which is this machine's (so the
    # venv below can install them): glibc manylinux tag + this Python's version.
    glibc = os.confstr("CS_GNU_LIBC_VERSION") or "glibc 2.17"
    tag = f"manylinux_2_{glibc.split('.')[-1]}_{platform.machine()}"
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    res = run(
        "bundle",
        "airgap-smol:q4_1",
        "--with-engine",
        "--with-toolkit",
        "--platform",
        tag,
        "--python-version",
        pyver,
        "-o",
        str(bundle),
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    made = json.loads(res.stdout)
    assert made["engine"] is True and made["toolkit"] is True

    # Isolated machine: nothing of the connected one, offline, a hub address nobody serves.
    target = tmp_path / "target"
    env = {
        "DEPLOY_HOME": str(target / "home"),
        "HF_HOME": str(target / "hf"),
        "DEPLOY_OFFLINE": "1",
        "HF_ENDPOINT": "http://192.0.2.1:9",
        "DEPLOY_RECIPES_PATH": str(recipes),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("DEPLOY_ENGINES_DIR")
    with socket_guard() as attempts:
        res = run("import", str(bundle), "--json")
        assert res.exit_code == 0, res.stderr
        assert run("verify").exit_code == 0
        dry = run("up", "airgap-smol:q4_1", "--dry-run", "--json", "--ctx", "512")
        assert dry.exit_code == 0, dry.stderr
    assert attempts == []
    launch = json.loads(dry.stdout)
    argv = " ".join(launch["argv"])
    assert str(target / "home" / "engines" / "llamacpp") in argv  # the imported engine
    assert str(target / "hf") in argv  # the imported model file

    work = tmp_path / "work"
    work.mkdir()
    proc_env = {
        **{k: v for k, v in os.environ.items() if k not in ("DEPLOY_ENGINES_DIR", "VIRTUAL_ENV")},
        **env,
        "BASE_PY": getattr(sys, "_base_executable", sys.executable),
        "BUNDLE": str(bundle),
        "WORK": str(work),
    }
    try:
        out = subprocess.run(
            ["unshare", "--net", "--", "bash", "-c", NETNS_SCRIPT],
            env=proc_env,
            cwd=work,  # not the checkout: `import toolkit` must find the venv's copy
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        up = work / "up.json"
        if up.exists() and up.read_text().strip():
            pid = json.loads(up.read_text()).get("pid")
            if pid:
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
    assert out.returncode == 0, out.stdout + out.stderr
    links = out.stdout.split("LINKS:", 1)[1].splitlines()[0].split()
    assert links == ["lo"]
    assert "OUTSIDE: unreachable" in out.stdout
    assert "INSTALLED: deploy, version" in out.stdout
    assert f"TOOLKIT FROM: {work / 'venv'}" in out.stdout
    answer = json.loads(out.stdout.split("ANSWER:", 1)[1].splitlines()[0])
    assert isinstance(answer, str) and answer.strip()
