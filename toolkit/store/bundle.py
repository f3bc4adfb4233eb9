"""`deploy bundle`: one tar that carries models (and optionally the engine and deploy
itself) to a machine without network.

Members: `manifest.json` first (so `deploy import` can check every later member as it
streams), then `models/<variant>/<file>`, `engine/<name>/<file>`, `wheels/<wheel>`.
Model bytes are re-hashed while they are written; a file that changed since it was
verified stops the bundle (exit 6) instead of shipping it. The tar is written to a
temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from toolkit import __version__, settings
from toolkit.catalog.schema import Model, Variant, variant_id
from toolkit.errors import DeployError, IntegrityError, NotFound, UsageError
from toolkit.store import cache, records
from toolkit.store.hashing import sha256_file
from toolkit.store.locate import locate
from toolkit.store.manifest import FORMAT, MANIFEST
from toolkit.store.offline import is_offline
from toolkit.store.pull import now


@dataclass(frozen=True)
class BundleOptions:
    plan: Path | None = None
    with_engine: bool = False
    with_toolkit: bool = False
    platforms: tuple[str, ...] = ()
    python_version: str | None = None
    offline: bool | None = None


@dataclass
class _Member:
    arcname: str
    source: Path
    size: int
    sha256: str
    mode: int = 0o644


@dataclass
class _Plan:
    members: list[_Member] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)

    def add(self, arcname: str, source: Path, sha256: str | None = None, mode: int = 0o644) -> str:
        size = source.stat().st_size
        digest = sha256 or sha256_file(source)
        self.members.append(_Member(arcname, source, size, digest, mode))
        return digest


def _model_part(plan: _Plan, model: Model, variant: Variant) -> None:
    vid = variant_id(model, variant)
    paths = locate(model, variant)
    rec = records.load(vid)
    known = {f.name: f for f in rec.files} if rec is not None else {}
    if variant.pypi is not None:
        root = cache.pypi_dir(variant.pypi)
        source = "pypi"
    else:
        assert variant.repo is not None
        root = paths[0].parent
        while root.parent.name != "snapshots":
            root = root.parent
        source = "hf"
    files: list[dict[str, Any]] = []
    for p in paths:
        name = p.relative_to(root).as_posix()
        arc = f"models/{quote(vid, safe='')}/{name}"
        rf = known.get(name)
        trusted = rf.sha256 if rf is not None and rf.size == p.stat().st_size else None
        digest = plan.add(arc, p, trusted)
        blob = p.resolve().name if source == "hf" else digest
        entry = {"name": name, "path": arc, "size": p.stat().st_size, "sha256": digest}
        if source == "hf" and len(blob) in (40, 64):
            entry["blob"] = blob
        files.append(entry)
    doc: dict[str, Any] = {
        "variant_id": vid,
        "model_id": model.id,
        "source": source,
        "recipe": model.model_dump(mode="json", exclude_none=True),
        "files": files,
    }
    if source == "hf":
        doc["repo"] = variant.repo
        doc["revision"] = root.name
    else:
        assert variant.pypi is not None
        doc["pypi"] = variant.pypi.model_dump()
    plan.models.append(doc)


def _engine_part(plan: _Plan) -> dict[str, Any]:
    home = settings.engines_dir() / "llamacpp"
    binary = home / "bin" / "llama-server"
    if not binary.is_file():
        raise NotFound(
            f"no llama-server installed in {home} to bundle",
            hint="deploy engines install llamacpp   (vLLM and llama-cpp-python venvs are "
            "not relocatable and are not bundled)",
        )
    files: list[dict[str, str]] = []
    for p in sorted(home.rglob("*")):
        if p.is_symlink() or not p.is_file() or p.suffix == ".log":
            continue
        rel = p.relative_to(home).as_posix()
        arc = f"engine/llamacpp/{rel}"
        mode = 0o755 if os.access(p, os.X_OK) else 0o644
        plan.add(arc, p, mode=mode)
        files.append({"path": arc, "rel": rel})
    return {"name": "llamacpp", "home": str(home), "files": files}


def project_root() -> Path | None:
    """The source checkout deploy runs from (an editable install), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "toolkit").is_dir() else None


_MANYLINUX = re.compile(r"^manylinux_(?P<major>\d+)_(?P<minor>\d+)_(?P<arch>\w+)$")
_LEGACY = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}


def expand_platforms(tags: tuple[str, ...]) -> list[str]:
    """pip takes `--platform` tags literally: `manylinux_2_28_x86_64` alone rejects the
    many wheels tagged `manylinux_2_17`. A glibc 2.28 target runs every older manylinux
    wheel too, so add those tags (and their legacy aliases), as pip does for this machine."""
    out: list[str] = []
    for tag in tags:
        m = _MANYLINUX.match(tag)
        if m is None or m["major"] != "2":
            out.append(tag)
            continue
        arch = m["arch"]
        for minor in range(int(m["minor"]), 4, -1):
            out.append(f"manylinux_2_{minor}_{arch}")
        for legacy, minor in _LEGACY.items():
            if int(m["minor"]) >= minor and (
                legacy == "manylinux2014" or arch in ("x86_64", "i686")
            ):
                out.append(f"{legacy}_{arch}")
    return list(dict.fromkeys(out))


