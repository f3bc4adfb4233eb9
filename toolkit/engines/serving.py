"""What a recipe adds to a launch: engine flags and env under the engine's own names, and
the model's recommended sampling defaults. Looked up once, then handed to the pure
builders, so golden tests and `deploy up` render from the same inputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from toolkit.catalog.schema import Sampling
from toolkit.errors import NotFound
from toolkit.planner.types import Plan


@dataclass(frozen=True)
class RecipeServing:
    #: Flags under the engine's own names: `true` is a bare flag, a list repeats the flag,
    #: `false`/None leaves it out.
    flags: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    sampling: Sampling | None = None
    min_version: str | None = None


NONE = RecipeServing()


def recipe_serving(plan: Plan, engine: str) -> RecipeServing:
    """The recipe's serving section for the plan's model and variant ("llamacpp"|"vllm").

    Model-level flags first, the variant's on top. A plan for a local file (no recipe)
    gets nothing.
    """
    from toolkit.api.recipes import catalog
    from toolkit.catalog import resolve, variant_id

    section = "vllm" if engine == "vllm" else "llamacpp"
    try:
        resolved = resolve(catalog(), plan.variant_id)
    except NotFound:
        return NONE
    model = resolved.entry.model
    flags: dict[str, Any] = {}
    env: dict[str, str] = {}
    min_version = None
    serving = getattr(model.serving, section)
    if serving is not None:
        flags.update(serving.flags)
        env.update(serving.env)
        min_version = serving.min_version
    for v in model.variants:
        if variant_id(model, v) == plan.variant_id:
            flags.update(v.flags.get(section, {}))  # type: ignore[call-overload]
            env.update(v.env.get(section, {}))  # type: ignore[call-overload]
    return RecipeServing(flags=flags, env=env, sampling=model.sampling, min_version=min_version)


def render_flags(flags: Mapping[str, Any]) -> list[str]:
    """Recipe flags to argv: `true` → bare flag, list → repeated, else flag + value."""
    argv: list[str] = []
    for name, value in flags.items():
        if value is None or value is False:
            continue
        if value is True:
            argv.append(name)
        elif isinstance(value, list | tuple):
            for item in value:
                argv += [name, str(item)]
        elif isinstance(value, dict):
            import json

            argv += [name, json.dumps(value, separators=(",", ":"))]
        else:
            argv += [name, str(value)]
    return argv
