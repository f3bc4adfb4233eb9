"""`deploy check`: does a running server serve what its plan promised?

Three checks over the OpenAI API, each pass / fail / unknown with the evidence:
- served context: what the server says it holds per sequence (vLLM: `max_model_len` in
  /v1/models; llama-server: `n_ctx` per slot from /props) against the plan's context;
- chat round trip: a chat completion comes back with text;
- tool calling (recipes that declare it): a request with a tool comes back as a structured
  `tool_calls` entry, not as the model's raw tool-call text in `content` (which is what a
  server without the right tool parser / chat template returns).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from toolkit.runs.ready import Probe, auth_headers, tls_verify

Verdict = Literal["pass", "fail", "unknown"]

#: The tool offered in the tool-call check (the usual weather example).
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
TOOL_PROMPT = "What is the weather in Paris right now? Call the get_weather tool."
CHAT_PROMPT = "What is the capital of France? Answer in one short sentence."
#: Raw tool-call markers models write when the server does not parse them.
_RAW_TOOL_MARKERS = ("<tool_call>", "<function=", '"name": "get_weather"', "[TOOL_CALLS]")


@dataclass(frozen=True)
class CheckItem:
    name: str
    verdict: Verdict
    detail: str


def served_context(probe: Probe, client: Any) -> tuple[int | None, str]:
    """Context per sequence the server reports, and where it read it."""
    r = client.get(f"{probe.base_url}/v1/models")
    r.raise_for_status()
    for m in r.json().get("data", []):
        if m.get("id") != probe.model:
            continue
        if isinstance(m.get("max_model_len"), int):  # vLLM
            return int(m["max_model_len"]), "/v1/models max_model_len"
        meta = m.get("meta") or {}
        if isinstance(meta.get("n_ctx"), int):  # llama-server: per slot
            return int(meta["n_ctx"]), "/v1/models meta.n_ctx (per slot)"
    r = client.get(f"{probe.base_url}/props")
    if r.status_code == 200:
        settings = r.json().get("default_generation_settings") or {}
        if isinstance(settings.get("n_ctx"), int):
            return int(settings["n_ctx"]), "/props default_generation_settings.n_ctx"
    return None, "the server reports no context size"


def check_context(probe: Probe, client: Any, expected: int | None) -> CheckItem:
    served, where = served_context(probe, client)
    if served is None or expected is None:
        want = "unknown" if expected is None else f"{expected:,}"
        got = "unknown" if served is None else f"{served:,}"
        return CheckItem("context", "unknown", f"served {got} ({where}); plan {want}")
    verdict: Verdict = "pass" if served == expected else "fail"
    return CheckItem("context", verdict, f"served {served:,} ({where}); plan {expected:,}")


def check_chat(probe: Probe, client: Any) -> CheckItem:
    r = client.post(
        f"{probe.base_url}/v1/chat/completions",
        json={
            "model": probe.model,
            "messages": [{"role": "user", "content": CHAT_PROMPT}],
            "max_tokens": 24,
            "temperature": 0,
        },
    )
    if r.status_code != 200:
        return CheckItem("chat", "fail", f"HTTP {r.status_code}: {r.text[:200]}")
    choices = r.json().get("choices") or []
    text = ((choices[0].get("message") or {}).get("content") or "") if choices else ""
    if not text.strip():
        return CheckItem("chat", "fail", "the answer was empty")
    return CheckItem("chat", "pass", f"answered: {text.strip()[:80]!r}")


def judge_tool_response(body: dict[str, Any]) -> CheckItem:
    """Pure: is this chat completion a well-formed call of get_weather?"""
    choices = body.get("choices") or []
    if not choices:
        return CheckItem("tool call", "fail", "no choices in the response")
    message = choices[0].get("message") or {}
    calls = message.get("tool_calls") or []
    content = message.get("content") or ""
    if not calls:
        if any(marker in content for marker in _RAW_TOOL_MARKERS):
            return CheckItem(
                "tool call",
                "fail",
                "the model wrote the call as text in `content`: the server did not parse it "
                "(tool parser / chat template flags from the recipe missing?)",
            )
        return CheckItem("tool call", "fail", f"no tool call; answered {content[:80]!r}")
    fn = calls[0].get("function") or {}
    name, raw_args = fn.get("name"), fn.get("arguments")
    if name != WEATHER_TOOL["function"]["name"]:
        return CheckItem("tool call", "fail", f"called unknown function {name!r}")
    try:
        args = json.loads(raw_args) if isinstance(raw_args, str) else raw_args
    except ValueError:
        return CheckItem("tool call", "fail", f"arguments are not JSON: {raw_args!r}")
    if not isinstance(args, dict) or "city" not in args:
        return CheckItem("tool call", "fail", f"arguments lack 'city': {raw_args!r}")
    finish = choices[0].get("finish_reason")
    return CheckItem(
        "tool call", "pass", f"get_weather({json.dumps(args)}), finish_reason {finish!r}"
    )


def check_tool_call(probe: Probe, client: Any) -> CheckItem:
    r = client.post(
        f"{probe.base_url}/v1/chat/completions",
        json={
            "model": probe.model,
            "messages": [{"role": "user", "content": TOOL_PROMPT}],
            "tools": [WEATHER_TOOL],
            "tool_choice": "auto",
            "max_tokens": 128,
            "temperature": 0,
        },
    )
    if r.status_code != 200:
        return CheckItem("tool call", "fail", f"HTTP {r.status_code}: {r.text[:200]}")
    return judge_tool_response(r.json())


def check_server(
    probe: Probe, *, expected_ctx: int | None, tool_calling: bool, timeout: float = 120.0
) -> list[CheckItem]:
    """Run every check against a live server."""
    import httpx

    verify = tls_verify(probe)
    with httpx.Client(headers=auth_headers(probe.key), timeout=timeout, verify=verify) as client:
        items = [check_context(probe, client, expected_ctx), check_chat(probe, client)]
        if tool_calling:
            items.append(check_tool_call(probe, client))
        else:
            items.append(
                CheckItem("tool call", "unknown", "the recipe does not declare tool calling")
            )
    return items
