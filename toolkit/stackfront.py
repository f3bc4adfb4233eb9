"""The front door of a stack that mixes llama.cpp and vLLM models.

llama-server's router serves every llama.cpp model of a stack behind one port; vLLM serves
one model per server and has no router of its own for other engines. A mixed stack runs
the router (if it has llama.cpp models) and one vLLM server per vLLM model on loopback
ports, and puts this thin ASGI app in front, on the stack's port:

- every request but GET /health needs one of the stack's keys (deploy's vLLM key guard,
  the same middleware, reading the run's key file again when it changes: a named key
  added, rotated or revoked takes effect at once);
- POST /v1/... goes to the backend serving the body's `model` (an alias); the response,
  streamed or not, is passed through as it comes; the backends only ever see the run's
  own key, so they need no restart when the team's keys change;
- GET /v1/models lists every alias whose backend answers.

It runs in the vLLM engine's venv on Starlette, uvicorn and httpx (vLLM's own
dependencies; deploy is not installed there), as the stack run's process: it starts the
backends as its children, and when one of them exits it stops the others and exits, so
the run dies as a whole and `deploy stop` (the process group) ends everything.
`SOURCE` is the script written into the run folder.
"""

from __future__ import annotations

#: File names in the run folder.
SCRIPT = "deploy_front.py"
CONFIG = "front.json"

SOURCE = r'''"""deploy's front door for a mixed stack (see toolkit/stackfront.py in deploy)."""

import json
import os
import signal
import subprocess
import sys
import threading

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from deploy_vllm_guard import RequireKey

with open(sys.argv[1], encoding="utf-8") as fh:
    CFG = json.load(fh)
ROUTES = CFG["routes"]  # alias -> backend base URL (http://127.0.0.1:PORT)
BACKENDS = sorted(set(ROUTES.values()))
HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive",
       "authorization"}
client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0))


def backend_headers(headers):
    with open(CFG["backend_key_file"], encoding="utf-8") as fh:
        key = fh.read().strip()
    out = {k: v for k, v in headers.items() if k.lower() not in HOP}
    out["authorization"] = "Bearer " + key
    return out


async def health(request):
    return JSONResponse({"status": "ok"})


async def send(build):
    """Send, once more on a new connection if the backend closed a kept-alive one without
    answering (llama-server's router does now and then; nothing was processed)."""
    for attempt in (1, 2):
        try:
            return await client.send(build(), stream=True)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            if attempt == 2:
                raise


async def models(request):
    data = []
    for base in BACKENDS:
        try:
            r = await send(lambda: client.build_request(
                "GET", base + "/v1/models", headers=backend_headers({}), timeout=30.0))
            await r.aread()
        except httpx.HTTPError:
            continue
        if r.status_code == 200:
            data += [m for m in r.json().get("data", []) if m.get("id") in ROUTES]
    return JSONResponse({"object": "list", "data": data})


def error(status, message):
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error"}}, status_code=status
    )


async def forward(request):
    body = await request.body()
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError):
        return error(400, "the request body is not a JSON object")
    base = ROUTES.get(model)
    if base is None:
        return error(404, f"no model {model!r} here; GET /v1/models lists them")
    def build():
        return client.build_request(
            request.method,
            base + request.url.path,
            params=request.query_params,
            headers=backend_headers(request.headers),
            content=body,
        )

    try:
        resp = await send(build)
    except httpx.HTTPError as exc:
        return error(502, f"the backend for {model!r} did not answer ({type(exc).__name__})")
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in HOP}
    return StreamingResponse(
        resp.aiter_raw(), status_code=resp.status_code, headers=headers,
        background=BackgroundTask(resp.aclose),
    )


app = RequireKey(Starlette(routes=[
    Route("/health", health, methods=["GET"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/{rest:path}", forward, methods=["POST"]),
]))


def main():
    children = []
    for child in CFG["children"]:
        env = {**os.environ, **child["env"]}
        children.append(subprocess.Popen(child["argv"], env=env))
        print(f"[deploy front] started {child['name']} (pid {children[-1].pid})", flush=True)

    def watch():
        while True:
            for c, spec in zip(children, CFG["children"]):
                if c.poll() is not None:
                    print(f"[deploy front] {spec['name']} exited ({c.returncode}); stopping",
                          flush=True)
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
            threading.Event().wait(1.0)

    threading.Thread(target=watch, daemon=True).start()
    tls = dict(zip(sys.argv[2::2], sys.argv[3::2]))  # --ssl-certfile C --ssl-keyfile K
    try:
        uvicorn.run(app, host=CFG["host"], port=CFG["port"], log_level="warning",
                    ssl_certfile=tls.get("--ssl-certfile"), ssl_keyfile=tls.get("--ssl-keyfile"))
    finally:
        for c in children:
            if c.poll() is None:
                c.terminate()
        for c in children:
            try:
                c.wait(30)
            except subprocess.TimeoutExpired:
                c.kill()


if __name__ == "__main__":
    main()
'''
