# ruff: noqa: F811  (pytest fixtures imported from tests.storefixtures)
"""`deploy pull`, `models`, `verify`, `rm`: the real huggingface_hub client against a
loopback hub (tests/hubserver.py) serving the real SmolLM2 GGUF."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clihelp import run
from tests.hubserver import HubServer
from tests.storefixtures import (  # noqa: F401  (fixtures)
    SMOL_NAME,
    SMOL_SHA256,
    SPLIT_NAMES,
    ST_WANTED,
    TOKEN,
    hub,
    test_recipe,
)
from toolkit import settings
from toolkit.api.recipes import catalog
from toolkit.catalog import resolve
from toolkit.store import locate


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _models() -> list[dict[str, object]]:
    res = run("models", "--json")
    assert res.exit_code == 0, res.stderr
    rows: list[dict[str, object]] = json.loads(res.stdout)
    return rows


def _locate(name: str) -> list[Path]:
    r = resolve(catalog(), name)
    assert r.variant is not None
    return locate(r.entry, r.variant)


def test_pull_downloads_verifies_and_records(hub: HubServer) -> None:
    res = run("pull", "storetest-tiny:q4_1", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    repo = hub.repos["test-org/Tiny-GGUF"]
    assert doc["revision"] == repo.sha
    (path,) = (Path(p) for p in doc["paths"])
    cache = settings.hf_hub_cache()
    assert path == cache / "models--test-org--Tiny-GGUF" / "snapshots" / repo.sha / SMOL_NAME
    assert _sha(path) == SMOL_SHA256
    # Only the variant's file was fetched (not the README), and main now points at the commit.
    paths = [r.path for r in hub.requests]
    assert [p for p in paths if "/resolve/" in p] == [
        f"/test-org/Tiny-GGUF/resolve/{repo.sha}/{SMOL_NAME}"
    ] * 2  # HEAD, then GET
    assert all(p.startswith(("/api/models/test-org/Tiny-GGUF", "/test-org/")) for p in paths)
    assert (cache / "models--test-org--Tiny-GGUF" / "refs" / "main").read_text() == repo.sha
    (row,) = _models()
    assert row["variant"] == "storetest-tiny:q4_1"
    assert row["verified"] == "ok" and row["state"] == "present"
    assert row["size"] == path.stat().st_size
    assert _locate("storetest-tiny:q4_1") == [path]

    # A second pull finds every file complete: no file body is downloaded again.
    before = len(hub.gets(SMOL_NAME))
    again = run("pull", "storetest-tiny:q4_1", "-q")
    assert again.exit_code == 0, again.stderr
    assert len(hub.gets(SMOL_NAME)) == before


def test_pull_interrupted_midway_resumes_with_range(hub: HubServer) -> None:
    hub.drop_after("test-org/Tiny-GGUF", SMOL_NAME, 40_000_000)
    res = run("pull", "storetest-tiny:q4_1", "-q")
    assert res.exit_code == 0, res.stderr
    gets = hub.gets(SMOL_NAME)
    assert len(gets) == 2
    assert gets[0].range is None
    assert gets[1].range is not None
    resumed_at = int(gets[1].range.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 40_000_000
    (path,) = _locate("storetest-tiny:q4_1")
    assert _sha(path) == SMOL_SHA256


def test_pull_killed_midway_resumes_in_a_new_process(hub: HubServer) -> None:
    """A `deploy pull` killed with SIGKILL leaves a partial blob; the next pull continues
    from its size with a Range request instead of starting over."""
    stalled = hub.stall_after("test-org/Tiny-GGUF", SMOL_NAME, 30_000_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "pull", "storetest-tiny:q4_1", "-q"],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    blobs = settings.hf_hub_cache() / "models--test-org--Tiny-GGUF" / "blobs"
    partial: Path | None = None
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            found = list(blobs.glob("*.deploy-partial")) if blobs.is_dir() else []
            if found and found[0].stat().st_size >= 20_000_000:
                partial = found[0]
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
        stalled.set()
    assert partial is not None, "the first pull never wrote a partial file"
    kept = partial.stat().st_size
    assert 0 < kept <= 30_000_000
    assert not list(blobs.glob(SMOL_SHA256))  # nothing visible yet

    res = run("pull", "storetest-tiny:q4_1", "-q")
    assert res.exit_code == 0, res.stderr
    gets = hub.gets(SMOL_NAME)
    assert [g.range for g in gets] == [None, f"bytes={kept}-"]
    (path,) = _locate("storetest-tiny:q4_1")
    assert _sha(path) == SMOL_SHA256
    assert not list(blobs.glob("*.deploy-partial"))


def test_corrupt_download_is_refused_and_removed(hub: HubServer) -> None:
    hub.corrupt("test-org/Tiny-GGUF", SMOL_NAME)
    res = run("pull", "storetest-tiny:q4_1", "-q")
    assert res.exit_code == 6
    assert "corrupt" in res.stderr and SMOL_SHA256 in res.stderr
    snap = settings.hf_hub_cache() / "models--test-org--Tiny-GGUF" / "snapshots"
    assert not list(snap.rglob("*.gguf"))
    assert _models() == []


def test_gated_repo_401_403_then_token(hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    res = run("pull", "storetest-tiny:q8_0", "-q")
    assert res.exit_code == 6
    assert "gated" in res.stderr and "401" in res.stderr
    assert "accept the license" in res.stderr and "HF_TOKEN" in res.stderr

    monkeypatch.setenv("HF_TOKEN", "hf_not_granted")
    res = run("pull", "storetest-tiny:q8_0", "-q")
    assert res.exit_code == 6 and "403" in res.stderr

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    res = run("pull", "storetest-tiny:q8_0", "-q")
    assert res.exit_code == 0, res.stderr
    (path,) = _locate("storetest-tiny:q8_0")
    assert path.read_bytes() == b"GGUF-gated"
    assert any(r.authorization == f"Bearer {TOKEN}" for r in hub.requests)


def test_split_gguf_resolved_from_repo_listing(hub: HubServer, smollm2_gguf: Path) -> None:
    res = run("pull", "storetest-tiny", "--variant", "q4_k_m", "-q")
    assert res.exit_code == 0, res.stderr
    paths = _locate("storetest-tiny:q4_k_m")
    assert [p.name for p in paths] == SPLIT_NAMES
    assert b"".join(p.read_bytes() for p in paths) == smollm2_gguf.read_bytes()
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.gets("") if "/resolve/" in r.path}
    assert fetched == set(SPLIT_NAMES)  # no decoy, no config.json


def test_safetensors_variant_takes_weights_configs_and_tokenizer_only(hub: HubServer) -> None:
    res = run("pull", "storetest-tiny:bf16", "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert sorted(f["name"] for f in doc["files"]) == sorted(ST_WANTED)
    paths = _locate("storetest-tiny:bf16")
    assert {p.name: p.read_bytes() for p in paths} == ST_WANTED
    assert len({p.parent for p in paths}) == 1  # one snapshot folder for the engine
    fetched = {
        r.path.split("/resolve/", 1)[1].split("/", 1)[1]
        for r in hub.gets("")
        if "/resolve/" in r.path
    }
    assert fetched == set(ST_WANTED)


@pytest.mark.parametrize(
    ("env", "flag"),
    [({"DEPLOY_OFFLINE": "1"}, ()), ({"HF_HUB_OFFLINE": "1"}, ()), ({}, ("--offline",))],
)
def test_offline_pull_refuses_without_network(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], flag: tuple[str, ...]
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = run("pull", "storetest-tiny:q4_1", *flag)
    assert res.exit_code == 2
    assert "offline" in res.stderr and "deploy import" in res.stderr
    assert hub.requests == []


def test_verify_detects_a_corrupted_file_in_the_store(hub: HubServer) -> None:
    assert run("pull", "storetest-tiny:q4_1", "-q").exit_code == 0
    ok = run("verify", "--json")
    assert ok.exit_code == 0, ok.stderr
    assert [c["status"] for c in json.loads(ok.stdout)] == ["ok"]

    (path,) = _locate("storetest-tiny:q4_1")
    blob = path.resolve()
    blob.chmod(0o644)
    with blob.open("r+b") as f:
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0x01]))
    bad = run("verify", "storetest-tiny:q4_1")
    assert bad.exit_code == 6
    assert "SHA256" in bad.stdout and SMOL_NAME in bad.stdout
    assert "do not match" in bad.stderr
    (row,) = _models()
    assert row["verified"] == "MISMATCH"


def test_rm_removes_files_and_record(hub: HubServer) -> None:
    assert run("pull", "storetest-tiny:q4_1", "-q").exit_code == 0
    res = run("rm", "storetest-tiny:q4_1", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["freed"] == 98362432
    assert not (settings.hf_hub_cache() / "models--test-org--Tiny-GGUF").exists()
    assert _models() == []
    assert run("rm", "storetest-tiny:q4_1").exit_code == 4


def test_pull_refuses_when_disk_is_too_small(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)], check=False)
    if res.returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        monkeypatch.setenv("HF_HUB_CACHE", str(mnt / "hub"))
        out = run("pull", "storetest-tiny:q4_1", "-q")
        assert out.exit_code == 3
        assert "free" in out.stderr and "HF_HUB_CACHE" in out.stderr
        assert hub.gets(SMOL_NAME) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_files_other_tools_downloaded_are_listed_and_verified(hub: HubServer) -> None:
    """The store is the shared HF cache: a file fetched by plain huggingface_hub (as
    transformers or `hf download` would) is listed and checked against its blob name."""
    from huggingface_hub import hf_hub_download

    local = Path(
        hf_hub_download(
            "test-org/Tiny-Split-GGUF",
            "config.json",
            cache_dir=settings.hf_hub_cache(),
            endpoint=hub.endpoint,
        )
    )
    (row,) = _models()
    assert row["source"] == "hf-cache" and row["repo"] == "test-org/Tiny-Split-GGUF"
    assert row["verified"] == "never" and row["files"] == 1
    ok = run("verify", "--json")
    assert ok.exit_code == 0, ok.stderr
    assert [c["status"] for c in json.loads(ok.stdout)] == ["ok"]
    blob = local.resolve()
    blob.chmod(0o644)
    blob.write_bytes(b"{ }")
    bad = run("verify")
    assert bad.exit_code == 6 and "config.json" in bad.stdout
