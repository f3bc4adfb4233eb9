"""A loopback Hugging Face Hub that speaks the endpoints huggingface_hub really calls.

Point the real client at it with `HF_ENDPOINT=server.endpoint` (or pass `endpoint=`).
It serves files you register from disk or memory, the way huggingface.co does:

- `HEAD|GET /{repo}/resolve/{revision}/{path}`: `X-Repo-Commit`, `ETag` (the sha256 for
  LFS files, the git blob sha1 otherwise), `X-Linked-Etag`/`X-Linked-Size` for LFS files,
  `Accept-Ranges: bytes`; a `Range: bytes=N-` GET answers 206 with `Content-Range`.
- `GET /api/models/{repo}[/revision/{revision}]`: model info (`sha`, `siblings`, `gated`).
- `GET /api/models/{repo}/tree/{revision}[/{path}]`: the file listing (`type`, `path`,
  `size`, `oid`, `lfs: {oid, size, pointerSize}`).
- Errors carry the hub's `X-Error-Code` header (`RepoNotFound`, `RevisionNotFound`,
  `EntryNotFound`, `GatedRepo`) so huggingface_hub raises its own exception classes:
  a gated repo answers 401 without a token and 403 with a token that was not granted.

Faults, each for a test: `drop_after(repo, path, nbytes)` closes the connection after
`nbytes` of the body (an interrupted download; the client resumes with a Range request),
`stall_after(repo, path, nbytes)` sends `nbytes` and hangs (time to kill the client),
`corrupt(repo, path)` serves flipped bytes under the true ETag. Every request is logged in
`server.requests` (method, path, Range and Authorization headers).

No xet headers are sent, so the client takes its plain-HTTP download path.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

#: Files with these suffixes (or at least this big) are served as LFS files, like the hub.
LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".onnx", ".tar", ".zip")
LFS_MIN_SIZE = 10 * 1024 * 1024
CHUNK = 1 << 20

_DIGESTS: dict[tuple[str, int, int], tuple[str, str]] = {}
_DIGEST_LOCK = threading.Lock()


def _digests(data: Path | bytes) -> tuple[str, str]:
    """(sha256 hex, git blob sha1 hex) of a file or bytes; file digests are memoised."""
    if isinstance(data, bytes):
        git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        return hashlib.sha256(data).hexdigest(), git
    st = data.stat()
    key = (str(data), st.st_size, st.st_mtime_ns)
    with _DIGEST_LOCK:
        if key in _DIGESTS:
            return _DIGESTS[key]
    sha, git = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % st.st_size)
    with data.open("rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            git.update(chunk)
    result = (sha.hexdigest(), git.hexdigest())
    with _DIGEST_LOCK:
        _DIGESTS[key] = result
    return result


@dataclass
class HubFile:
    path: str
    data: Path | bytes
    size: int
    sha256: str
    git_sha1: str
    lfs: bool

    def pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
            f"size {self.size}\n"
        ).encode()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_sha1

    def read(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) in chunks."""
        if isinstance(self.data, bytes):
            yield self.data[start:end]
            return
        with self.data.open("rb") as f:
            f.seek(start)
            left = end - start
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk


@dataclass
class HubRepo:
    repo_id: str
    sha: str
    files: dict[str, HubFile] = field(default_factory=dict)
    gated: bool = False
    #: Tokens granted access to a gated repo.
    tokens: frozenset[str] = frozenset()


@dataclass
class LoggedRequest:
    method: str
    path: str
    range: str | None
    authorization: str | None
    status: int = 0


