"""Reading hub repos through the real huggingface_hub client against tests/hubserver.py.

Proves that only headers travel: every GET of a weight file carries a Range, and the bytes
asked for are a small fraction of the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fabricate import hf_tensors, write_gguf, write_safetensors_dir
from hubserver import HubServer
from test_inspect_gguf import SMALL_MOE
from test_inspect_hf import QWEN3_CODER_30B_CONFIG

from toolkit.catalog.schema import Architecture, Moe
from toolkit.errors import NotFound, UsageError
from toolkit.inspect import load_model_source
from toolkit.inspect.gguf import GgufModel, read_gguf
from toolkit.inspect.hf import HfModel, read_model_dir
from toolkit.inspect.hub import read_hub_model

#: ~100 MB of Q8_0 weights (sparse on disk): big enough that a full download would show.
MID_MOE = Architecture(
    model_type="qwen3_moe",
    layers=8,
    hidden_size=512,
    intermediate_size=1024,
    heads=8,
    kv_heads=2,
    head_dim=64,
    vocab_size=32000,
    moe=Moe(experts=8, experts_per_token=2, expert_intermediate_size=1024),
)
SMALL_CONFIG = {
    **QWEN3_CODER_30B_CONFIG,
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "moe_intermediate_size": 256,
    "intermediate_size": 512,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "vocab_size": 1000,
}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> HubServer:
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    yield server  # type: ignore[misc]
    server.stop()


def _bytes_asked(hub: HubServer, suffix: str) -> int:
    total = 0
    for r in hub.gets(suffix):
        assert r.range is not None, f"a full GET of {r.path}"
        start, _, end = r.range.removeprefix("bytes=").partition("-")
        total += int(end) - int(start) + 1
    return total


def test_gguf_repo_reads_only_the_header(hub: HubServer, tmp_path: Path) -> None:
    (path,) = write_gguf(tmp_path / "mid-moe-Q8_0.gguf", MID_MOE, ftype="Q8_0")
    size = path.stat().st_size
    assert size > 90e6
    hub.add_repo("org/mid-moe-GGUF", {"mid-moe-Q8_0.gguf": path, "README.md": b"# mid\n"})
    got = read_hub_model("org/mid-moe-GGUF")
    assert isinstance(got, GgufModel)
    local = read_gguf(path)
    assert got.architecture == local.architecture
    assert got.layout == local.layout
    assert got.file_bytes == size
    assert got.quant == "q8_0"
    asked = _bytes_asked(hub, ".gguf")
    assert 0 < asked < 0.05 * size


def test_split_gguf_on_the_hub(hub: HubServer, tmp_path: Path) -> None:
    parts = write_gguf(tmp_path / "m-Q8_0.gguf", SMALL_MOE, ftype="Q8_0", split_max_bytes=10**6)
    assert len(parts) > 1
    files: dict[str, Path | bytes] = {f"Q8_0/{p.name}": p for p in parts}
    files["m-Q4_K_M.gguf"] = write_gguf(tmp_path / "m-Q4_K_M.gguf", SMALL_MOE)[0]
    hub.add_repo("org/m-GGUF", files)
    with pytest.raises(UsageError) as err:
        read_hub_model("org/m-GGUF")
    assert err.value.hint is not None and "m-Q4_K_M.gguf" in err.value.hint
    got = read_hub_model("org/m-GGUF", filename=f"Q8_0/{parts[0].name}")
    assert isinstance(got, GgufModel)
    assert len(got.paths) == len(parts)
    assert got.file_bytes == sum(p.stat().st_size for p in parts)
    assert got.layout == read_gguf(parts[0]).layout


def test_safetensors_repo_reads_config_and_headers(hub: HubServer, tmp_path: Path) -> None:
    folder = tmp_path / "repo"
    from toolkit.inspect.hfconfig import architecture_from_config

    arch = architecture_from_config(SMALL_CONFIG)
    shards = write_safetensors_dir(folder, SMALL_CONFIG, hf_tensors(arch), shard_bytes=3 * 10**6)
    assert len(shards) > 1
    hub.add_repo("org/small-moe", {p.name: p for p in folder.iterdir()})
    got = read_hub_model("org/small-moe")
    assert isinstance(got, HfModel)
    local = read_model_dir(folder)
    assert got.architecture == local.architecture
    assert got.layout == local.layout
    assert got.file_bytes == local.file_bytes
    assert got.source == "org/small-moe"
    total = sum(p.stat().st_size for p in shards)
    assert _bytes_asked(hub, ".safetensors") < total


def test_load_model_source_names_the_hub_repo(hub: HubServer, tmp_path: Path) -> None:
    (path,) = write_gguf(tmp_path / "Tiny-Q8_0.gguf", SMALL_MOE, ftype="Q8_0")
    hub.add_repo("org/Tiny-GGUF", {"Tiny-Q8_0.gguf": path})
    src = load_model_source("org/Tiny-GGUF")
    assert src.kind == "hub-gguf"
    assert src.model.repo == "org/Tiny-GGUF" and src.variant.repo == "org/Tiny-GGUF"
    assert src.variant.quant == "q8_0"
    assert src.variant.files[0].name == "Tiny-Q8_0.gguf"
    assert src.variant.total_size() == path.stat().st_size


def test_unknown_and_gated_repos_are_not_found(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        read_hub_model("org/nothing-here")
    hub.add_repo("org/gated", {"config.json": json.dumps(SMALL_CONFIG).encode()}, gated=True)
    with pytest.raises(NotFound) as err:
        read_hub_model("org/gated")
    assert err.value.hint is not None and "HF_TOKEN" in err.value.hint


def test_offline_reads_the_cache_and_never_the_network(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo("org/small", {"config.json": json.dumps(SMALL_CONFIG).encode()})
    monkeypatch.setenv("DEPLOY_OFFLINE", "1")
    with pytest.raises(NotFound, match="offline"):
        read_hub_model("org/small")
    assert hub.requests == []
    # once config.json is in the cache (an online read put it there), offline works
    monkeypatch.delenv("DEPLOY_OFFLINE")
    online = read_hub_model("org/small")
    monkeypatch.setenv("DEPLOY_OFFLINE", "1")
    before = len(hub.requests)
    offline = read_hub_model("org/small")
    assert len(hub.requests) == before
    assert isinstance(offline, HfModel) and isinstance(online, HfModel)
    assert offline.architecture == online.architecture
    assert offline.layout is None


def test_unreachable_hub_is_not_found_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(NotFound) as err:
        read_hub_model("org/any")
    assert err.value.hint is not None and "DEPLOY_OFFLINE" in err.value.hint
