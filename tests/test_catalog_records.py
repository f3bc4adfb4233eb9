"""The compiled catalog holds records (toolkit.catalog.records), not pydantic models: they
must read exactly like the schema objects they were made from, in every way the code
uses them, and dump to the same documents."""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path

import pytest

from toolkit.catalog import records, schema
from toolkit.catalog.loader import parse_recipe, recipe_files, shipped_recipes_dir

SHIPPED = recipe_files([shipped_recipes_dir()])


def _classes(module: object, base: type) -> set[str]:
    return {
        name
        for name, cls in vars(module).items()
        if inspect.isclass(cls) and issubclass(cls, base) and not name.startswith("_")
    }


def test_one_record_class_per_schema_class() -> None:
    assert _classes(schema, schema._Frozen) == _classes(records, records.Record) - {"Record"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_records_equal_dump_and_answer_like_the_schema(path: Path) -> None:
    parsed = parse_recipe(path)
    rec = records.from_schema(parsed)
    assert type(rec) is records.RecipeFile
    assert rec == parsed and parsed == rec
    assert rec.model_dump(mode="json", exclude_none=True) == parsed.model_dump(
        mode="json", exclude_none=True
    )
    assert pickle.loads(pickle.dumps(rec, protocol=pickle.HIGHEST_PROTOCOL)) == parsed
    for m, rm in zip(parsed.models, rec.models, strict=True):
        assert type(rm) is records.Model
        assert rm.variant_ids() == m.variant_ids()
        for v, rv in zip(m.variants, rm.variants, strict=True):
            assert (rv.uploader, rv.total_size()) == (v.uploader, v.total_size())
            assert records.variant_id(rm, rv) == schema.variant_id(m, v)
        for a, ra in zip(m.adapters, rm.adapters, strict=True):
            assert ra.quant == a.quant
            assert type(ra.as_variant()) is records.Variant
            assert ra.as_variant() == a.as_variant()
        if m.architecture is not None:
            arch = rm.architecture
            assert arch.global_layer_indices() == m.architecture.global_layer_indices()
            if m.architecture.vision is not None:
                assert arch.vision.params() == m.architecture.vision.params()


def test_records_are_frozen_and_copy_with_updates() -> None:
    parsed = parse_recipe(shipped_recipes_dir() / "smollm2.yaml")
    model = records.from_schema(parsed.models[0])
    with pytest.raises(AttributeError, match="frozen"):
        model.name = "other"
    with pytest.raises(AttributeError, match="frozen"):
        del model.name
    copy = model.model_copy(update={"name": "other"})
    assert (copy.name, model.name) == ("other", parsed.models[0].name)
    assert copy != model and type(copy) is records.Model
    assert hash(model.params) == hash(records.from_schema(parsed.models[0].params))


def test_a_record_is_not_equal_to_another_kind_with_the_same_fields() -> None:
    a = records.from_schema(schema.Sourced(value="x"))
    assert a != records.Params({"value": "x", "source": None})
    assert a != {"value": "x", "source": None}
