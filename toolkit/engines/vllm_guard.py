"""A key guard for the whole HTTP surface of vLLM and of llama-cpp-python's server.

vLLM's own API-key check covers only paths under /v1, /v2, /inference and /cohere
(vllm/entrypoints/serve/middleware/authenticate.py, GUARDED_PREFIX); its SageMaker route
POST /invocations runs the same inference with no key, and /tokenize, /metrics and others
are open too (the --api-key help text warns about it). deploy adds this ASGI middleware
with vLLM's own `--middleware` flag: every request except GET /health needs the key.

The module vLLM imports is written into the run folder at start (`Launch.files`) and put
on PYTHONPATH; it uses the standard library only (it runs inside vLLM's environment,
where deploy is not installed). `SOURCE` is that module's text.

The keys: the file named by DEPLOY_API_KEYS_FILE, one per line (the run's own key, then
the team's named keys, as `deploy keys` writes it), read again whenever the file
changes, so a revoked or rotated key stops working at once without a restart. Without
that variable (a Kubernetes pod): the one key in VLLM_API_KEY.

llama-cpp-python's server takes one key (its API_KEY setting) and has no middleware flag:
deploy starts it through `PYTHON_MAIN`, a module that wraps the server's `create_app` so
the app it builds carries the same guard, then runs `python -m llama_cpp.server` as usual.
"""

from __future__ import annotations

#: Import name vLLM is given: `--middleware deploy_vllm_guard.RequireKey`.
MODULE = "deploy_vllm_guard"
MIDDLEWARE = f"{MODULE}.RequireKey"
#: The variable naming the keys file.
KEYS_FILE_VAR = "DEPLOY_API_KEYS_FILE"
#: Paths open without the key (the readiness probe).
OPEN_PATHS = ("/health",)

SOURCE = f'''"""deploy's key guard for vLLM (written by deploy; see toolkit/engines/vllm_guard.py).

Every HTTP request except {OPEN_PATHS!r} needs "Authorization: Bearer KEY", KEY one of
the lines of the file ${KEYS_FILE_VAR} names (read again when it changes), else VLLM_API_KEY.
"""

import hashlib
import hmac
import os

OPEN_PATHS = {OPEN_PATHS!r}
_BODY = b'{{"error": "Unauthorized"}}'


def _digest(key):
    return hashlib.sha256(key.encode()).digest()


class RequireKey:
    def __init__(self, app):
        self.app = app
        self.path = os.environ.get("{KEYS_FILE_VAR}", "")
        self.stamp = None
        key = os.environ.get("VLLM_API_KEY", "")
        # No key configured: refuse everything but the open paths.
        self.digests = [_digest(key)] if key and not self.path else []

    def _keys(self):
        if not self.path:
            return self.digests
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp != self.stamp:
                with open(self.path, encoding="utf-8") as fh:
                    lines = [ln.strip() for ln in fh]
                self.digests = [_digest(k) for k in lines if k]
                self.stamp = stamp
        except OSError:
            self.digests, self.stamp = [], None  # no file: no key works
        return self.digests

    def _allowed(self, scope):
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer":
                    return False
                digest = _digest(token.strip())
                # compare with every key, so the time taken does not say which matched
                found = False
                for known in self._keys():
                    found = hmac.compare_digest(digest, known) or found
                return found
        return False

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope.get("method") == "OPTIONS":
            return await self.app(scope, receive, send)
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if path in OPEN_PATHS or self._allowed(scope):
            return await self.app(scope, receive, send)
        if kind == "websocket":
            await send({{"type": "websocket.close", "code": 1008}})
            return None
        await send(
            {{
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_BODY)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }}
        )
        await send({{"type": "http.response.body", "body": _BODY}})
        return None
'''


#: Module run instead of `llama_cpp.server` (`python -m deploy_llamacpp_python ARGS`).
PYTHON_MAIN_MODULE = "deploy_llamacpp_python"

PYTHON_MAIN = f'''"""llama-cpp-python's server with deploy's key guard (written by deploy; see
toolkit/engines/vllm_guard.py): `llama_cpp.server.__main__` builds its app with
`create_app`, which this module wraps to add the guard, then runs it with the same argv."""

import runpy
import sys

import llama_cpp.server.app as _app
from {MODULE} import RequireKey

_create_app = _app.create_app


def create_app(*args, **kwargs):
    app = _create_app(*args, **kwargs)
    app.add_middleware(RequireKey)
    return app


_app.create_app = create_app
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
'''
