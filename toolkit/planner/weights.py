"""Weight bytes from the architecture when no file has been read (`WeightLayout.exact=False`).

The parameters come from `toolkit.inspect.params.param_breakdown` (the same counts
`deploy inspect` shows). GGUF mixes with a llama-quantize rule (Q4_K_M, Q5_K_M, Q8_0 …)
are laid out tensor by tensor by `toolkit.inspect.ggufmix.estimate_gguf_layout`. Other
formats store the repeating layers at the format's bits per weight, scaled so the total
matches the published parameter count when the recipe gives one; embeddings and the
output head at 16 bit in safetensors checkpoints (FP8/AWQ/GPTQ/MXFP4/NVFP4 keep them
unquantised) and at the quant's bits in GGUF estimates. When the variant's download size
is known, the layout is scaled to it.

Planner-specific here: that scaling, MXFP4's experts-only quantisation, vLLM's MXFP4
padding (`vllm_padded`, and per rank the kernel's own: `mxfp4_kernel_extra`), the rotary table
every vLLM rank holds (`rope_cache_bytes`) and the image encoder vLLM loads beside a text model
(`vllm_loaded`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.inspect.layout import WeightLayout, compute_active_bytes
from toolkit.inspect.params import param_breakdown

if TYPE_CHECKING:
    from toolkit.catalog.schema import Architecture
    from toolkit.planner.quant import QuantInfo


def _active(arch: Architecture, total: int, embedding: int, experts: tuple[int, ...]) -> int:
    moe = arch.moe
    return compute_active_bytes(
        total_bytes=total,
        embedding_bytes=embedding,
        tied_embeddings=arch.tied_embeddings,
        expert_bytes_per_layer=experts,
        experts=moe.experts if moe else None,
        experts_per_token=moe.experts_per_token if moe else None,
    )


def _scaled_to(arch: Architecture, layout: WeightLayout, size_bytes: int) -> WeightLayout:
    """`layout` with every part scaled so loaded plus unloaded bytes equal `size_bytes`."""
    fix = size_bytes / (layout.total_bytes + layout.unloaded_bytes)

    def s(b: int) -> int:
        return int(b * fix)

    per_layer = tuple(s(b) for b in layout.per_layer_bytes)
    experts = tuple(s(b) for b in layout.expert_bytes_per_layer)
    emb, out, other = s(layout.embedding_bytes), s(layout.output_bytes), s(layout.other_bytes)
    total = sum(per_layer) + emb + out + other
    return replace(
        layout,
        total_bytes=total,
        per_layer_bytes=per_layer,
        expert_bytes_per_layer=experts,
        embedding_bytes=emb,
        output_bytes=out,
        dtype_bytes={k: s(v) for k, v in layout.dtype_bytes.items()},
        active_bytes=_active(arch, total, emb, experts),
        unloaded_bytes=s(layout.unloaded_bytes),
        repack_bytes_per_layer=tuple(s(b) for b in layout.repack_bytes_per_layer),
        repack_expert_bytes_per_layer=tuple(s(b) for b in layout.repack_expert_bytes_per_layer),
        repack_bytes_other=s(layout.repack_bytes_other),
    )


def _gguf_layout(arch: Architecture, ftype: str) -> WeightLayout:
    """`estimate_gguf_layout`, remembered across runs: replaying llama-quantize's choice
    for every tensor costs a `deploy plan` start several milliseconds per GGUF variant."""
    from toolkit import filecache
    from toolkit.inspect.ggufmix import estimate_gguf_layout

    inspect = Path(__file__).parents[1] / "inspect"
    code = [inspect / f for f in ("ggufmix.py", "gguf.py", "layout.py", "params.py")]
    return filecache.memo(
        "gguf-layouts", code, (repr(arch), ftype), lambda: estimate_gguf_layout(arch, ftype)
    )


def estimate_layout(
    arch: Architecture,
    info: QuantInfo,
    *,
    params_total: float | None = None,
    size_bytes: int | None = None,
) -> WeightLayout:
    """A WeightLayout from the architecture at the quant's bits per weight.

    `params_total` (published) rescales the repeating layers of bits-per-weight estimates;
    `size_bytes` (the real download size) rescales everything so the total matches the files.
    """
    if info.gguf_ftype is not None:
        layout = _gguf_layout(arch, info.gguf_ftype)
        return _scaled_to(arch, layout, size_bytes) if size_bytes else layout
    b = param_breakdown(arch)
    layer_total = sum(b.per_layer)
    scale = 1.0
    if params_total:
        target_layers = params_total - b.embedding - b.output - b.final_norm
        if target_layers > 0 and layer_total > 0:
            scale = target_layers / layer_total
    lbits = info.layer_bpw
    ebits = info.embed_bpw
    sbits = ebits if info.experts_only else lbits
    per_layer = [
        ((p - x) * sbits + x * lbits) * scale / 8
        for p, x in zip(b.per_layer, b.experts_per_layer, strict=True)
    ]
    experts = [x * lbits * scale / 8 for x in b.experts_per_layer]
    emb = b.embedding * ebits / 8
    # The final norm travels with the output head (as WeightLayout.output_bytes says).
    head = (b.output + b.final_norm) * ebits / 8
    total = sum(per_layer) + emb + head
    fix = size_bytes / total if size_bytes else 1.0
    per_layer_b = tuple(int(v * fix) for v in per_layer)
    expert_b = tuple(int(v * fix) for v in experts)
    emb_b, head_b = int(emb * fix), int(head * fix)
    total_b = sum(per_layer_b) + emb_b + head_b
    return WeightLayout(
        total_bytes=total_b,
        per_layer_bytes=per_layer_b,
        expert_bytes_per_layer=expert_b,
        embedding_bytes=emb_b,
        output_bytes=head_b,
        exact=False,
        dtype_bytes={info.key: total_b},
        # Decode reads the output head (or tied embedding) fully, one embedding row only.
        active_bytes=_active(arch, total_b, emb_b, expert_b),
    )


def vllm_padded(arch: Architecture, layout: WeightLayout, info: QuantInfo) -> WeightLayout:
    """The layout vLLM holds in GPU memory. MXFP4 MoE kernels (Marlin / Triton) pad the
    expert intermediate size to a multiple of 256 (gpt-oss: 2880 → 3072), inferred from
    vLLM 0.14.1 logging 64.38 GiB for gpt-oss-120b (this formula: 64.4 GiB)."""
    if info.key != "mxfp4" or arch.moe is None:
        return layout
    inter = arch.moe.expert_intermediate_size
    factor = _up(inter, 256) / inter
    if factor == 1.0:
        return layout
    extra = [int(e * (factor - 1)) for e in layout.expert_bytes_per_layer]
    per_layer = tuple(b + x for b, x in zip(layout.per_layer_bytes, extra, strict=True))
    experts = tuple(e + x for e, x in zip(layout.expert_bytes_per_layer, extra, strict=True))
    return replace(
        layout,
        total_bytes=layout.total_bytes + sum(extra),
        per_layer_bytes=per_layer,
        expert_bytes_per_layer=experts,
    )


def _up(n: int, m: int) -> int:
    return -(-n // m) * m


def mxfp4_expert_bytes(kernel: str | None, inter: int, hidden: int) -> int:
    """Bytes of one MXFP4 expert (gate+up and down: 4-bit values, one e8m0 scale per 32
    values, biases) with intermediate size `inter` on a rank, as `kernel` holds it; None:
    as the checkpoint stores it (bf16 biases, no padding).

    "marlin": Marlin needs n % 256 and k % 128 in both matrices, so vLLM pads the rank's
    intermediate size to a multiple of 128 and the hidden size to 256
    (vllm/model_executor/layers/quantization/mxfp4.py, `Mxfp4MoEMethod.create_weights`,
    the MARLIN branch). "triton": vLLM pads the intermediate size to a multiple of 64 and
    makes the biases fp32 (`process_weights_after_loading`, TRITON), then triton_kernels'
    Hopper layouts pad the swizzled values to multiples of 64 (the packed axis) and 256
    and the scales to 256 rows (triton-lang/triton, python/triton_kernels/triton_kernels/
    tensor_details/layout_details/hopper_value.py `_padded_shape`, hopper_scale.py
    `SWIZZLE_ALIGN_M` with vLLM's 8 warps)."""
    i, h = inter, hidden
    if kernel == "marlin":
        i, h = _up(inter, 128), _up(hidden, 256)
    if kernel == "triton":
        i = _up(inter, 64)
        values = _up(h // 2, 64) * _up(2 * i, 256) + _up(i // 2, 64) * _up(h, 256)
        scales = _up(2 * i, 256) * _up(h // 32, 2) + _up(h, 256) * _up(i // 32, 2)
        return values + scales + (2 * i + h) * 4
    return 3 * i * h // 2 + 3 * i * (h // 32) + (2 * i + h) * 2


def mxfp4_kernel_extra(
    arch: Architecture, layout: WeightLayout, tp: int, kernel: str | None
) -> int:
    """Bytes per rank that vLLM's MXFP4 MoE kernel (`compat.mxfp4_moe_kernel`) holds beyond
    the `vllm_padded` layout's share: `mxfp4_expert_bytes` of the kernel against the
    checkpoint's, at the rank's intermediate size (negative where the kernel pads less
    than `vllm_padded` assumes). gpt-oss-120b at TP 4 on A100s (Marlin): 17.1 GiB per rank
    against the 17.22 GiB vLLM 0.10.1 logged; gpt-oss-20b on H100s with vLLM 0.19
    (Triton): 13.44 / 6.95 GiB at TP 1 / 2 against 13.64 / 7.01 logged."""
    if arch.moe is None or kernel not in ("marlin", "triton"):
        return 0
    inter, hidden = arch.moe.expert_intermediate_size, arch.hidden_size
    part = -(-inter // tp)
    padded = _up(inter, 256) / inter  # what `vllm_padded` already counts
    stored = sum(layout.expert_bytes_per_layer) / padded / tp  # the rank's, as stored
    ratio = mxfp4_expert_bytes(kernel, part, hidden) / mxfp4_expert_bytes(None, part, hidden)
    return int(stored * (ratio - padded))


def vision_bytes(arch: Architecture) -> int:
    """The image encoder of `arch.vision` as checkpoints store it and vLLM holds it: 16 bit
    (quantised checkpoints keep it unquantised); 0 when the recipe names none."""
    return arch.vision.params() * 2 if arch.vision is not None else 0


def rope_cache_bytes(arch: Architecture, max_position: int, dtype_bytes: int = 2) -> int:
    """The rotary-embedding table vLLM builds while it loads the model and keeps on every
    GPU (a buffer, not sharded by tensor or pipeline parallelism): cos and sin for every
    position up to the config's max_position_embeddings, `rotary_dim` values per position
    in the model's dtype (vllm/model_executor/layers/rotary_embedding: `cos_sin_cache`,
    `torch.cat((cos, sin), dim=-1)` over `arange(max_position_embeddings)`, cast to the
    dtype; one table per distinct RoPE, shared by the layers). A linear RoPE scaling
    multiplies the positions by its factor, and sliding layers with their own base add an
    unscaled table (`arch.rope`). Negligible for most models (Llama 3.1 8B: 32 MiB), but
    Llama 4 Scout's 10,485,760 positions make it 2.5 GiB, the gap between its summed
    weights and the 53.12 GiB per GPU vLLM 0.19 logs at TP 4, and Gemma 3 4B's two tables
    (131,072 × 8 global positions, 131,072 local) the 0.56 GiB it logs beyond its
    weights."""
    if max_position <= 0:
        return 0
    rotary = arch.mla.qk_rope_head_dim if arch.mla is not None else arch.head_dim
    rope = arch.rope
    positions = int(max_position * (rope.linear_factor or 1)) if rope else max_position
    if rope is not None and rope.local_base is not None:
        positions += max_position
    return positions * rotary * dtype_bytes


def vllm_rank_extra_bytes(
    arch: Architecture,
    layout: WeightLayout,
    *,
    tp: int,
    pp: int = 1,
    dp: int = 1,
    max_position: int,
    mxfp4_kernel: str | None,
    dtype_bytes: int = 2,
) -> int:
    """What one vLLM rank holds beside its share of `layout` (the `vllm_loaded` one): the
    rotary table every rank keeps whole, and how the MXFP4 MoE kernel in use pads the
    rank's experts beyond that layout (with data-parallel expert ranks: whole experts at
    TP 1, a dp-th of them each)."""
    extra = rope_cache_bytes(arch, max_position, dtype_bytes)
    if dp == 1:
        extra += mxfp4_kernel_extra(arch, layout, tp, mxfp4_kernel) // pp
    else:
        extra += mxfp4_kernel_extra(arch, layout, 1, mxfp4_kernel) // dp
    return extra


def vllm_loaded(
    arch: Architecture, layout: WeightLayout, info: QuantInfo, *, from_files: bool
) -> WeightLayout:
    """What vLLM holds for the model: `vllm_padded`, plus the image encoder a multimodal
    checkpoint carries (loaded for text-only use too, in 16 bit: quantised checkpoints
    keep it unquantised) when the layout came from the text model's architecture rather
    than from the checkpoint's own files, which already hold it."""
    layout = vllm_padded(arch, layout, info)
    if from_files or arch.vision is None:
        return layout
    extra = vision_bytes(arch)
    dtypes = dict(layout.dtype_bytes)
    dtypes["bf16"] = dtypes.get("bf16", 0) + extra
    return replace(layout, total_bytes=layout.total_bytes + extra, dtype_bytes=dtypes)
