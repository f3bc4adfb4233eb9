"""A key guard for vLLM's whole HTTP surface.

vLLM's own API-key check covers only paths under /v1, /v2, /inference and /cohere
(vllm/entrypoints/serve/middleware/authenticate.py, GUARDED_PREFIX); its SageMaker route
POST /invocations runs the same inference with no key, and /tokenize, /metrics and others
are open too (the --api-key help text warns about it). deploy adds this ASGI middleware
with vLLM's own `--middleware` flag: every request except GET /health needs the key.

The module vLLM imports is written into the run folder at start (`Launch.files`) and put
on PYTHONPATH; it uses the standard library only (it runs inside vLLM's environment,
where deploy is not installed). `SOURCE` is that module's text.
"""

from __future__ import annotations

#: Import name vLLM is given: `--middleware deploy_vllm_guard.RequireKey`.
MODULE = "deploy_vllm_guard"
MIDDLEWARE = f"{MODULE}.RequireKey"
#: Paths open without the key (the readiness probe).
OPEN_PATHS = ("/health",)

SOURCE = f'''"""deploy's key guard for vLLM (written by deploy; see toolkit/engines/vllm_guard.py).

Every HTTP request except {OPEN_PATHS!r} needs "Authorization: Bearer <VLLM_API_KEY>".
"""

import hashlib
import hmac
import os

OPEN_PATHS = {OPEN_PATHS!r}
_BODY = b'{{"error": "Unauthorized"}}'


class RequireKey:
    def __init__(self, app):
        self.app = app
        key = os.environ.get("VLLM_API_KEY", "")
        # No key configured: refuse everything but the open paths.
        self.digest = hashlib.sha256(key.encode()).digest() if key else None

    def _allowed(self, scope):
        if self.digest is None:
            return False
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    digest = hashlib.sha256(token.strip().encode()).digest()
                    return hmac.compare_digest(digest, self.digest)
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
