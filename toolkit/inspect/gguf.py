"""Read a GGUF file's header: metadata and tensor table, never the tensor data.

The parser streams the header through a `read_at(offset, size)` callable, so the same
code reads a local file (a few MB read from a 290 GB file, sparse or not) and a remote
one (HTTP range requests, see `toolkit.inspect.hub`). Type sizes come from the `gguf`
package (`GGML_QUANT_SIZES`, ggml's block table). Large metadata arrays (the tokenizer's
vocabulary and merges) are skipped, keeping only their length.

Split files (`name-00001-of-00003.gguf`): every part has its own header listing the
tensors it holds; `read_gguf` on any part reads all parts that sit beside it.

GGUF layout (ggml-org/ggml docs/gguf.md): magic "GGUF", u32 version, u64 tensor count,
u64 metadata count, metadata (key string, u32 type, value), tensor infos (name, u32
n_dims, u64 dims…, u32 type, u64 offset), padding to `general.alignment` (default 32),
then tensor data.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import NotFound, UsageError
from toolkit.inspect.layout import REPACK_TYPES, WeightLayout, table_layout

if TYPE_CHECKING:
    from toolkit.catalog.schema import Architecture

ReadAt = Callable[[int, int], bytes]

#: Metadata arrays longer than this are skipped (only their length is kept).
_MAX_ARRAY = 4096
_SPLIT = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
#: GGUF value types (ggml docs/gguf.md): fixed sizes and struct codes.
_SCALAR: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING = 8
_ARRAY = 9


@dataclass(frozen=True)
class SkippedArray:
    """A metadata array too long to keep (tokenizer vocabularies): its type and length."""

    item_type: int
    length: int


@dataclass(frozen=True)
class GgufTensor:
    name: str
    #: ggml order (innermost first), as stored.
    shape: tuple[int, ...]
    type_name: str
    #: Offset inside the data section of its file part.
    offset: int
    nbytes: int
    #: Which file part holds it (0 for unsplit files).
    part: int = 0

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class GgufHeader:
    """One file part's header."""

    version: int
    metadata: dict[str, Any]
    tensors: tuple[GgufTensor, ...]
    #: Where tensor data starts (after alignment padding).
    data_offset: int
    alignment: int

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


@dataclass(frozen=True)
class GgufModel:
    paths: tuple[str, ...]
    #: `general.architecture` (llama, qwen3moe, deepseek2, gemma3, gpt-oss …).
    gguf_arch: str
    architecture: Architecture
    context_length: int | None
    #: LlamaFileType name ("Q4_K_M") from `general.file_type`, None when absent.
    file_type: str | None
    #: Quant key for a catalog variant ("q4_k_m", "ud-q4_k_xl").
    quant: str
    name: str | None
    layout: WeightLayout
    #: Bytes of each file part (header + data); None where unknown.
    part_bytes: tuple[int | None, ...]
    tensors: tuple[GgufTensor, ...]
    metadata: dict[str, Any] = field(repr=False)

    @property
    def file_bytes(self) -> int | None:
        """Bytes of all parts on disk; None when a part size is unknown."""
        if any(b is None for b in self.part_bytes):
            return None
        return sum(b or 0 for b in self.part_bytes)

    @property
    def vocab_size(self) -> int:
        return self.architecture.vocab_size


class _Stream:
    """Sequential reads over `read_at` with a growing buffer."""

    def __init__(self, read_at: ReadAt, chunk: int = 1 << 20) -> None:
        self._read_at = read_at
        self._buf = b""
        self._start = 0
        self.pos = 0
        self._chunk = chunk

    def _need(self, n: int) -> None:
        end = self.pos + n
        if self._start <= self.pos and end <= self._start + len(self._buf):
            return
        want = max(n, self._chunk)
        self._chunk = min(self._chunk * 2, 16 << 20)
        data = self._read_at(self.pos, want)
        if len(data) < n:
            raise UsageError("truncated GGUF header", hint="the file is incomplete: pull it again")
        self._buf, self._start = data, self.pos

    def take(self, n: int) -> bytes:
        self._need(n)
        i = self.pos - self._start
        self.pos += n
        return self._buf[i : i + n]

    def unpack(self, fmt: str, size: int) -> Any:
        return struct.unpack(fmt, self.take(size))[0]

    def skip(self, n: int) -> None:
        self.pos += n

    def string(self) -> str:
        n = self.unpack("<Q", 8)
        return self.take(n).decode("utf-8", errors="replace")


