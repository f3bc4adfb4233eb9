"""A stack: several models served together behind one endpoint (`deploy.yaml`).

    version: 1
    name: dev                 # the run name (default: stack)
    port: 8080                # optional; else the port this name had before, else a free one
    tls: {cert: tls.crt, key: tls.key}   # optional: HTTPS on the stack's port
    models:
      - alias: chat           # the `model` clients send
        model: smollm2-135m   # a recipe name, variant id or local GGUF
        ctx: 4096
      - alias: embed
        model: ./models/Qwen3-Embedding-0.6B-Q8_0.gguf
        task: embed           # served with --embeddings --pooling (the recipe's, else mean)
      - alias: code
        model: qwen3-coder-30b-a3b:q4_k_m
        resident: false       # loaded on the first request, unloaded when room is needed
        engine_flags: {"--temp": 0.2}
        lora: [{path: ./adapters/sql.gguf, scale: 0.8}]
      - alias: big
        model: qwen3-coder-30b-a3b:fp8
        engine: vllm          # its own vLLM server behind the stack's front door

Validation is strict (unknown keys, duplicate aliases, flags deploy owns are errors) and
every error names the file and the entry. Planning and launching are in
`toolkit.api.stack`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from toolkit.errors import NotFound, UsageError

DEFAULT_FILE = "deploy.yaml"
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Lora(_Strict):
    """A LoRA adapter in GGUF (llama.cpp's --lora-scaled): a file, or an adapter of the
    model's recipe by name (its file from the store)."""

    path: str | None = None
    adapter: str | None = None
    scale: Annotated[float, Field(ge=-4, le=4)] = 1.0

    @model_validator(mode="after")
    def _one(self) -> Lora:
        if (self.path is None) == (self.adapter is None):
            raise ValueError("give a LoRA's path or its recipe adapter name, not both")
        return self


class Tls(_Strict):
    """The stack's certificate and private key (PEM); paths relative to the file."""

    cert: str
    key: str


class StackModel(_Strict):
    alias: str
    model: str
    ctx: Annotated[int, Field(ge=256, le=1 << 24)] | None = None
    concurrency: Annotated[int, Field(ge=1, le=256)] = 1
    task: Literal["chat", "code", "reason", "embed"] = "chat"
    #: llama.cpp (llama-server's router) or vLLM (one server per model, always loaded).
    engine: Literal["llamacpp", "vllm"] = "llamacpp"
    #: Load at start and stay loaded (true), or load on the first request (false).
    resident: bool | None = None
    #: Extra llama-server flags for this model: {"--flag": value} (true for a bare flag).
    engine_flags: dict[str, Any] = Field(default_factory=dict)
    lora: tuple[Lora, ...] = ()

    @field_validator("alias")
    @classmethod
    def _alias(cls, v: str) -> str:
        if not _ALIAS.match(v):
            raise ValueError("alias must be 1-64 letters, digits, '.', '_', ':' or '-'")
        return v

    @field_validator("engine_flags")
    @classmethod
    def _flags(cls, v: dict[str, Any]) -> dict[str, Any]:
        from toolkit.catalog.schema import owned_flag

        for flag in v:
            if not str(flag).startswith("-"):
                raise ValueError(f"engine flag {flag!r} must start with '-'")
            if owned_flag(flag):
                raise ValueError(
                    f"{flag} is set by deploy (listen address, port, key, TLS, model, network)"
                )
        return v


class Stack(_Strict):
    version: Literal[1] = 1
    name: str = "stack"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    #: Serve the stack's endpoint over HTTPS with this certificate and key.
    tls: Tls | None = None
    models: tuple[StackModel, ...]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("name must be 1-64 letters, digits, '.', '_' or '-'")
        return v

    @model_validator(mode="after")
    def _check(self) -> Stack:
        for m in self.models:
            if m.engine == "vllm" and m.resident is False:
                raise ValueError(
                    f"{m.alias}: a vLLM model stays loaded (vLLM has no on-demand loading)"
                )
            if m.engine == "vllm" and m.lora:
                raise ValueError(f"{m.alias}: lora: is for llama.cpp models (GGUF adapters)")
        if not self.models:
            raise ValueError("models: list at least one model")
        seen: set[str] = set()
        for m in self.models:
            if m.alias in seen:
                raise ValueError(f"alias {m.alias!r} is used twice")
            seen.add(m.alias)
        return self


def load_stack(path: Path) -> Stack:
    """Parse and validate a stack file; UsageError naming the file and the entry."""
    import yaml

    if not path.exists():
        raise NotFound(f"no stack file {path}", hint="write one (docs/serving.md) or pass -f FILE")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(
            f"{path}: not valid YAML ({first})", hint="deploy stack validate"
        ) from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: a stack is a mapping with `models:`", hint="docs/serving.md")
    try:
        stack = Stack.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/serving.md)"
        raise UsageError(f"{path}: {where}: {msg}", hint="deploy stack validate -f FILE") from None
    base = path.resolve().parent
    fixed = []
    for m in stack.models:
        loras = tuple(
            lo
            if lo.path is None
            else Lora(
                path=str((base / lo.path).resolve())
                if not Path(lo.path).is_absolute()
                else lo.path,
                scale=lo.scale,
            )
            for lo in m.lora
        )
        model = m.model
        local = Path(model).expanduser()
        if not local.is_absolute() and (base / local).exists():
            model = str((base / local).resolve())
        fixed.append(m.model_copy(update={"lora": loras, "model": model}))
    tls = stack.tls
    if tls is not None:
        tls = Tls(cert=str((base / tls.cert).resolve()), key=str((base / tls.key).resolve()))
    return stack.model_copy(update={"models": tuple(fixed), "tls": tls})
