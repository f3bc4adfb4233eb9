"""Bits per weight by format, and layouts estimated from them."""

from __future__ import annotations

import pytest
from test_inspect_params import DEEPSEEK_V3, SMOLLM2_135M

from toolkit.errors import NotFound, UsageError
from toolkit.inspect import load_model_source
from toolkit.inspect.layout import estimate_layout
from toolkit.inspect.params import param_breakdown
from toolkit.inspect.quant import bits_per_weight, gguf_type_bits


@pytest.mark.parametrize(
    ("quant", "bits"),
    [
        ("bf16", 16.0),
        ("FP16", 16.0),
        ("fp8", 8.001953125),
        ("int8", 8.0),
        ("awq", 4.15625),
        ("gptq", 4.15625),
        ("int4", 4.15625),
        ("mxfp4", 4.25),
        ("nvfp4", 4.5),
        ("Q8_0", 8.5),
        ("q6_k", 6.5625),
        ("Q4_K", 4.5),
        ("q4_0", 4.5),
        ("iq4_xs", 4.25),
        ("q4_k_m", 4.899),
    ],
)
def test_bits_per_weight(quant: str, bits: float) -> None:
    assert bits_per_weight(quant) == pytest.approx(bits, abs=1e-3)


def test_safetensors_fp4_formats_match_ggml_blocks() -> None:
    # The same storage: 32 e2m1 values + 1 byte scale (MXFP4), 16 + 1 fp8 scale (NVFP4).
    assert bits_per_weight("mxfp4") == gguf_type_bits("MXFP4")
    assert bits_per_weight("nvfp4") == gguf_type_bits("NVFP4")


def test_unknown_format_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as err:
        bits_per_weight("fp3")
    assert err.value.hint is not None and "mxfp4" in err.value.hint


def test_estimate_layout_sums_the_breakdown() -> None:
    layout = estimate_layout(SMOLLM2_135M, 16)
    assert not layout.exact
    assert layout.total_bytes == 2 * param_breakdown(SMOLLM2_135M).total
    assert layout.output_bytes == 2 * 576  # tied: the final norm only
    # tied head: decode reads the whole embedding table as the output head
    assert layout.active_bytes == layout.total_bytes


def test_estimate_layout_keeps_embeddings_at_their_own_bits() -> None:
    b = param_breakdown(DEEPSEEK_V3)
    fp8 = estimate_layout(DEEPSEEK_V3, bits_per_weight("fp8"), embedding_bits=16)
    assert fp8.embedding_bytes == 2 * b.embedding
    assert len(fp8.per_layer_bytes) == 61
    assert sum(1 for e in fp8.expert_bytes_per_layer if e) == 58
    assert fp8.active_bytes is not None
    # 37B active of 671B: decode reads ~5.5% of the weights (+ the 16-bit head)
    assert 0.05 < fp8.active_bytes / fp8.total_bytes < 0.07


def test_load_model_source_refuses_what_it_cannot_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NotFound):
        load_model_source("no such model, not a path")
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0" * 16)
    with pytest.raises(UsageError):
        load_model_source(str(weights))
    with pytest.raises(NotFound):
        load_model_source(str(tmp_path))
