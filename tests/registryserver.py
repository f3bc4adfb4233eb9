"""A loopback container registry that speaks the part of the OCI distribution API that
`toolkit.registry.pin` calls, the way Docker Hub and ghcr.io do:

- `HEAD|GET /v2/<name>/manifests/<tag>` answers with the manifest (an OCI image index)
  and its `Docker-Content-Digest`; an unknown tag is 404 `MANIFEST_UNKNOWN`.
- Without a bearer token the registry answers 401 with
  `WWW-Authenticate: Bearer realm="<this server>/token",service="…",scope="repository:<name>:pull"`;
  `GET /token?service=…&scope=…` hands out an anonymous token for that scope.

`omit_digest_header` leaves the digest header out of HEAD answers (some registries do),
so the client must hash the manifest it GETs. Every request is logged in `requests`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

INDEX = "application/vnd.oci.image.index.v1+json"


class Registry:
    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.tokens: dict[str, str] = {}  # token -> scope
        self.requests: list[tuple[str, str, str | None]] = []
        self.omit_digest_header = False
        self.host = ""

    def push(self, name: str, tag: str) -> str:
        """Store an index for name:tag; returns its digest."""
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": INDEX,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": "sha256:" + hashlib.sha256(f"{name}:{tag}".encode()).hexdigest(),
                        "size": 1234,
                        "platform": {"architecture": "amd64", "os": "linux"},
                    }
                ],
            },
            sort_keys=True,
        ).encode()
        self.manifests[(name, tag)] = body
        return "sha256:" + hashlib.sha256(body).hexdigest()


@contextmanager
def serve() -> Iterator[Registry]:
    reg = Registry()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, code: int, body: bytes, headers: dict[str, str], head: bool) -> None:
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _handle(self, head: bool) -> None:
            url = urlsplit(self.path)
            auth = self.headers.get("Authorization")
            reg.requests.append((self.command, url.path, auth))
            if url.path == "/token":
                q = parse_qs(url.query)
                token = secrets.token_hex(8)
                reg.tokens[token] = q.get("scope", [""])[0]
                self._answer(200, json.dumps({"token": token}).encode(), {}, head)
                return
            m = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", url.path)
            if not m:
                self._answer(404, b"{}", {}, head)
                return
            name, tag = m.groups()
            scope = f"repository:{name}:pull"
            token = (auth or "").removeprefix("Bearer ")
            if reg.tokens.get(token) != scope:
                challenge = (
                    f'Bearer realm="http://{reg.host}/token",service="loopback",scope="{scope}"'
                )
                self._answer(401, b"{}", {"WWW-Authenticate": challenge}, head)
                return
            body = reg.manifests.get((name, tag))
            if body is None:
                err = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
                self._answer(404, json.dumps(err).encode(), {}, head)
                return
            headers = {"Content-Type": INDEX}
            if not (head and reg.omit_digest_header):
                headers["Docker-Content-Digest"] = "sha256:" + hashlib.sha256(body).hexdigest()
            self._answer(200, body, headers, head)

        def do_HEAD(self) -> None:
            self._handle(head=True)

        def do_GET(self) -> None:
            self._handle(head=False)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    reg.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield reg
    finally:
        server.shutdown()
        server.server_close()