class HubServer:
    """Start with `with HubServer() as hub:`; `hub.endpoint` is the HF_ENDPOINT value."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[LoggedRequest] = []
        self._drops: dict[tuple[str, str], list[int]] = {}
        self._stalls: dict[tuple[str, str], tuple[int, threading.Event]] = {}
        self._corrupt: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- set-up ---------------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: dict[str, Path | bytes],
        *,
        gated: bool = False,
        tokens: tuple[str, ...] = (),
        sha: str | None = None,
    ) -> HubRepo:
        """Register a repo. The commit sha defaults to a digest of its file list."""
        hub_files: dict[str, HubFile] = {}
        for name, data in files.items():
            size = len(data) if isinstance(data, bytes) else data.stat().st_size
            sha256, git = _digests(data)
            lfs = name.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
            hub_files[name] = HubFile(name, data, size, sha256, git, lfs)
        if sha is None:
            listing = "".join(f"{n}:{f.etag}\n" for n, f in sorted(hub_files.items()))
            sha = hashlib.sha1(f"{repo_id}\n{listing}".encode()).hexdigest()
        repo = HubRepo(repo_id, sha, hub_files, gated, frozenset(tokens))
        with self._lock:
            self.repos[repo_id] = repo
        return repo

    def drop_after(self, repo_id: str, path: str, nbytes: int, *, times: int = 1) -> None:
        """The next `times` GETs of this file close the connection after `nbytes` of body."""
        with self._lock:
            self._drops.setdefault((repo_id, path), []).extend([nbytes] * times)

    def stall_after(self, repo_id: str, path: str, nbytes: int) -> threading.Event:
        """The next GET of this file sends `nbytes` of body, then hangs until the returned
        event is set (or 120 s pass) and closes the connection: time to kill the client."""
        event = threading.Event()
        with self._lock:
            self._stalls[(repo_id, path)] = (nbytes, event)
        return event

    def corrupt(self, repo_id: str, path: str) -> None:
        """Serve this file with its first body byte flipped (headers still claim the truth)."""
        with self._lock:
            self._corrupt.add((repo_id, path))

    def gets(self, path_suffix: str) -> list[LoggedRequest]:
        return [r for r in self.requests if r.method == "GET" and r.path.endswith(path_suffix)]

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler --------------------------------------------------------------
    def _take_drop(self, repo_id: str, path: str) -> int | None:
        with self._lock:
            pending = self._drops.get((repo_id, path))
            return pending.pop(0) if pending else None

    def _take_stall(self, repo_id: str, path: str) -> tuple[int, threading.Event] | None:
        with self._lock:
            return self._stalls.pop((repo_id, path), None)

    def _is_corrupt(self, repo_id: str, path: str) -> bool:
        with self._lock:
            return (repo_id, path) in self._corrupt


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?/?$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
_RANGE = re.compile(r"^bytes=(?P<start>\d+)-(?P<end>\d*)$")


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        return

    # -- plumbing -------------------------------------------------------------------------
    def _log(self) -> LoggedRequest:
        entry = LoggedRequest(
            self.command,
            unquote(urlsplit(self.path).path),
            self.headers.get("Range"),
            self.headers.get("Authorization"),
        )
        with self.hub._lock:
            self.hub.requests.append(entry)
        return entry

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(
        self, status: int, code: str, message: str, extra: dict[str, str] | None = None
    ) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": message, **(extra or {})}
        self._send(status, json.dumps({"error": message}).encode(), headers)

    def _repo(self, repo_id: str, rev: str | None) -> HubRepo | None:
        """The repo if it exists and the caller may read it; otherwise answers and returns None."""
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if repo.gated:
            auth = self.headers.get("Authorization") or ""
            token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
            if not token:
                self._error(
                    401,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted. You must have access to it "
                    "and be authenticated to access it. Please log in.",
                )
                return None
            if token not in repo.tokens:
                self._error(
                    403,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted and you are not in the authorized "
                    f"list. Visit https://huggingface.co/{repo_id} to ask for access.",
                )
                return None
        if rev is not None and rev not in ("main", repo.sha):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return repo

    # -- verbs ----------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        entry = self._log()
        path = entry.path
        try:
            if m := _RESOLVE.match(path):
                self._resolve(m["repo"], m["rev"], m["path"])
            elif m := _TREE.match(path):
                self._tree(m["repo"], m["rev"], m["path"] or "")
            elif m := _INFO.match(path):
                self._info(m["repo"], m["rev"])
            else:
                self._error(404, "NotFound", f"no route for {path}")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _info(self, repo_id: str, rev: str | None) -> None:
        repo = self._repo(repo_id, rev)
        if repo is None:
            return
        doc = {
            "_id": repo.sha[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.sha,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": [{"rfilename": name} for name in sorted(repo.files)],
        }
        self._send(200, json.dumps(doc).encode())

    def _tree(self, repo_id: str, rev: str, sub: str) -> None:
        repo = self._repo(repo_id, rev)
        if repo is None:
            return
        recursive = "recursive=true" in (urlsplit(self.path).query or "").lower()
        prefix = sub.strip("/") + "/" if sub.strip("/") else ""
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        for name in sorted(repo.files):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                for i in range(len(parts)):
                    folders.add(prefix + "/".join(parts[: i + 1]))
            f = repo.files[name]
            doc: dict[str, Any] = {"type": "file", "path": name, "size": f.size}
            if f.lfs:
                pointer = f.pointer()
                doc["oid"] = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
                doc["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(pointer)}
            else:
                doc["oid"] = f.git_sha1
            entries.append(doc)
        oid = "0" * 40
        entries = [{"type": "directory", "path": d, "oid": oid} for d in sorted(folders)] + entries
        self._send(200, json.dumps(entries).encode())

    def _resolve(self, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo(repo_id, rev)
        if repo is None:
            return
        f = repo.files.get(path)
        commit = {"X-Repo-Commit": repo.sha}
        if f is None:
            self._error(404, "EntryNotFound", f"{path} does not exist on {rev}", commit)
            return
        start, end, status = 0, f.size, 200
        rng = self.headers.get("Range")
        if rng and self.command == "GET":
            m = _RANGE.match(rng.strip())
            if m is None or int(m["start"]) >= f.size:
                self._send(416, b"", {"Content-Range": f"bytes */{f.size}", **commit})
                return
            start = int(m["start"])
            if m["end"]:
                end = min(int(m["end"]) + 1, f.size)
            status = 206
        headers = {
            **commit,
            "ETag": f'"{f.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}";',
        }
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(f.size)
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        drop = self.hub._take_drop(repo_id, path)
        stall = self.hub._take_stall(repo_id, path)
        event = None
        if stall is not None:
            drop, event = stall
        corrupt = self.hub._is_corrupt(repo_id, path)
        sent = 0
        for chunk in f.read(start, end):
            if corrupt and start + sent == 0 and chunk:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            if drop is not None and sent + len(chunk) >= drop:
                self.wfile.write(chunk[: max(drop - sent, 0)])
                self.wfile.flush()
                if event is not None:
                    event.wait(120)
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(chunk)
            sent += len(chunk)
