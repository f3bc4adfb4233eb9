"""Read recipe files: shipped ones (inside the wheel), then user directories.

Errors name the file and the key path (`qwen3-coder.yaml: models[1].variants[3].size`).
A user recipe whose family or model id matches a shipped one overrides it; the override
is recorded so `deploy recipes show` can report it.

`load_catalog` keeps the parsed, validated catalog in a cache file (`settings.cache_dir()`),
keyed by every recipe file's path, size, mtime, ctime and inode plus this code's own
version, so `deploy plan` neither imports PyYAML nor validates recipes on a warm start.
Any problem with the cache (missing, stale, unreadable) means an ordinary load.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import RecipeError

if TYPE_CHECKING:
    from pydantic import ValidationError

    from toolkit.catalog.schema import Model, RecipeFile, Unavailable

#: Bump when the cached object graph changes shape in a way the key would not see (the
#: key already covers every recipe file, loader.py, schema.py, records.py and the versions;
#: toolkit/filecache.py).
CACHE_FORMAT = 2


def shipped_recipes_dir() -> Path:
    """Recipes shipped with the package.

    In a wheel they live at `toolkit/_recipes`; in a source checkout (editable install)
    at the project's top-level `recipes/` beside the package.
    """
    # Beside this package, not importlib.resources: that import alone costs `deploy plan`
    # more than reading the whole cached catalog.
    packaged = Path(__file__).parents[1] / "_recipes"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "recipes"


def _key_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _clean_loc(loc: Sequence[int | str]) -> list[int | str]:
    return [p for p in loc if not (isinstance(p, str) and p.startswith("function-"))]


def _first_error(exc: ValidationError) -> tuple[str, str]:
    """The one error to show. A misspelled key shows up twice (unknown + missing): report
    the unknown key, with the missing one as the likely meant spelling."""
    import difflib

    errors = exc.errors()
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    err = extra[0] if extra else errors[0]
    loc = _clean_loc(err["loc"])
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "extra_forbidden":
        parent = loc[:-1]
        missing = [
            str(_clean_loc(e["loc"])[-1])
            for e in errors
            if e["type"] == "missing" and _clean_loc(e["loc"])[:-1] == parent
        ]
        close = difflib.get_close_matches(str(loc[-1]), missing, n=1)
        msg = (
            f"unknown key (did you mean {close[0]!r}?)"
            if close
            else "unknown key (check the spelling; see docs/recipes.md)"
        )
    elif err["type"] == "literal_error" and loc and loc[-1] == "format":
        msg = f"unknown format {err.get('input')!r}; {msg.lower()}"
    return _key_path(loc), msg


def parse_recipe(path: Path) -> RecipeFile:
    """Parse and validate one recipe file. Raises RecipeError naming file and key path."""
    import yaml
    from pydantic import ValidationError

    from toolkit.catalog.schema import RecipeFile

    #: libyaml's safe loader when PyYAML was built with it (10x faster), else the Python one.
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(str(path), "", f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise RecipeError(
            name, "", f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        data: Any = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(name, where, f"invalid YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise RecipeError(name, "", "a recipe must be a mapping with 'family' and 'models'")
    try:
        recipe = RecipeFile.model_validate(data)
    except ValidationError as exc:
        key, msg = _first_error(exc)
        raise RecipeError(name, key, msg) from exc
    _check_unique_ids(name, recipe)
    _check_same_architecture(name, recipe)
    return recipe


def _check_same_architecture(name: str, recipe: RecipeFile) -> None:
    """`same_architecture_as` naming a model of this file must reach one with an architecture.

    A name not in this file may be a model of another recipe file; the catalog checks it.
    """
    by_id = {m.id: m for m in recipe.models}
    for i, model in enumerate(recipe.models):
        target = model.same_architecture_as
        seen = {model.id}
        while target is not None and target in by_id:
            if target in seen:
                raise RecipeError(
                    name, f"models[{i}].same_architecture_as", f"cycle through {target!r}"
                )
            seen.add(target)
            ref = by_id[target]
            if ref.architecture is not None:
                break
            target = ref.same_architecture_as


def _check_unique_ids(name: str, recipe: RecipeFile) -> None:
    from toolkit.catalog.schema import variant_id

    seen: dict[str, str] = {}
    for i, model in enumerate(recipe.models):
        key = f"models[{i}].id"
        if model.id in seen:
            raise RecipeError(name, key, f"duplicate id {model.id!r} (also at {seen[model.id]})")
        seen[model.id] = key
        for j, variant in enumerate(model.variants):
            vid = variant_id(model, variant)
            vkey = f"models[{i}].variants[{j}]"
            if vid in seen:
                raise RecipeError(name, vkey, f"duplicate variant id {vid!r} (also at {seen[vid]})")
            seen[vid] = vkey
    for i, gone in enumerate(recipe.unavailable):
        key = f"unavailable[{i}].id"
        if gone.id in seen:
            raise RecipeError(name, key, f"duplicate id {gone.id!r} (also at {seen[gone.id]})")
        seen[gone.id] = key


@dataclass(frozen=True)
class ModelEntry:
    model: Model
    family: str
    file: Path
    #: The shipped file this entry replaced, when a user recipe overrides it.
    overrides: Path | None = None
    #: The model id whose architecture this entry borrowed (`same_architecture_as`).
    architecture_from: str | None = None


@dataclass
class Catalog:
    families: dict[str, RecipeFile] = field(default_factory=dict)
    family_files: dict[str, Path] = field(default_factory=dict)
    models: dict[str, ModelEntry] = field(default_factory=dict)
    unavailable: dict[str, Unavailable] = field(default_factory=dict)

    def add(self, path: Path, recipe: RecipeFile) -> None:
        previous = self.family_files.get(recipe.family)
        if previous is not None:
            # A later file with the same family replaces the whole family.
            for mid in [m for m, e in self.models.items() if e.family == recipe.family]:
                del self.models[mid]
        self.families[recipe.family] = recipe
        self.family_files[recipe.family] = path
        for model in recipe.models:
            old = self.models.get(model.id)
            overrides = previous if previous is not None else (old.file if old else None)
            if old is not None and old.family != recipe.family:
                fam = self.families[old.family]
                kept = tuple(m for m in fam.models if m.id != model.id)
                self.families[old.family] = fam.model_copy(update={"models": kept})
            self.models[model.id] = ModelEntry(model, recipe.family, path, overrides)
        for gone in recipe.unavailable:
            self.unavailable[gone.id] = gone

    def link_architectures(self) -> None:
        """Fill in `architecture` of models that give `same_architecture_as` (cross-file)."""
        for mid, entry in list(self.models.items()):
            if entry.model.architecture is not None or entry.model.same_architecture_as is None:
                continue
            target: str | None = entry.model.same_architecture_as
            seen = {mid}
            arch = None
            while target is not None and target not in seen:
                seen.add(target)
                ref = self.models.get(target)
                if ref is None:
                    break
                arch = ref.model.architecture
                if arch is not None:
                    break
                target = ref.model.same_architecture_as
            if arch is None:
                index = next(i for i, m in enumerate(self._file_models(entry)) if m.id == mid)
                raise RecipeError(
                    entry.file.name,
                    f"models[{index}].same_architecture_as",
                    f"no model {entry.model.same_architecture_as!r} with an architecture "
                    "in the catalog",
                )
            model = entry.model.model_copy(update={"architecture": arch})
            self.models[mid] = replace(entry, model=model, architecture_from=target)

    def _file_models(self, entry: ModelEntry) -> tuple[Model, ...]:
        return self.families[entry.family].models


def recipe_files(dirs: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        if d.is_dir():
            files.extend(sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml")))
    return files


def load_catalog(user_dirs: Sequence[Path] = ()) -> Catalog:
    """Shipped recipes overridden by the user dirs; the FIRST user dir wins (like PATH).

    `settings.user_recipe_dirs()` lists DEPLOY_RECIPES_PATH's dirs, then the user config
    dir, so the environment beats the config dir, which beats the shipped recipes.

    Served from the compiled cache when no recipe file (nor this code) changed since it
    was written; errors in recipes are never cached, so they are reported every time.
    """
    from toolkit import filecache

    files = recipe_files([shipped_recipes_dir(), *reversed(user_dirs)])
    here = Path(__file__).parent
    # The code that builds the catalog, validates it, and the records pickled.
    code = [here / "loader.py", here / "schema.py", here / "records.py"]
    return filecache.cached(
        "catalog",
        files,
        code,
        lambda: _load(files),
        extra=CACHE_FORMAT,
        valid=lambda obj: isinstance(obj, Catalog),
    )


def _load(files: Iterable[Path]) -> Catalog:
    """Validated by the schema, held as records (`toolkit.catalog.records`)."""
    from toolkit.catalog.records import from_schema

    catalog = Catalog()
    for path in files:
        catalog.add(path, parse_recipe(path))
    catalog.link_architectures()
    return Catalog(
        families=from_schema(catalog.families),
        family_files=catalog.family_files,
        models={
            mid: replace(entry, model=from_schema(entry.model))
            for mid, entry in catalog.models.items()
        },
        unavailable=from_schema(catalog.unavailable),
    )
