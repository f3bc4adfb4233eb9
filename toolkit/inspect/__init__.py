"""Facts from model files: GGUF headers, HF config.json and safetensors headers.

Entry points (each module imports its heavy dependencies lazily):
- `params.param_breakdown(arch)`: analytic parameter counts;
- `layout.estimate_layout(arch, bits)`, `quant.bits_per_weight(quant)`;
- `gguf.read_gguf(path)`: GGUF header → architecture + exact layout;
- `hf.read_model_dir(path)`, `hub.read_hub_model(repo_id)`;
- `source.load_model_source(x)`: any of those as a catalog Model with one Variant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.inspect.source import ModelSource, load_model_source

__all__ = ["ModelSource", "load_model_source"]


def __getattr__(name: str) -> Any:
    # Lazily: `source` builds schema objects (pydantic), which planning from the catalog
    # never needs.
    if name in __all__:
        from toolkit.inspect import source

        return getattr(source, name)
    raise AttributeError(f"module 'toolkit.inspect' has no attribute {name!r}")
