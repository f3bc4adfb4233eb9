"""Server-sent events as OpenAI-compatible servers stream them (`data: {...}` lines,
ending with `data: [DONE]`)."""

from __future__ import annotations

import json
from typing import Any

#: What `event` returns for the end-of-stream marker.
DONE: dict[str, Any] = {"__done__": True}


def event(line: str) -> dict[str, Any] | None:
    """The JSON of one `data:` line, DONE for `data: [DONE]`, None for any other line."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return DONE
    parsed = json.loads(data)
    return parsed if isinstance(parsed, dict) else None
