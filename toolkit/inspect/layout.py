"""Where a model's weight bytes are: the input the placement math needs.

Exact when read from real tensor tables (GGUF header, safetensors headers); estimated
from the architecture × bits per weight otherwise (`exact=False`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.catalog.schema import Architecture


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
    #: Bytes in the files that the engine does not load (next-token-prediction layers
    #: llama.cpp skips, MTP weights vLLM ignores without speculative decoding). Not in
    #: total_bytes; still on disk.
    unloaded_bytes: int = 0
    #: GGUF only: bytes of each layer's matmul weights in the types ggml's CPU backend
    #: repacks (REPACK_TYPES). On an x86-64 AVX2 build llama.cpp copies these into an
    #: extra "CPU_REPACK model buffer" (anonymous memory) on top of the mapped file, for
    #: the layers that run on the CPU. Empty when unknown (safetensors, estimates).
    repack_bytes_per_layer: tuple[int, ...] = ()
    #: The part of repack_bytes_per_layer in routed-expert tensors (repacked too when
    #: `--n-cpu-moe` keeps them on the CPU).
    repack_expert_bytes_per_layer: tuple[int, ...] = ()
    #: The same for tensors outside the layers (output head).
    repack_bytes_other: int = 0

    @property
    def repack_bytes(self) -> int:
        return sum(self.repack_bytes_per_layer) + self.repack_bytes_other

    @property
    def layer_bytes_total(self) -> int:
        return sum(self.per_layer_bytes)

    @property
    def other_bytes(self) -> int:
        """Weights outside repeating layers that are not the embedding or output head."""
        return max(
            0, self.total_bytes - self.layer_bytes_total - self.embedding_bytes - self.output_bytes
        )


#: Tensor types ggml's CPU backend repacks for its matmuls, measured on llama.cpp 0c1e570
#: (llama-cpp-python 0.3.36 sdist, GGML_NATIVE=OFF, x86-64 AVX2) with
#: scripts/bench/planner_accuracy.py: the logged CPU_REPACK buffer equalled the bytes of
#: the Q4_0 and Q4_K tensors other than token_embd (read by row lookup, never repacked);
#: Q8_0, Q4_1, Q5_0, Q5_K and Q6_K tensors were not repacked. IQ4_NL and MXFP4 (gpt-oss's
#: experts included) are repacked too (ggml-cpu/repack.cpp: iq4_nl_8x8, mxfp4_8x8 on
#: AVX2; checked on the real server in tests/test_planner_llamacpp.py). Q2_K is repacked
#: only by AVX-512 builds, which deploy does not make.
REPACK_TYPES: frozenset[str] = frozenset({"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"})


def compute_active_bytes(
    *,
    total_bytes: int,
    embedding_bytes: int,
    tied_embeddings: bool,
    expert_bytes_per_layer: tuple[int, ...],
    experts: int | None,
    experts_per_token: int | None,
) -> int:
    """Bytes decode reads per token: every weight except unchosen experts and the embedding.

    The embedding table is a lookup (one row per token), so it is left out, unless the
    output head is tied to it (then the whole table is read as the head).
    """
    active = total_bytes
    if not tied_embeddings:
        active -= embedding_bytes
    if experts and experts_per_token:
        unchosen = 1 - experts_per_token / experts
        active -= round(sum(expert_bytes_per_layer) * unchosen)
    return active


def table_layout(
    arch: Architecture,
    *,
    per_layer: list[int],
    experts: list[int],
    embedding: int,
    output: int,
    other: int,
    dtype: dict[str, int],
    exact: bool,
    unloaded: int,
    repack: tuple[int, ...] = (),
    repack_experts: tuple[int, ...] = (),
    repack_other: int = 0,
) -> WeightLayout:
    """A WeightLayout from byte sums over a tensor table (GGUF header, safetensors headers)."""
    total = sum(per_layer) + embedding + output + other
    moe = arch.moe
    return WeightLayout(
        total_bytes=total,
        per_layer_bytes=tuple(per_layer),
        expert_bytes_per_layer=tuple(experts),
        embedding_bytes=embedding,
        output_bytes=output,
        exact=exact,
        dtype_bytes=dtype,
        active_bytes=compute_active_bytes(
            total_bytes=total,
            embedding_bytes=embedding,
            tied_embeddings=arch.tied_embeddings,
            expert_bytes_per_layer=tuple(experts),
            experts=moe.experts if moe else None,
            experts_per_token=moe.experts_per_token if moe else None,
        ),
        unloaded_bytes=unloaded,
        repack_bytes_per_layer=repack,
        repack_expert_bytes_per_layer=repack_experts,
        repack_bytes_other=repack_other,
    )


def estimate_layout(
    arch: Architecture, bits_per_weight: float, *, embedding_bits: float | None = None
) -> WeightLayout:
    """Weights from the analytic parameter counts × bits per weight (`exact=False`).

    `embedding_bits` sets the embedding and output head apart (quantized checkpoints
    often keep them at 16 bits; llama.cpp's Q4_K_M stores the output head as Q6_K).
    """
    from toolkit.inspect.params import param_breakdown

    b = param_breakdown(arch)
    emb_bits = bits_per_weight if embedding_bits is None else embedding_bits

    def nbytes(params: int, bits: float) -> int:
        return round(params * bits / 8)

    per_layer = tuple(nbytes(p, bits_per_weight) for p in b.per_layer)
    experts = tuple(nbytes(p, bits_per_weight) for p in b.experts_per_layer)
    embedding = nbytes(b.embedding, emb_bits)
    output = nbytes(b.output, emb_bits) + nbytes(b.final_norm, bits_per_weight)
    total = sum(per_layer) + embedding + output
    moe = arch.moe
    return WeightLayout(
        total_bytes=total,
        per_layer_bytes=per_layer,
        expert_bytes_per_layer=experts,
        embedding_bytes=embedding,
        output_bytes=output,
        exact=False,
        dtype_bytes={},
        active_bytes=compute_active_bytes(
            total_bytes=total,
            embedding_bytes=embedding,
            tied_embeddings=arch.tied_embeddings,
            expert_bytes_per_layer=experts,
            experts=moe.experts if moe else None,
            experts_per_token=moe.experts_per_token if moe else None,
        ),
    )
