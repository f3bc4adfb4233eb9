"""Which files of a repo make up a variant.

A recipe may list a variant's files; otherwise they are chosen from the repo listing
(the hub's, or a cached snapshot's) by the variant's format:

- GGUF: the one `.gguf` file, or the complete split set `…-00001-of-0000N.gguf`, whose
  name carries the quant (`Q4_K_M`, `UD-Q4_K_XL`), matched case-insensitively between
  separators; `mmproj` projector files are never weights.
- safetensors formats: every top-level `*.safetensors` (+ index), configs, tokenizer
  files and chat templates; `consolidated*.safetensors` duplicates are skipped when the
  HF-layout shards exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from toolkit.catalog.schema import Variant
from toolkit.errors import NotFound, UsageError

_SPLIT = re.compile(r"-(?P<idx>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)

#: Non-weight files a safetensors checkpoint needs to load and chat.
SAFETENSORS_EXTRAS = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "params.json",
)


def quant_pattern(quant: str) -> re.Pattern[str]:
    """`q4_k_m` matches `Q4_K_M` and `q4-k-m` between separators, but not `UD-Q4_K_M`."""
    parts = [re.escape(p) for p in re.split(r"[_\-.]", quant)]
    body = r"[_\-.]".join(parts)
    guard = "" if quant.lower().startswith("ud") else r"(?<!ud[_\-.])"
    return re.compile(rf"(?:^|(?<=[/_\-.])){guard}{body}(?=[\-./]|$)", re.IGNORECASE)


def _gguf_sets(names: Iterable[str]) -> dict[str, list[str]]:
    """Group .gguf names into sets: a single file, or the shards of one split series."""
    sets: dict[str, list[str]] = {}
    for name in sorted(names):
        if not name.lower().endswith(".gguf") or "mmproj" in name.lower():
            continue
        m = _SPLIT.search(name)
        key = name[: m.start()] + f"-of-{m['total']}" if m else name
        sets.setdefault(key, []).append(name)
    complete: dict[str, list[str]] = {}
    for key, members in sets.items():
        m = _SPLIT.search(members[0])
        if m is not None and len(members) != int(m["total"]):
            continue  # an incomplete split series is not a usable set
        complete[key] = members
    return complete


def select_gguf(names: Iterable[str], quant: str, where: str) -> list[str]:
    pattern = quant_pattern(quant)
    matches = [
        members
        for key, members in _gguf_sets(names).items()
        if pattern.search(key.rsplit("/", 1)[-1].removesuffix(".gguf"))
        or pattern.search(key.rsplit("/", 1)[0] if "/" in key else "")
    ]
    if not matches:
        raise NotFound(
            f"no GGUF file for quant {quant!r} in {where}",
            hint="list the variant's files in a recipe (deploy recipes show MODEL)",
        )
    if len(matches) > 1:
        names_ = ", ".join(m[0] for m in matches)
        raise UsageError(
            f"quant {quant!r} matches several GGUF sets in {where}: {names_}",
            hint="name the files in the recipe's variant (files:)",
        )
    return matches[0]


def select_safetensors(names: Iterable[str], where: str) -> list[str]:
    top = [n for n in names if "/" not in n]
    weights = [n for n in top if n.endswith(".safetensors")]
    hf_layout = [n for n in weights if not n.startswith("consolidated")]
    if hf_layout:
        weights = hf_layout
    if not weights:
        raise NotFound(f"no .safetensors files in {where}")
    extras = [n for n in top if n in SAFETENSORS_EXTRAS or n.endswith(".safetensors.index.json")]
    return sorted(set(weights) | set(extras))


def select_files(variant: Variant, names: Iterable[str], where: str) -> list[str]:
    """The repo-relative names of the variant's files, from the recipe or the listing."""
    if variant.files:
        return [f.name for f in variant.files]
    names = list(names)
    if variant.format == "gguf":
        return select_gguf(names, variant.quant, where)
    return select_safetensors(names, where)
