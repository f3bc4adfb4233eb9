"""The catalog as plain, frozen records: what `deploy plan` reads, with no pydantic import.

Recipes are validated once, by the pydantic models of `toolkit.catalog.schema`, when the
catalog is built; the compiled catalog cache (`toolkit.catalog.loader.load_catalog`) then
holds these records instead: one class per schema class, same name, same attributes,
same methods (the `*Ops` mixins below are shared by both), so code typed against the
schema reads either. Importing pydantic and building its validators costs a `deploy plan`
start more than the planning itself; unpickling records costs neither.

What a record does not do itself it asks the schema for, importing it then: `model_dump`
rebuilds the validated model (so dumps are the schema's, byte for byte), and
`Adapter.as_variant` goes through the schema's constructor.
"""

from __future__ import annotations

from typing import Any

TASKS: tuple[str, ...] = ("code", "chat", "reason", "embed")


def variant_id(model: Any, variant: Any) -> str:
    """`model:quant`, plus `@uploader` unless this uploader is the quant's default."""
    default = model.default_uploaders.get(variant.quant)
    if default is None or default == variant.uploader:
        return f"{model.id}:{variant.quant}"
    return f"{model.id}:{variant.quant}@{variant.uploader}"


class VisionEncoderOps:
    def params(self: Any) -> int:
        """Parameters of encoder and projection (google/gemma-3-4b-it: 419,816,304, its
        4,300,079,472 total less the 3,880,099,328 text-only preset and 64 extra vocab
        rows × 2,560)."""
        h, i = self.hidden_size, self.intermediate_size
        layer = 2 * 2 * h + 4 * (h * h + h) + (h * i + i) + (i * h + h)
        patches = (self.image_size // self.patch_size) ** 2
        embed = 3 * self.patch_size**2 * h + h + patches * h
        projector = h * self.projector_out + h  # projection and the soft-embedding norm
        return int(self.layers * layer + embed + 2 * h + projector)


class ArchitectureOps:
    def global_layer_indices(self: Any) -> tuple[int, ...]:
        """0-indexed layers that keep a full-context KV cache."""
        local = self.local_attention
        if local is None:
            return tuple(range(self.layers))
        if local.global_layers is not None:
            return tuple(i for i in local.global_layers if i < self.layers)
        assert local.global_every is not None
        return tuple(
            i
            for i in range(self.layers)
            if i >= local.global_first and (i - local.global_first) % local.global_every == 0
        )


class VariantOps:
    @property
    def uploader(self: Any) -> str:
        if self.repo is None:
            return "pypi"
        return str(self.repo).split("/", 1)[0]

    def total_size(self: Any) -> int | None:
        """Bytes on disk when every file size (or the total) is known."""
        if self.size is not None:
            return int(self.size)
        if self.files and all(f.size is not None for f in self.files):
            return sum(f.size or 0 for f in self.files)
        return None


class AdapterOps:
    @property
    def quant(self: Any) -> str:
        """Its tag in a variant id: `smollm2-135m:lora-sql`."""
        return f"lora-{self.name}"


class ModelOps:
    def variant_ids(self: Any) -> list[str]:
        return [variant_id(self, v) for v in self.variants]


class Record:
    """A frozen bag of the validated fields of one schema object (in field order)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        object.__setattr__(self, "__dict__", fields)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "__dict__", state)

    def __eq__(self, other: object) -> bool:
        # Equal to the record or the schema object of the same fields (a recipe parsed
        # now against one from the cache).
        if type(other).__name__ != type(self).__name__:
            return NotImplemented
        return self.__dict__ == getattr(other, "__dict__", None)

    def __hash__(self) -> int:
        return hash((type(self).__name__, *self.__dict__.values()))

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({body})"

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Any:
        return type(self)({**self.__dict__, **(update or {})})

    def to_schema(self) -> Any:
        """The validated schema object with these fields."""
        from toolkit.catalog import schema

        cls: Any = getattr(schema, type(self).__name__)
        return cls.model_validate(_plain(self))

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.to_schema().model_dump(**kwargs)
        return out


def _plain(value: Any) -> Any:
    """Records as dicts, all the way down (what the schema validates)."""
    if isinstance(value, Record):
        return {k: _plain(v) for k, v in value.__dict__.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Sourced(Record):
    pass


class Moe(Record):
    pass


class Mla(Record):
    pass


class LinearAttention(Record):
    pass


class Mamba(Record):
    pass


class LocalAttention(Record):
    pass


class Params(Record):
    pass


class Context(Record):
    pass


class VisionEncoder(VisionEncoderOps, Record):
    pass


class Rope(Record):
    pass


class Architecture(ArchitectureOps, Record):
    pass


class VariantFile(Record):
    pass


class EngineConstraints(Record):
    pass


class PypiSource(Record):
    pass


class Variant(VariantOps, Record):
    pass


class Adapter(AdapterOps, Record):
    def as_variant(self) -> Any:
        return from_schema(self.to_schema().as_variant())


class EngineServing(Record):
    pass


class Serving(Record):
    pass


class Sampling(Record):
    pass


class Capability(Record):
    pass


class Tasks(Record):
    pass


class Model(ModelOps, Record):
    pass


class Unavailable(Record):
    pass


class RecipeFile(Record):
    pass


def from_schema(obj: Any) -> Any:
    """The records of a validated schema object (or a tuple / dict of them)."""
    if isinstance(obj, tuple):
        return tuple(from_schema(v) for v in obj)
    if isinstance(obj, dict):
        return {k: from_schema(v) for k, v in obj.items()}
    fields = getattr(type(obj), "model_fields", None)
    if fields is None:
        return obj
    cls = globals()[type(obj).__name__]
    return cls({name: from_schema(getattr(obj, name)) for name in fields})
