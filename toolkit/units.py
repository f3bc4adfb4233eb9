"""Byte sizes: parse what users type, format what we print.

`G`, `GiB`, `T`, `TiB`, `M`, `MiB`, `K`, `KiB` are binary (2^30 …); `GB`, `TB`, `MB`, `KB`
are decimal. A bare number is bytes.
"""

from __future__ import annotations

import re

from toolkit.errors import UsageError

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "ki": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "ti": 1024**4,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

GiB = 1024**3
MiB = 1024**2


def parse_size(text: str, *, what: str = "size") -> int:
    """Parse '24G', '79.18GiB', '128GB', '2T' into bytes. Raises UsageError on bad input."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(
            f"bad {what} {text!r}: expected a number with a unit such as 24G, 79.18GiB or 128GB"
        )
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit not in _UNITS:
        raise UsageError(
            f"bad {what} {text!r}: unknown unit {match.group(2)!r}; "
            "use G/GiB, T/TiB, M/MiB (binary) or GB/TB/MB (decimal)"
        )
    value = round(number * _UNITS[unit])
    if value <= 0:
        raise UsageError(f"bad {what} {text!r}: must be greater than zero")
    return value


def format_bytes(n: float | None) -> str:
    """Human-readable binary size: 18.2 GiB, 92.1 MiB. None prints as '?'."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_params(n: float | None) -> str:
    """30.5B, 135M, 1.0T."""
    if n is None:
        return "?"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if n >= div:
            text = f"{n / div:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return str(int(n))
