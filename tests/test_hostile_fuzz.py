"""Property-based hostile inputs: every parser of user or file input, fed near-valid input
(a real document with one thing bent), either accepts it or raises deploy's own error —
never another exception, never unbounded time.

Each parser gets a valid seed and a strategy that changes one field, byte or token of it.
Hypothesis runs derandomised (the same cases every run, in CI too); an example it finds is
kept below as an explicit regression case. The CLI-level contract (one line on stderr, the
documented exit code) is what tests/test_hostile_cli.py checks for each cause.
"""

from __future__ import annotations

import contextlib
import copy
import json
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from toolkit.errors import DeployError

FUZZ = settings(
    max_examples=150,
    deadline=5000,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

#: Values a hostile or careless edit puts where a field was.
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a JSON-like document."""
    out: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((*prefix, i))
            out += _paths(v, (*prefix, i))
    return out


def _bend(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(doc)
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out


def _bent(doc: Any, data: Any) -> Any:
    """`doc` with one field, drawn from all its key paths, set to a drawn junk value."""
    return _bend(doc, data.draw(st.sampled_from(_paths(doc))), data.draw(JUNK))


def _contract(fn: Any, *args: Any) -> None:
    """Accept, or deploy's own error: anything else is a bug."""
    with contextlib.suppress(DeployError):
        fn(*args)


# --- spec strings ---------------------------------------------------------------------------

TOKENS = st.sampled_from(
    [
        "cpu", "ram=24G", "ram=0", "ram=-1G", "ram=1e30G", "ram=lots", "cores=2", "cores=0",
        "cores=99999999999", "bw=80", "bw=nan", "bw=-5", "2xrtx3090", "8xh100", "0xh100",
        "99999999999999xh100", "65xh100", "gpu:24G", "gpu:", "gpu:0G", "m3-max:128G",
        "m3-max", "1.5xh100", "xh100", "h100:999999T", "rtx9999", "", " ", ",", "==", "ram=",
        "ram=24G,ram=24G", "\x00", "é", "8 x h100",
    ]
)  # fmt: skip


@FUZZ
@given(st.lists(TOKENS, min_size=1, max_size=5))
@example(["1000000xh100"])
@example(["99999999999999999999xh100"])
def test_spec_strings(tokens: list[str]) -> None:
    from toolkit.hardware.specstring import parse_spec

    _contract(parse_spec, ",".join(tokens))


# --- hardware profiles ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def profile_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.clihelp import run

    path = tmp_path_factory.mktemp("hw") / "box.json"
    assert run("hw", "--hw", "2xrtx3090,ram=64G,cores=8", "--save", str(path)).exit_code == 0
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


@FUZZ
@given(data=st.data())
def test_hardware_profiles(profile_doc: dict[str, Any], tmp_path: Path, data: Any) -> None:
    from toolkit.hardware.profile import load_hardware

    bent = _bent(profile_doc, data)
    f = tmp_path / "box.json"
    f.write_text(json.dumps(bent, allow_nan=True))
    _contract(load_hardware, str(f))


# --- recipes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recipe_doc() -> dict[str, Any]:
    from toolkit.catalog.loader import shipped_recipes_dir

    doc: dict[str, Any] = yaml.safe_load((shipped_recipes_dir() / "qwen3-coder.yaml").read_text())
    return doc


@FUZZ
@given(data=st.data())
def test_recipes(recipe_doc: dict[str, Any], tmp_path: Path, data: Any) -> None:
    from toolkit.catalog.loader import parse_recipe

    bent = _bent(recipe_doc, data)
    f = tmp_path / "bent.yaml"
    f.write_text(yaml.safe_dump(bent, allow_unicode=True))
    _contract(parse_recipe, f)


# --- config.json ----------------------------------------------------------------------------

CONFIG = {
    "model_type": "qwen3_moe",
    "num_hidden_layers": 48,
    "hidden_size": 2048,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "vocab_size": 151936,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "max_position_embeddings": 262144,
    "torch_dtype": "bfloat16",
    "tie_word_embeddings": False,
}


@FUZZ
@given(st.sampled_from(sorted(CONFIG)), JUNK)
@example("num_attention_heads", 0)
@example("num_hidden_layers", "many")
def test_config_json(key: str, value: Any) -> None:
    from toolkit.inspect.hfconfig import architecture_from_config

    _contract(architecture_from_config, {**CONFIG, key: value})


# --- GGUF headers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from tests.fabricate import write_gguf
    from toolkit.catalog.schema import Architecture

    arch = Architecture(
        model_type="llama", layers=2, hidden_size=64, heads=4, kv_heads=2, head_dim=16,
        vocab_size=64, intermediate_size=128,
    )  # fmt: skip
    (path,) = write_gguf(tmp_path_factory.mktemp("g") / "m.gguf", arch, ftype="Q8_0")
    data = path.read_bytes()
    return data[: min(len(data), 64 * 1024)]  # the header and the start of the data


@FUZZ
@given(data=st.data())
@example(data=None)
def test_gguf_headers(gguf_bytes: bytes, tmp_path: Path, data: Any) -> None:
    from toolkit.inspect.gguf import read_gguf

    raw = bytearray(gguf_bytes)
    if data is None:  # a string length of 2**63 in the first key
        raw[24:32] = struct.pack("<Q", 2**63)
    else:
        kind = data.draw(st.sampled_from(["byte", "u64", "cut"]))
        at = data.draw(st.integers(min_value=0, max_value=min(len(raw), 4096) - 8))
        if kind == "byte":
            raw[at] = data.draw(st.integers(0, 255))
        elif kind == "u64":
            raw[at : at + 8] = struct.pack("<Q", data.draw(st.sampled_from([0, 2**32, 2**63])))
        else:
            del raw[at:]
    f = tmp_path / "bent.gguf"
    f.write_bytes(bytes(raw))
    _contract(read_gguf, f)


# --- plan files -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plan_doc() -> dict[str, Any]:
    from toolkit.api.plan import make_plans

    doc: dict[str, Any] = (
        make_plans("smollm2-135m:q4_1", hw="cpu,ram=24G,cores=2", calibration=[]).plans[0].to_dict()
    )
    return doc


@FUZZ
@given(data=st.data())
def test_plan_files(plan_doc: dict[str, Any], tmp_path: Path, data: Any) -> None:
    from toolkit.api.runs import load_plan_file

    bent = _bent(plan_doc, data)
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(bent, allow_nan=True))
    _contract(load_plan_file, f)