def _toolkit_part(plan: _Plan, opts: BundleOptions, tmp: Path) -> dict[str, Any]:
    """deploy's wheel plus every dependency as wheels for the target platform."""
    if is_offline(opts.offline):
        raise UsageError(
            "--with-toolkit downloads wheels from the package index; offline mode is on",
            hint="make the bundle on a connected machine",
        )
    wheels = tmp / "wheels"
    wheels.mkdir()
    root = project_root()
    pip = [sys.executable, "-m", "pip"]
    if root is not None:
        _run([*pip, "wheel", "--no-deps", "-q", "-w", str(wheels), str(root)], "build deploy")
        own = sorted(wheels.glob("deploy_toolkit-*.whl"))
        req = str(own[0]) if own else f"deploy-toolkit=={__version__}"
    else:
        req = f"deploy-toolkit=={__version__}"
    cmd = [*pip, "download", "-q", "--only-binary=:all:", "-d", str(wheels)]
    for tag in expand_platforms(opts.platforms):
        cmd += ["--platform", tag]
    if opts.python_version:
        cmd += ["--python-version", opts.python_version]
    _run([*cmd, req], "download deploy's dependencies")
    names: list[str] = []
    for w in sorted(wheels.glob("*.whl")):
        arc = f"wheels/{w.name}"
        plan.add(arc, w)
        names.append(arc)
    return {"wheels": names, "install": "pip install --no-index --find-links wheels deploy-toolkit"}


def _run(cmd: list[str], what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-4:])
        raise DeployError(
            f"could not {what}: {tail}",
            hint="check access to the package index and the --platform/--python-version tags",
        )


class _HashingReader(io.RawIOBase):
    def __init__(self, f: io.BufferedReader) -> None:
        self._f = f
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.digest.update(data)
        return data


def _tarinfo(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, mode, 0, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _check_output(output: Path) -> None:
    """The bundle is written beside its target and renamed over it, so what is at the
    target is replaced: only ever a regular file, and never inside the model store."""
    from toolkit import settings

    if output.is_symlink() or (output.exists() and not output.is_file()):
        raise UsageError(
            f"-o {output} exists and is not a regular file; deploy will not replace it",
            hint="deploy bundle MODEL -o FILE.tar (a new path)",
        )
    target = output.resolve()
    for root in (settings.store_dir(), settings.hf_hub_cache()):
        r = root.resolve()
        if target == r or r in target.parents:
            raise UsageError(
                f"-o {output} is inside the model store ({root})",
                hint="deploy bundle MODEL -o ~/MODEL.tar",
            )


def make_bundle(
    pairs: list[tuple[Model, Variant]], output: Path, opts: BundleOptions
) -> dict[str, Any]:
    if output.exists() and output.is_dir():
        raise UsageError(f"{output} is a directory", hint="deploy bundle MODEL -o FILE.tar")
    _check_output(output)
    plan = _Plan()
    for model, variant in pairs:
        _model_part(plan, model, variant)
    target = output.resolve()
    for m in plan.members:
        if m.source.resolve() == target:
            raise UsageError(
                f"-o {output} is a file the bundle is made from ({m.arcname})",
                hint="deploy bundle MODEL -o ~/MODEL.tar",
            )
    engine = _engine_part(plan) if opts.with_engine else None
    doc_plan: Any = None
    if opts.plan is not None:
        try:
            doc_plan = json.loads(opts.plan.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--plan {opts.plan}: not a JSON plan ({exc})") from exc
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".deploy-bundle-", dir=output.parent) as tmp:
        toolkit = _toolkit_part(plan, opts, Path(tmp)) if opts.with_toolkit else None
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "toolkit_version": __version__,
            "created": now(),
            "made_on": {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "system": platform.system(),
            },
            "target": {
                "platforms": list(opts.platforms) or None,
                "python_version": opts.python_version,
            },
            "files": [
                {"path": m.arcname, "size": m.size, "sha256": m.sha256, "mode": m.mode}
                for m in plan.members
            ],
            "models": plan.models,
            "engine": engine,
            "toolkit": toolkit,
            "plan": doc_plan,
        }
        body = json.dumps(manifest, indent=2).encode()
        part = output.with_name(f".{output.name}.partial")
        try:
            with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_tarinfo(MANIFEST, len(body), 0o644), io.BytesIO(body))
                for m in plan.members:
                    with m.source.open("rb") as raw:
                        reader = _HashingReader(raw)
                        tar.addfile(_tarinfo(m.arcname, m.size, m.mode), reader)
                    if reader.digest.hexdigest() != m.sha256:
                        raise IntegrityError(
                            f"{m.source} changed since it was verified (sha256 mismatch)",
                            hint="deploy verify, then deploy rm + deploy pull the model",
                        )
            os.replace(part, output)
        finally:
            part.unlink(missing_ok=True)
    return {
        "path": str(output),
        "size": output.stat().st_size,
        "files": len(plan.members) + 1,
        "models": [m["variant_id"] for m in plan.models],
        "engine": engine is not None,
        "toolkit": toolkit is not None,
    }
