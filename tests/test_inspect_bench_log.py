"""The planner-accuracy benchmark's reading of llama.cpp's startup log.

Lines are rendered with the format strings of llama.cpp's own source
(src/llama-model.cpp, llama-kv-cache.cpp, llama-context.cpp in the llama-cpp-python 0.3.36
vendor tree): `"%s: %12s model buffer size = %8.2f MiB"` and the like.
"""

from __future__ import annotations

import pytest

from tests.benchscripts import load_bench


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    return load_bench("planner_accuracy")


def _line(fn: str, width: int, dev: str, what: str, mib: float) -> str:
    return f"{fn}: {dev:>{width}} {what} buffer size = {mib:8.2f} MiB"


def test_buffers_are_summed_per_kind(bench) -> None:  # type: ignore[no-untyped-def]
    log = "\n".join(
        [
            "llama_model_loader: loaded meta data with 33 key-value pairs",
            _line("load_tensors", 12, "CPU_Mapped", "model", 80.10),
            _line("load_tensors", 12, "CPU_REPACK", "model", 12.00),
            "llama_kv_cache_iswa: creating non-SWA KV cache, size = 8192 cells",
            _line("llama_kv_cache", 10, "CPU", "KV", 24.00),
            "llama_kv_cache_iswa: creating     SWA KV cache, size = 1024 cells",
            _line("llama_kv_cache", 10, "CPU", "KV", 15.00),
            "llama_context:        CPU  output buffer size =     0.19 MiB",
            _line("llama_context", 10, "CPU", "compute", 99.38),
        ]
    )
    m = bench.parse_log(log)
    assert m.model_mib == pytest.approx(92.10)
    assert m.kv_mib == pytest.approx(39.0)
    assert m.compute_mib == pytest.approx(99.38)
    assert m.output_mib == pytest.approx(0.19)
    assert m.buffers["CPU_REPACK model"] == pytest.approx(12.0)


def test_recurrent_state_counts_as_kv(bench) -> None:  # type: ignore[no-untyped-def]
    log = "\n".join(
        [
            _line("llama_kv_cache", 10, "CPU", "KV", 6.00),
            _line("llama_memory_recurrent", 10, "CPU", "RS", 2.25),
        ]
    )
    m = bench.parse_log(log)
    assert m.kv_mib == pytest.approx(8.25)
    assert m.model_mib is None
