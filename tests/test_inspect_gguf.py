"""GGUF headers: the real SmolLM2 file and fabricated full-size files."""

from __future__ import annotations

from pathlib import Path

from toolkit.catalog.loader import load_catalog
from toolkit.inspect import load_model_source
from toolkit.inspect.gguf import read_gguf
from toolkit.inspect.params import param_breakdown


def _recipe_arch(model_id: str):  # type: ignore[no-untyped-def]
    return load_catalog().models[model_id].model.architecture


def test_smollm2_architecture_equals_the_recipe(smollm2_gguf: Path) -> None:
    g = read_gguf(smollm2_gguf)
    recipe = _recipe_arch("smollm2-135m")
    assert recipe is not None
    assert g.architecture.model_copy(update={"source": None}) == recipe.model_copy(
        update={"source": None}
    )
    assert g.context_length == 8192
    assert g.file_type == "Q4_1"
    assert g.quant == "q4_1"


def test_smollm2_layout_is_the_model_buffer_llama_cpp_logs(smollm2_gguf: Path) -> None:
    g = read_gguf(smollm2_gguf)
    # llama.cpp logs "CPU_Mapped model buffer size = 92.10 MiB" for this file
    # (shared/reference/engines-on-cpu.md).
    assert round(g.layout.total_bytes / 2**20, 2) == 92.10
    assert g.layout.exact
    assert len(g.layout.per_layer_bytes) == 30
    assert g.layout.output_bytes == 576 * 4  # tied: only output_norm (f32)
    assert sum(g.layout.dtype_bytes.values()) == g.layout.total_bytes
    # element count equals the analytic breakdown of the same architecture
    n = sum(t.n_elements for t in g.tensors)
    assert n == param_breakdown(g.architecture).total == 134_515_008
    # the data section ends where the file ends
    last = max(g.tensors, key=lambda t: t.offset)
    assert g.file_bytes is not None and g.file_bytes >= last.offset + last.nbytes


def test_load_model_source_turns_a_gguf_into_a_catalog_variant(smollm2_gguf: Path) -> None:
    src = load_model_source(str(smollm2_gguf))
    assert src.kind == "gguf"
    assert src.model.id == "smollm2-135m-instruct"
    assert src.variant.format == "gguf"
    assert src.variant.quant == "q4_1"
    assert src.variant.total_size() == 98_362_432
    assert src.model.context.native == 8192
    assert src.layout is not None and src.layout.exact
