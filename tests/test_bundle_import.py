# ruff: noqa: F811  (pytest fixtures imported from tests.storefixtures)
"""`deploy bundle` / `deploy import`: a bundle made from the store imports on a fresh
machine; hostile or broken tars are refused with exit 6 and leave nothing behind."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import run
from tests.hubserver import HubServer
from tests.storefixtures import SMOL_NAME, SMOL_SHA256, hub, test_recipe  # noqa: F401
from toolkit import settings
from toolkit.api.recipes import catalog
from toolkit.catalog import resolve
from toolkit.store import locate

CONTENT = b"GGUF\x03\x00\x00\x00 a tiny stand-in for model bytes"
SHA = hashlib.sha256(CONTENT).hexdigest()
REV = "ab" * 20
#: The variant the hand-made bundles carry: its recipe pins no files (the q4_1 variant
#: pins SmolLM's real sha256, which a stand-in could not match).
NAME = "Tiny-Q4_0.gguf"
ARC = "models/storetest-tiny%3Aq4_0/" + NAME


def manifest(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": "deploy-bundle/1",
        "toolkit_version": "0.1.0",
        "files": [{"path": ARC, "size": len(CONTENT), "sha256": SHA, "mode": 0o644}],
        "models": [
            {
                "variant_id": "storetest-tiny:q4_0",
                "model_id": "storetest-tiny",
                "source": "hf",
                "repo": "test-org/Tiny-Q4-GGUF",
                "revision": REV,
                "files": [{"name": NAME, "path": ARC, "size": len(CONTENT), "sha256": SHA}],
            }
        ],
    }
    doc.update(changes)
    return doc


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **attrs: Any) -> Any:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for k, v in attrs.items():
        setattr(info, k, v)
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_tar(path: Path, members: list[Any], doc: dict[str, Any] | None = None) -> Path:
    body = json.dumps(manifest() if doc is None else doc).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        if doc is not False:
            info, data = member("manifest.json", body)
            tar.addfile(info, data)
        for info, data in members:
            tar.addfile(info, data)
    return path


def state() -> list[str]:
    """Every file and link under the HF cache, DEPLOY_HOME and the engines dir."""
    out: list[str] = []
    for root in (settings.hf_hub_cache(), settings.home(), settings.engines_dir()):
        if root.exists():
            out += sorted(str(p) for p in root.rglob("*") if p.is_file() or p.is_symlink())
    return out


def test_a_well_formed_small_bundle_imports(tmp_path: Path, test_recipe: Path) -> None:
    bundle = write_tar(tmp_path / "ok.tar", [member(ARC, CONTENT)])
    res = run("import", str(bundle))
    assert res.exit_code == 0, res.stderr
    r = resolve(catalog(), "storetest-tiny:q4_0")
    assert r.variant is not None
    (path,) = locate(r.entry, r.variant)
    assert path.read_bytes() == CONTENT
    assert path.is_symlink() and path.resolve().name == SHA
    assert path.parent.name == REV


BAD: dict[str, tuple[Callable[[], tuple[list[Any], dict[str, Any] | None]], str]] = {
    "path traversal": (
        lambda: ([member(ARC, CONTENT), member("models/../../evil.sh", b"x")], None),
        "unsafe path",
    ),
    "absolute path": (
        lambda: ([member(ARC, CONTENT), member("/tmp/evil.sh", b"x")], None),
        "unsafe path",
    ),
    "symlink": (
        lambda: ([member(ARC, kind=tarfile.SYMTYPE, linkname="/etc/passwd")], None),
        "symlink",
    ),
    "hard link": (
        lambda: ([member(ARC, kind=tarfile.LNKTYPE, linkname="/etc/passwd")], None),
        "hard link",
    ),
    "device file": (
        lambda: ([member(ARC, kind=tarfile.CHRTYPE, devmajor=1, devminor=3)], None),
        "device file",
    ),
    "fifo": (lambda: ([member(ARC, kind=tarfile.FIFOTYPE)], None), "FIFO"),
    "duplicate entry": (
        lambda: ([member(ARC, CONTENT), member(ARC, CONTENT)], None),
        "duplicate entry",
    ),
    "file not in manifest": (
        lambda: ([member(ARC, CONTENT), member("models/extra.bin", b"x")], None),
        "not listed in the manifest",
    ),
    "hash mismatch": (
        lambda: ([member(ARC, CONTENT[:-1] + b"!")], None),
        "does not match the manifest",
    ),
    "size mismatch": (lambda: ([member(ARC, CONTENT + b"more")], None), "the manifest says"),
    "missing file": (lambda: ([], None), "missing from the tar"),
    "manifest traversal in a model file name": (
        lambda: (
            [member(ARC, CONTENT)],
            manifest(
                models=[
                    {
                        **manifest()["models"][0],
                        "files": [
                            {
                                "name": "../../../../x",
                                "path": ARC,
                                "size": len(CONTENT),
                                "sha256": SHA,
                            }
                        ],
                    }
                ]
            ),
        ),
        "unsafe path",
    ),
    "bad repo id in manifest": (
        lambda: (
            [member(ARC, CONTENT)],
            manifest(models=[{**manifest()["models"][0], "repo": "../../etc"}]),
        ),
        "not a valid repo id",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_hostile_or_broken_bundle_is_refused_and_nothing_written(
    case: str, tmp_path: Path, test_recipe: Path
) -> None:
    build, expected = BAD[case]
    members, doc = build()
    bundle = write_tar(tmp_path / "bad.tar", members, doc)
    before = state()
    res = run("import", str(bundle))
    assert res.exit_code == 6, (case, res.stdout, res.stderr)
    assert expected in res.stderr, res.stderr
    assert "nothing was imported" in res.stderr
    assert state() == before
    assert not list(settings.hf_hub_cache().glob(".deploy-import-*"))
    assert not (tmp_path.parent / "evil.sh").exists()


def test_manifest_must_come_first(tmp_path: Path) -> None:
    body = json.dumps(manifest()).encode()
    bundle = tmp_path / "late.tar"
    with tarfile.open(bundle, "w") as tar:
        for info, data in (member(ARC, CONTENT), member("manifest.json", body)):
            tar.addfile(info, data)
    res = run("import", str(bundle))
    assert res.exit_code == 6 and "first member must be manifest.json" in res.stderr
    assert state() == []


def test_not_a_tar_and_truncated_tar_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive" * 100)
    res = run("import", str(junk))
    assert res.exit_code == 6 and "nothing was imported" in res.stderr
    good = write_tar(
        tmp_path / "good.tar",
        [member(ARC, CONTENT * 200)],
        manifest(
            files=[
                {
                    "path": ARC,
                    "size": len(CONTENT * 200),
                    "sha256": hashlib.sha256(CONTENT * 200).hexdigest(),
                }
            ],
            models=[],
        ),
    )
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:3000])
    res = run("import", str(cut))
    assert res.exit_code == 6 and "nothing was imported" in res.stderr
    assert state() == []


def test_bundle_from_store_imports_on_a_fresh_machine(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("pull", "storetest-tiny:q4_1", "-q").exit_code == 0
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"engine": "llamacpp", "ctx": 2048}))
    out = tmp_path / "bundle.tar"
    res = run("bundle", "storetest-tiny:q4_1", "-o", str(out), "--plan", str(plan), "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["models"] == ["storetest-tiny:q4_1"]
    with tarfile.open(out) as tar:
        names = tar.getnames()
        doc = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert names[0] == "manifest.json"
    assert doc["plan"] == {"engine": "llamacpp", "ctx": 2048}
    assert doc["toolkit_version"]
    (mf,) = doc["models"]
    assert mf["revision"] == hub.repos["test-org/Tiny-GGUF"].sha
    assert mf["recipe"]["id"] == "storetest-tiny"
    assert [f["sha256"] for f in doc["files"]] == [SMOL_SHA256]

    # A fresh machine: new DEPLOY_HOME and HF_HOME, offline, no hub.
    monkeypatch.setenv("DEPLOY_HOME", str(tmp_path / "target-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "target-hf"))
    monkeypatch.setenv("DEPLOY_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    hub.requests.clear()
    res = run("import", str(out), "--json")
    assert res.exit_code == 0, res.stderr
    r = resolve(catalog(), "storetest-tiny:q4_1")
    assert r.variant is not None
    (path,) = locate(r.entry, r.variant)
    assert str(path).startswith(str(tmp_path / "target-hf"))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SMOL_SHA256
    rows = json.loads(run("models", "--json").stdout)
    assert [(x["variant"], x["origin"], x["verified"]) for x in rows] == [
        ("storetest-tiny:q4_1", "import", "ok")
    ]
    assert run("verify").exit_code == 0
    assert hub.requests == []
    saved = tmp_path / "target-home" / "plans" / "bundle.json"
    assert json.loads(saved.read_text()) == {"engine": "llamacpp", "ctx": 2048}
    assert f"deploy up --plan {saved}" in " ".join(json.loads(res.stdout)["installed"])


def test_bundle_of_a_model_not_in_the_store_says_pull(test_recipe: Path, tmp_path: Path) -> None:
    res = run("bundle", "storetest-tiny:q4_1", "-o", str(tmp_path / "x.tar"))
    assert res.exit_code == 4 and "deploy pull storetest-tiny:q4_1" in res.stderr
    assert not (tmp_path / "x.tar").exists()


def test_target_platform_tags_include_older_compatible_manylinux() -> None:
    from toolkit.store.bundle import expand_platforms

    tags = expand_platforms(("manylinux_2_28_x86_64", "macosx_11_0_arm64"))
    assert tags[0] == "manylinux_2_28_x86_64"
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_29_x86_64" not in tags
    assert "macosx_11_0_arm64" in tags
    arm = expand_platforms(("manylinux_2_17_aarch64",))
    assert "manylinux2014_aarch64" in arm and "manylinux2010_aarch64" not in arm


def test_gzipped_bundle_imports(tmp_path: Path, test_recipe: Path) -> None:
    plain = write_tar(tmp_path / "ok.tar", [member(ARC, CONTENT)])
    import gzip

    gz = tmp_path / "ok.tar.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    res = run("import", str(gz))
    assert res.exit_code == 0, res.stderr


def test_import_refuses_when_the_disk_is_too_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    big = bytes(30 * 1024 * 1024)
    entry = {"path": ARC, "size": len(big), "sha256": hashlib.sha256(big).hexdigest()}
    bundle = write_tar(tmp_path / "big.tar", [member(ARC, big)], manifest(files=[entry], models=[]))
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(mnt)], check=False)
    if res.returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        monkeypatch.setenv("HF_HUB_CACHE", str(mnt / "hub"))
        out = run("import", str(bundle))
        assert out.exit_code == 3, out.stderr
        assert "free" in out.stderr and "deploy import" in out.stderr
        assert [p for p in mnt.rglob("*") if p.is_file()] == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_bundle_output_never_replaces_the_store_or_a_non_file(
    hub: HubServer, tmp_path: Path
) -> None:
    """-o pointing at the model's own file, into the store, at a device or a link: refused
    (exit 2), and the model is still whole."""
    assert run("pull", "storetest-tiny:q4_1", "-q").exit_code == 0
    r = resolve(catalog(), "storetest-tiny:q4_1")
    assert r.variant is not None
    (model,) = locate(r.entry, r.variant)
    before = hashlib.sha256(model.read_bytes()).hexdigest()
    link = tmp_path / "link.tar"
    link.symlink_to(tmp_path / "elsewhere.tar")
    for target in (model, model.parent / "new.tar", Path("/dev/null"), link):
        res = run("bundle", "storetest-tiny:q4_1", "-o", str(target))
        assert res.exit_code == 2, (target, res.stderr)
        assert len(res.stderr.strip().splitlines()) <= 2
    assert hashlib.sha256(model.read_bytes()).hexdigest() == before == SMOL_SHA256
    assert not (model.parent / "new.tar").exists() and not (tmp_path / "elsewhere.tar").exists()
    assert Path("/dev/null").exists() and not Path("/dev/null").is_file()


def test_a_blob_named_for_other_content_is_refused(tmp_path: Path, test_recipe: Path) -> None:
    """The manifest names the blob of a file already in the cache (its sha256) but carries
    other bytes: refused, and the existing blob still holds what its name says."""
    first = write_tar(tmp_path / "first.tar", [member(ARC, CONTENT)])
    assert run("import", str(first)).exit_code == 0
    blob = settings.hf_hub_cache() / "models--test-org--Tiny-Q4-GGUF" / "blobs" / SHA
    assert blob.read_bytes() == CONTENT
    other = b"GGUF other bytes of the same length!!!!!"[: len(CONTENT)].ljust(len(CONTENT), b"!")
    doc = manifest(
        files=[{"path": ARC, "size": len(other), "sha256": hashlib.sha256(other).hexdigest()}]
    )
    doc["models"][0]["files"][0].update(
        sha256=hashlib.sha256(other).hexdigest(), size=len(other), blob=SHA
    )
    before = state()
    res = run("import", str(write_tar(tmp_path / "lie.tar", [member(ARC, other)], doc)))
    assert res.exit_code == 6 and "not its content's sha256" in res.stderr
    assert blob.read_bytes() == CONTENT and state() == before


def test_a_file_the_recipe_pins_differently_is_refused(tmp_path: Path, test_recipe: Path) -> None:
    """A bundle filing other bytes (here 40 bytes) under storetest-tiny:q4_1, whose recipe
    pins SmolLM's size and sha256: refused before anything is written."""
    arc = "models/storetest-tiny%3Aq4_1/" + SMOL_NAME
    doc = manifest(files=[{"path": arc, "size": len(CONTENT), "sha256": SHA, "mode": 0o644}])
    doc["models"][0].update(variant_id="storetest-tiny:q4_1", repo="test-org/Tiny-GGUF")
    doc["models"][0]["files"] = [
        {"name": SMOL_NAME, "path": arc, "size": len(CONTENT), "sha256": SHA}
    ]
    before = state()
    res = run("import", str(write_tar(tmp_path / "label.tar", [member(arc, CONTENT)], doc)))
    assert res.exit_code == 6, res.stderr
    assert "is not the file the storetest-tiny:q4_1 recipe pins" in res.stderr
    assert SMOL_SHA256[:12] in res.stderr and state() == before


