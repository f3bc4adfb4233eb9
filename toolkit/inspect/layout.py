"""Where a model's weight bytes are: the input the placement math needs.

Exact when read from real tensor tables (GGUF header, safetensors headers); estimated
from the architecture × bits per weight otherwise (`exact=False`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WeightLayout:
    #: Every weight byte (what must be resident somewhere).
    total_bytes: int
    #: Bytes of each repeating block (layer), in order; includes its experts.
    per_layer_bytes: tuple[int, ...]
    #: Bytes of routed-expert tensors in each layer (0 for dense layers). The part
    #: `--n-cpu-moe` / expert offload moves to the CPU.
    expert_bytes_per_layer: tuple[int, ...]
    #: Token embedding table (llama.cpp keeps it on the CPU).
    embedding_bytes: int
    #: Output head (0 when tied to the embeddings) and final norm.
    output_bytes: int
    #: True when read from the real tensor table.
    exact: bool
    #: Bytes by tensor dtype ("Q4_K": …, "BF16": …, "F8_E4M3": …).
    dtype_bytes: dict[str, int] = field(default_factory=dict)
    #: Bytes of the active path per token (shared weights + experts_per_token experts);
    #: what decode reads from memory each step. None when unknown.
    active_bytes: int | None = None

    @property
    def layer_bytes_total(self) -> int:
        return sum(self.per_layer_bytes)

    @property
    def other_bytes(self) -> int:
        """Weights outside repeating layers that are not the embedding or output head."""
        return max(
            0, self.total_bytes - self.layer_bytes_total - self.embedding_bytes - self.output_bytes
        )
