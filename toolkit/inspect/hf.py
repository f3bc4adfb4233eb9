"""Hugging Face checkpoints: config.json + safetensors headers, local or on the hub.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`), then the
data. The headers alone give the exact bytes of every tensor, so FP8 checkpoints (the
e4m3 weights plus their f32 `weight_scale_inv` blocks) and MXFP4 ones (gpt-oss
`*_blocks` u8 + `*_scales` e8m0) are sized exactly without reading weights.

`read_hub_model` fetches only config.json, the index and the headers (HTTP range
requests through huggingface_hub), or a GGUF header; never weights.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.catalog.schema import Architecture, Format
from toolkit.errors import NotFound, UsageError
from toolkit.inspect.hfconfig import (
    architecture_from_config,
    context_from_config,
    format_from_config,
)
from toolkit.inspect.layout import WeightLayout, table_layout
from toolkit.inspect.params import ParamBreakdown, param_breakdown

#: A safetensors header: tensor name → {dtype, shape, data_offsets}.
Header = Mapping[str, Mapping[str, Any]]

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_EXPERT = re.compile(r"\.experts\.")
_EMBED = re.compile(r"(?:^|\.)(?:embed_tokens|wte|word_embeddings)\.weight$")
_HEAD = re.compile(
    r"(?:^|\.)lm_head\.weight$|^(?:model\.)?(?:language_model\.)?(?:model\.)?norm\.weight$"
)
_MTP = re.compile(r"^(?:model\.)?mtp\.")
#: Encoders and projectors of multimodal checkpoints: loaded, but not decoder layers.
_TOWER = re.compile(r"(?:vision|visual|audio|image|speech|mm_projector|multi_modal)")


@dataclass(frozen=True)
class HfModel:
    #: Local folder or "owner/name" on the hub.
    source: str
    revision: str | None
    config: dict[str, Any] = field(repr=False)
    architecture: Architecture = field(repr=False)
    context_length: int | None
    format: Format
    params: ParamBreakdown = field(repr=False)
    #: Exact layout when safetensors headers were read; None for config-only folders.
    layout: WeightLayout | None
    #: Weight files (name, bytes) as listed; sizes None when unknown.
    files: tuple[tuple[str, int | None], ...] = ()

    @property
    def file_bytes(self) -> int | None:
        if not self.files or any(s is None for _, s in self.files):
            return None
        return sum(s or 0 for _, s in self.files)

    @property
    def quant(self) -> str:
        return str(self.format)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of one local safetensors file (reads 8 + N bytes)."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UsageError(f"{path.name} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise UsageError(f"{path.name}: header length {n} is implausible")
        data = f.read(n)
    try:
        header: dict[str, Any] = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path.name}: header is not JSON") from exc
    problem = header_problem(header)
    if problem:
        raise UsageError(
            f"{path.name}: safetensors header {problem}",
            hint="the file is damaged or not safetensors: download it again",
        )
    return header


def header_problem(header: Any) -> str | None:
    """What is wrong with a parsed safetensors header, or None: every tensor needs a
    dtype, a shape of sizes, and data_offsets [begin, end] with 0 <= begin <= end."""

    def size(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 50

    if not isinstance(header, dict):
        return "is not a JSON object"
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            return f"entry {name!r} is not an object"
        offsets = info.get("data_offsets")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(size(o) for o in offsets)
            or offsets[0] > offsets[1]
        ):
            return f"entry {name!r} has no valid data_offsets [begin, end]"
        shape = info.get("shape")
        if not isinstance(shape, list) or not all(size(d) for d in shape):
            return f"entry {name!r} has no valid shape"
        if not isinstance(info.get("dtype"), str):
            return f"entry {name!r} has no dtype"
    return None


def layout_from_headers(headers: Iterable[Header], arch: Architecture) -> WeightLayout:
    """Exact WeightLayout from safetensors headers.

    Tensors of layers at or beyond `arch.layers` (DeepSeek's MTP layer 61) and `mtp.*`
    tensors (Qwen3-Next) go to `unloaded_bytes`: engines skip them without speculative
    decoding. Vision/audio towers and projectors count as `other` weights (in the total:
    vLLM loads them), never as decoder layers.
    """
    per_layer = [0] * arch.layers
    experts = [0] * arch.layers
    embedding = output = other = unloaded = 0
    dtype: dict[str, int] = {}
    for header in headers:
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            nbytes = int(end) - int(begin)
            m = None if _TOWER.search(name) else _LAYER.search(name)
            if _MTP.match(name) or (m is not None and int(m.group(1)) >= arch.layers):
                unloaded += nbytes
                continue
            if m is not None:
                i = int(m.group(1))
                per_layer[i] += nbytes
                if _EXPERT.search(name):
                    experts[i] += nbytes
            elif _EMBED.search(name):
                embedding += nbytes
            elif _HEAD.search(name):
                output += nbytes
            else:
                other += nbytes
            key = str(info.get("dtype", "?"))
            dtype[key] = dtype.get(key, 0) + nbytes
    return table_layout(
        arch,
        per_layer=per_layer,
        experts=experts,
        embedding=embedding,
        output=output,
        other=other,
        dtype=dtype,
        exact=True,
        unloaded=unloaded,
    )


def hf_model_from(
    source: str,
    revision: str | None,
    config: dict[str, Any],
    headers: list[Header] | None,
    files: tuple[tuple[str, int | None], ...],
) -> HfModel:
    arch = architecture_from_config(config)
    layout = layout_from_headers(headers, arch) if headers else None
    return HfModel(
        source=source,
        revision=revision,
        config=config,
        architecture=arch,
        context_length=context_from_config(config),
        format=format_from_config(config),
        params=param_breakdown(arch),
        layout=layout,
        files=files,
    )


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            names = sorted({str(v) for v in weight_map.values()})
        except (ValueError, AttributeError, TypeError) as exc:
            raise UsageError(
                f"{index.name} is not a safetensors index ({type(exc).__name__})",
                hint="download the model's index again, or remove it to read the shards",
            ) from None
        if any(n.startswith("/") or ".." in Path(n).parts for n in names):
            raise UsageError(f"{index.name} names files outside the model folder")
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise NotFound(
                f"{folder}: shards listed in the index are missing: {', '.join(missing[:3])}",
                hint="download every shard (or only config.json to estimate)",
            )
        return [folder / n for n in names]
    return sorted(folder.glob("*.safetensors"))


def read_model_dir(path: str | os.PathLike[str]) -> HfModel:
    """A local Hugging Face model folder: config.json, plus safetensors headers if present."""
    folder = Path(path)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise NotFound(f"no config.json in {folder}", hint="pass a model folder or a .gguf file")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{cfg_path} is not valid JSON") from exc
    shards = _safetensors_files(folder)
    headers: list[Header] = [read_safetensors_header(p) for p in shards]
    files = tuple((p.name, p.stat().st_size) for p in shards)
    return hf_model_from(str(folder), None, config, headers or None, files)


def read_hub_model(repo_id: str, revision: str | None = None, filename: str | None = None) -> Any:
    """A hub repo, reading only headers. See `toolkit.inspect.hub.read_hub_model`."""
    from toolkit.inspect.hub import read_hub_model as _read

    return _read(repo_id, revision=revision, filename=filename)