def test_replacing_a_stored_variant_needs_replace(tmp_path: Path, test_recipe: Path) -> None:
    assert run("import", str(write_tar(tmp_path / "a.tar", [member(ARC, CONTENT)]))).exit_code == 0
    other = CONTENT.replace(b"tiny", b"TINY")
    sha = hashlib.sha256(other).hexdigest()
    doc = manifest(files=[{"path": ARC, "size": len(other), "sha256": sha, "mode": 0o644}])
    doc["models"][0]["files"][0].update(sha256=sha, size=len(other))
    b = write_tar(tmp_path / "b.tar", [member(ARC, other)], doc)
    res = run("import", str(b))
    assert res.exit_code == 7 and "--replace" in res.stderr
    r = resolve(catalog(), "storetest-tiny:q4_0")
    assert r.variant is not None
    (path,) = locate(r.entry, r.variant)
    assert path.read_bytes() == CONTENT
    res = run("import", str(b), "--replace")
    assert res.exit_code == 0, res.stderr
    assert "replaced" in res.stdout and path.read_bytes() == other
    assert run("verify", "storetest-tiny:q4_0").exit_code == 0


def test_an_overlong_variant_id_is_refused_and_leaves_nothing(
    tmp_path: Path, test_recipe: Path
) -> None:
    doc = manifest()
    doc["models"][0]["variant_id"] = "storetest-tiny:" + "q" * 5000
    before = state()
    res = run("import", str(write_tar(tmp_path / "long.tar", [member(ARC, CONTENT)], doc)))
    assert res.exit_code == 6 and "at most 200 characters" in res.stderr
    assert "Traceback" not in res.stderr and state() == before