def _value(s: _Stream, vtype: int) -> Any:
    if vtype in _SCALAR:
        fmt, size = _SCALAR[vtype]
        return s.unpack(fmt, size)
    if vtype == _STRING:
        return s.string()
    if vtype == _ARRAY:
        itype = s.unpack("<I", 4)
        count = s.unpack("<Q", 8)
        if count > _MAX_ARRAY:
            if itype in _SCALAR:
                s.skip(count * _SCALAR[itype][1])
            elif itype == _STRING:
                for _ in range(count):
                    s.skip(s.unpack("<Q", 8))
            else:
                raise UsageError("nested GGUF arrays are not supported")
            return SkippedArray(itype, count)
        return [_value(s, itype) for _ in range(count)]
    raise UsageError(f"unknown GGUF value type {vtype}", hint="is this a GGUF file?")


def _tensor_nbytes(type_id: int, n_elements: int) -> tuple[str, int]:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        qtype = GGMLQuantizationType(type_id)
    except ValueError:
        raise UsageError(
            f"unknown ggml tensor type {type_id}",
            hint="the file needs a newer gguf package: pip install -U gguf",
        ) from None
    block, size = GGML_QUANT_SIZES[qtype]
    return qtype.name, n_elements // block * size


def parse_header(read_at: ReadAt, *, part: int = 0) -> GgufHeader:
    """Parse one GGUF header through `read_at(offset, size)`."""
    s = _Stream(read_at)
    if s.take(4) != b"GGUF":
        raise UsageError("not a GGUF file (bad magic)", hint="pass a .gguf file")
    version = s.unpack("<I", 4)
    if version not in (2, 3):
        raise UsageError(f"unsupported GGUF version {version}")
    n_tensors = s.unpack("<Q", 8)
    n_kv = s.unpack("<Q", 8)
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = s.string()
        vtype = s.unpack("<I", 4)
        metadata[key] = _value(s, vtype)
    raw: list[tuple[str, tuple[int, ...], int, int]] = []
    for _ in range(n_tensors):
        name = s.string()
        n_dims = s.unpack("<I", 4)
        shape = tuple(s.unpack("<Q", 8) for _ in range(n_dims))
        type_id = s.unpack("<I", 4)
        offset = s.unpack("<Q", 8)
        raw.append((name, shape, type_id, offset))
    alignment = int(metadata.get("general.alignment", 32))
    data_offset = -(-s.pos // alignment) * alignment
    tensors = []
    for name, shape, type_id, offset in raw:
        n = 1
        for d in shape:
            n *= d
        type_name, nbytes = _tensor_nbytes(type_id, n)
        tensors.append(GgufTensor(name, shape, type_name, offset, nbytes, part))
    return GgufHeader(version, metadata, tuple(tensors), data_offset, alignment)


def file_reader(path: Path) -> ReadAt:
    """`read_at` over a local file (pread: no state, no whole-file mapping)."""

    def read_at(offset: int, size: int) -> bytes:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    return read_at


def split_parts(path: Path) -> list[Path]:
    """All parts of a split GGUF given any one part (or just [path])."""
    m = _SPLIT.match(path.name)
    if m is None:
        return [path]
    count = int(m.group("count"))
    parts = [
        path.with_name(f"{m.group('stem')}-{i:05d}-of-{count:05d}.gguf")
        for i in range(1, count + 1)
    ]
    missing = [p.name for p in parts if not p.exists()]
    if missing:
        raise NotFound(
            f"split GGUF {path.name} is missing parts: {', '.join(missing)}",
            hint="download every part into the same folder",
        )
    return parts


_LAYER = re.compile(r"^blk\.(\d+)\.")


def layout_from_tensors(
    tensors: tuple[GgufTensor, ...], arch: Architecture, *, mtp_layers: int = 0
) -> WeightLayout:
    """Exact WeightLayout from a GGUF tensor table.

    Layers at or beyond `arch.layers` (DeepSeek/GLM next-token-prediction blocks that
    llama.cpp flags to skip) go to `unloaded_bytes`.
    """
    entries = ((t.name, t.type_name, t.nbytes, len(t.shape)) for t in tensors)
    return layout_from_entries(entries, arch, exact=True)


def layout_from_entries(
    entries: Iterable[tuple[str, str, int, int]], arch: Architecture, *, exact: bool
) -> WeightLayout:
    """WeightLayout from (llama.cpp tensor name, ggml type, bytes, dimensions) entries."""
    per_layer = [0] * arch.layers
    experts = [0] * arch.layers
    repack = [0] * arch.layers
    repack_exp = [0] * arch.layers
    embedding = output = other = unloaded = repack_other = 0
    embed_type = ""
    head = False
    dtype: dict[str, int] = {}
    for name, type_name, nbytes, ndims in entries:
        if name == "token_embd.weight":
            embed_type = type_name
        head = head or name == "output.weight"
        repacked = type_name in REPACK_TYPES and ndims >= 2 and name != "token_embd.weight"
        m = _LAYER.match(name)
        if m is not None:
            i = int(m.group(1))
            if i >= arch.layers:
                unloaded += nbytes
                continue
            per_layer[i] += nbytes
            if "_exps" in name:
                experts[i] += nbytes
            if repacked:
                repack[i] += nbytes
                if "_exps" in name:
                    repack_exp[i] += nbytes
        else:
            if name.startswith("token_embd."):
                embedding += nbytes
            elif name.startswith(("output.", "output_norm.")):
                output += nbytes
            else:
                other += nbytes
            if repacked:
                repack_other += nbytes
        dtype[type_name] = dtype.get(type_name, 0) + nbytes
    if arch.tied_embeddings and not head and embed_type in REPACK_TYPES:
        # Without an output tensor llama.cpp loads token_embd a second time as the head
        # (TENSOR_DUPLICATED), and that copy is a matmul weight: it is repacked.
        repack_other += embedding
    return table_layout(
        arch,
        per_layer=per_layer,
        experts=experts,
        embedding=embedding,
        output=output,
        other=other,
        dtype=dtype,
        exact=exact,
        unloaded=unloaded,
        repack=tuple(repack),
        repack_experts=tuple(repack_exp),
        repack_other=repack_other,
    )


_QUANT_LABEL = re.compile(
    r"(?i)[-_.]((?:ud-)?(?:i?q\d(?:_[a-z0-9]+)*|[bf]f?16|f32|mxfp4(?:_moe)?|tq\d_\d))$"
)


def split_quant_label(filename: str) -> tuple[str, str | None]:
    """("SmolLM2-135M-Instruct", "q4_1") from "SmolLM2-135M-Instruct.Q4_1.gguf" (any part)."""
    m = _SPLIT.match(filename)
    stem = m.group("stem") if m is not None else filename.removesuffix(".gguf")
    q = _QUANT_LABEL.search(stem)
    if q is None:
        return stem, None
    return stem[: q.start()], q.group(1).lower()


def _quant_key(file_type: str | None, filename: str) -> str:
    """Quant label from the file name (keeps uploader labels like UD-Q4_K_XL), else ftype."""
    label = split_quant_label(filename)[1]
    if label is not None:
        return label
    if file_type is not None:
        return file_type.lower()
    return "gguf"


def model_from_headers(
    headers: list[GgufHeader], paths: list[str], part_bytes: list[int | None]
) -> GgufModel:
    meta: dict[str, Any] = {}
    for h in headers:
        for k, v in h.metadata.items():
            meta.setdefault(k, v)
    tensors = tuple(t for h in headers for t in h.tensors)
    arch_name = str(meta.get("general.architecture", ""))
    if not arch_name:
        raise UsageError("GGUF has no general.architecture", hint="is this a model file?")
    # Here, not at the top: it builds schema objects (pydantic), which `deploy plan`
    # reaches this module without needing.
    from toolkit.inspect.ggufarch import architecture_from_gguf, context_from_gguf

    architecture, mtp = architecture_from_gguf(arch_name, meta, tensors)
    layout = layout_from_tensors(tensors, architecture, mtp_layers=mtp)
    file_type = None
    if "general.file_type" in meta:
        from gguf import LlamaFileType

        try:
            file_type = LlamaFileType(int(meta["general.file_type"])).name.removeprefix("MOSTLY_")
        except ValueError:
            file_type = None
    name = meta.get("general.name")
    return GgufModel(
        paths=tuple(paths),
        gguf_arch=arch_name,
        architecture=architecture,
        context_length=context_from_gguf(arch_name, meta),
        file_type=file_type,
        quant=_quant_key(file_type, os.path.basename(paths[0])),
        name=str(name) if name is not None else None,
        layout=layout,
        part_bytes=tuple(part_bytes),
        tensors=tensors,
        metadata=meta,
    )


def read_gguf(path: str | os.PathLike[str]) -> GgufModel:
    """Read a local GGUF (all parts of a split one): architecture, context, exact layout."""
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"no GGUF file at {p}", hint="check the path, or: deploy pull MODEL")
    parts = split_parts(p)
    with malformed_header(p.name):
        headers = [parse_header(file_reader(q), part=i) for i, q in enumerate(parts)]
        sizes: list[int | None] = [q.stat().st_size for q in parts]
        return model_from_headers(headers, [str(q) for q in parts], sizes)


@contextmanager
def malformed_header(name: str) -> Iterator[None]:
    """A header whose values make no sense (alignment 0 or text, a count of billions, a
    string longer than the file) is one UsageError naming the file, never a traceback."""
    from pydantic import ValidationError

    try:
        yield
    except (UsageError, NotFound):
        raise
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "architecture"
        raise UsageError(
            f"{name}: the GGUF header's {where} is not usable: {err['msg']}",
            hint="the file is damaged or not a model: pull it again",
        ) from None
    except (ValueError, TypeError, KeyError, ZeroDivisionError, OverflowError, MemoryError) as exc:
        raise UsageError(
            f"{name}: the GGUF header has a value that makes no sense ({type(exc).__name__}: "
            f"{str(exc)[:120]})",
            hint="the file is damaged or not a model: pull it again",
        ) from None
