"""Golden argv: the engines' command lines for the planner's Qwen3-Coder plans (and the
SmolLM2 plans this machine runs), checked in under tests/golden/argv/<hardware>/.

Each file holds the plan (input) and the rendered launches (output). The test renders the
stored plan again and compares, so a change in the engines' rendering or in the recipes'
engine flags shows up as a diff. Regenerate with `scripts/regen-golden-argv` after a
deliberate change (it asks the real planner again) and review the diff like code.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from toolkit.engines import InstalledEngine, build_launch
from toolkit.engines.flags import parse_vllm_flag_index, unknown_flags
from toolkit.engines.serving import RecipeServing, recipe_serving
from toolkit.errors import EngineError
from toolkit.planner.types import Plan, PlanRequest

GOLDEN = Path(__file__).parent / "golden" / "argv"
VLLM_032_FLAGS = parse_vllm_flag_index((GOLDEN / "vllm-0.32.0-flags.txt").read_text())

#: Hardware the golden plans are made for, and what is planned there.
HARDWARE = (
    "cpu,ram=24G",
    "1xrtx4090,ram=64G",
    "2xrtx3090,ram=64G",
    "1xh100,ram=256G",
    "8xh100,ram=2T",
)
MODELS: tuple[tuple[str, str, PlanRequest | None], ...] = (
    *((hw, "qwen3-coder", None) for hw in HARDWARE),
    ("cpu,ram=24G", "smollm2-135m", PlanRequest(engine="llamacpp")),
    ("cpu,ram=24G", "smollm2-135m", PlanRequest(engine="vllm")),
)
#: The first plans per (hardware, model) that get a golden file.
TOP = 6

E = Path("/opt/deploy/engines")
ENGINES: dict[str, InstalledEngine] = {
    "llamacpp": InstalledEngine(
        name="llamacpp", path=E / "llamacpp/bin/llama-server", version="golden", backend="CUDA"
    ),
    "llamacpp-cpu": InstalledEngine(
        name="llamacpp", path=E / "llamacpp/bin/llama-server", version="golden", backend="CPU"
    ),
    "llamacpp-python": InstalledEngine(
        name="llamacpp-python",
        path=E / "llamacpp-python/venv/bin/python",
        version="golden",
        backend="CPU",
        python=E / "llamacpp-python/venv/bin/python",
        distribution="llama-cpp-python",
    ),
    "vllm": InstalledEngine(
        name="vllm",
        path=E / "vllm/venv/bin/vllm",
        version="golden",
        backend="CUDA",
        python=E / "vllm/venv/bin/python",
        distribution="vllm",
    ),
    "vllm-cpu": InstalledEngine(
        name="vllm",
        path=E / "vllm/venv/bin/python",
        version="golden",
        backend="CPU",
        python=E / "vllm/venv/bin/python",
        distribution="vllm-cpu",
    ),
}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


@functools.cache
def _serving(variant_id: str, model_id: str, engine: str) -> RecipeServing:
    return recipe_serving(Plan.from_dict(_STUB | {"variant_id": variant_id}), engine)


#: recipe_serving reads only variant_id from a plan.
_STUB: dict[str, Any] = {
    "schema": 1,
    "model_id": "",
    "variant_id": "",
    "engine": "llamacpp",
    "placement": "cpu",
    "devices": [],
    "ctx": 1,
    "concurrency": 1,
    "kv_dtype": "f16",
    "memory": [],
    "speed": {
        "decode_tok_s": None,
        "decode_tok_s_aggregate": None,
        "prefill_tok_s": None,
        "basis": "",
    },
    "kernel": "",
    "format": "",
    "quant": "",
    "download_bytes": None,
    "weights_bytes": 0,
    "kv_bytes_per_token": 0,
}


def render(plan: Plan) -> dict[str, Any]:
    """Every launch of `plan` with fixed paths: {engine key: redacted launch or refusal}."""
    name = slug(plan.variant_id)
    kw: dict[str, Any] = {
        "model_path": Path("/models") / name,
        "host": "127.0.0.1",
        "port": 8080,
        "api_key_file": Path("/home/user/.local/share/deploy/keys") / f"{name}.key",
        "run_dir": Path("/home/user/.local/share/deploy/runs") / name,
        "serving": _serving(plan.variant_id, plan.model_id, plan.engine),
    }
    gpu = any(not d.startswith("cpu") for d in plan.devices)
    if plan.engine == "llamacpp":
        keys = ["llamacpp" if gpu else "llamacpp-cpu", "llamacpp-python"]
    else:
        keys = ["vllm" if gpu else "vllm-cpu"]
    out: dict[str, Any] = {}
    for key in keys:
        try:
            out[key] = build_launch(plan, ENGINES[key], **kw).redacted()
        except EngineError as exc:
            out[key] = {"refused": exc.message}
    return out


def golden_path(hw: str, plan: Plan) -> Path:
    return GOLDEN / slug(hw) / f"{slug(plan.variant_id)}.json"


def regenerate() -> list[Path]:
    """Ask the real planner for the plans and write every golden file (stale ones removed)."""
    from toolkit.api.plan import make_plans

    written: list[Path] = []
    for hw, model, request in MODELS:
        result = make_plans(model, request, hw=hw, calibration=[])
        for plan in result.plans[:TOP]:
            path = golden_path(hw, plan)
            if path in written:
                continue
            doc = {"hardware": hw, "plan": plan.to_dict(), "launch": render(plan)}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
            written.append(path)
    for stale in set(GOLDEN.glob("*/*.json")) - set(written):
        stale.unlink()
    return written


def golden_files() -> list[Path]:
    return sorted(GOLDEN.glob("*/*.json"))


def test_golden_files_cover_every_hardware_and_both_engines() -> None:
    docs = [json.loads(p.read_text()) for p in golden_files()]
    assert {d["hardware"] for d in docs} == set(HARDWARE)
    keys = {k for d in docs for k in d["launch"]}
    assert keys >= {"llamacpp", "llamacpp-cpu", "llamacpp-python", "vllm", "vllm-cpu"}
    # the Python fallback is refused somewhere (slots / MoE offload) and runs somewhere
    py = [d["launch"]["llamacpp-python"] for d in docs if "llamacpp-python" in d["launch"]]
    assert any("refused" in x for x in py) and any("argv" in x for x in py)


@pytest.mark.parametrize("path", golden_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_argv(path: Path) -> None:
    doc = json.loads(path.read_text())
    plan = Plan.from_dict(doc["plan"])
    assert render(plan) == doc["launch"], (
        f"{path} differs; if the change is intended run scripts/regen-golden-argv and "
        "review the diff"
    )


@pytest.mark.parametrize("path", golden_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_vllm_argv_uses_only_vllm_032_flags(path: Path) -> None:
    for key, la in json.loads(path.read_text())["launch"].items():
        if key.startswith("vllm"):
            assert unknown_flags(la["argv"], VLLM_032_FLAGS, engine="vllm") == []


def test_current_plans_still_render() -> None:
    """The planner's plans today (not the stored ones) render for every engine."""
    from toolkit.api.plan import make_plans

    for hw, model, request in MODELS:
        for plan in make_plans(model, request, hw=hw, calibration=[]).plans[:TOP]:
            launches = render(plan)
            assert launches
            for la in launches.values():
                assert "refused" in la or la["argv"]