# --- bundle manifests -----------------------------------------------------------------------

MANIFEST: dict[str, Any] = {
    "format": "deploy-bundle/1",
    "toolkit_version": "0.1.0",
    "files": [{"path": "models/x%3Aq4_0/T.gguf", "size": 40, "sha256": "a" * 64, "mode": 420}],
    "models": [
        {
            "variant_id": "x:q4_0",
            "model_id": "x",
            "source": "hf",
            "repo": "o/r",
            "revision": "ab" * 20,
            "files": [
                {"name": "T.gguf", "path": "models/x%3Aq4_0/T.gguf", "size": 40, "sha256": "a" * 64}
            ],
        }
    ],
}


@FUZZ
@given(data=st.data())
@example(data=None)
def test_bundle_manifests(data: Any) -> None:
    from toolkit.store.manifest import check_manifest

    if data is None:  # a 5000-character variant id: refused, never a file name
        bent = _bend(MANIFEST, ("models", 0, "variant_id"), "x" * 5000)
        with pytest.raises(DeployError, match="at most 200"):
            check_manifest(bent)
        return
    else:
        bent = _bent(MANIFEST, data)
    _contract(check_manifest, bent)


# --- run records ----------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.binary(max_size=200), JUNK.map(lambda v: json.dumps(v).encode())))
def test_run_records(blob: bytes) -> None:
    """`ps`, `stop` and `up --name` read records: a damaged one is listed as unreadable."""
    from toolkit.runs import records

    rdir = records.run_dir("fuzzed")
    rdir.mkdir(parents=True, exist_ok=True)
    (rdir / records.RECORD_FILE).write_bytes(blob)
    rec = records.find("fuzzed")
    assert rec is not None
    assert [r.name for r in records.all_records()] == ["fuzzed"]


# --- safetensors headers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def st_header() -> dict[str, Any]:
    from tests.fabricate import hf_tensors
    from toolkit.catalog.schema import Architecture

    arch = Architecture(
        model_type="llama", layers=2, hidden_size=64, heads=4, kv_heads=2, head_dim=16,
        vocab_size=64, intermediate_size=128,
    )  # fmt: skip
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in hf_tensors(arch):
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    return header


@FUZZ
@given(data=st.data())
@example(data=None)
def test_safetensors_headers(st_header: dict[str, Any], tmp_path: Path, data: Any) -> None:
    from toolkit.inspect.hf import read_model_dir

    folder = tmp_path / "m"
    folder.mkdir(exist_ok=True)
    config = {**CONFIG, "model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64}
    config.update(num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=64)
    (folder / "config.json").write_text(json.dumps(config))
    if data is None:  # a header length of 2**63
        blob = struct.pack("<Q", 2**63) + b"{}"
    else:
        text = json.dumps(_bent(st_header, data), allow_nan=True).encode()
        blob = struct.pack("<Q", len(text)) + text
        if data.draw(st.booleans()):
            blob = blob[: data.draw(st.integers(0, len(blob)))]
    (folder / "model.safetensors").write_bytes(blob)
    _contract(read_model_dir, folder)


# --- the CLI contract on fuzzed spec strings: one line, exit 0 or 2, no traceback ----------


@FUZZ
@given(st.lists(TOKENS, min_size=1, max_size=4))
def test_cli_spec_strings(tokens: list[str]) -> None:
    from tests.clihelp import run

    spec = ",".join(tokens)
    if not spec or spec.startswith("-"):
        return
    res = run("hw", "--hw", spec, "--json")
    assert res.exit_code in (0, 2), (spec, res.stderr)
    if res.exit_code == 2:
        assert "Traceback" not in res.stderr
        assert 1 <= len([ln for ln in res.stderr.splitlines() if ln.strip()]) <= 3, res.stderr
