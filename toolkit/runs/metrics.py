"""What a running engine has served, from its Prometheus /metrics (read with the run's
key; llama-server serves it with --metrics, vLLM always)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Served:
    #: Completed requests (vLLM counts them; llama-server does not: None).
    requests: int | None
    prompt_tokens: int | None
    generated_tokens: int | None
    #: Generated tokens per second of generation time, over the run's life.
    decode_tok_s: float | None


def parse(text: str) -> Served:
    """llama.cpp's `llamacpp:*` or vLLM's `vllm:*` counters (labels summed)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        name = name.split("{", 1)[0]
        try:
            value = float(rest.split()[0])
        except (ValueError, IndexError):
            continue
        values[name] = values.get(name, 0.0) + value

    def get(*names: str) -> float | None:
        found = [values[n] for n in names if n in values]
        return sum(found) if found else None

    generated = get("llamacpp:tokens_predicted_total", "vllm:generation_tokens_total")
    seconds = get("llamacpp:tokens_predicted_seconds_total")
    rate = None
    if generated and seconds:
        rate = generated / seconds
    requests = get("vllm:request_success_total")
    prompt = get("llamacpp:prompt_tokens_total", "vllm:prompt_tokens_total")
    return Served(
        requests=None if requests is None else int(requests),
        prompt_tokens=None if prompt is None else int(prompt),
        generated_tokens=None if generated is None else int(generated),
        decode_tok_s=rate,
    )


def fetch(base_url: str, key: str | None, *, timeout: float = 2.0) -> Served | None:
    """The run's counters, or None when /metrics does not answer (not enabled, busy)."""
    import httpx

    root = base_url.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.get(f"{root}/metrics", headers=headers, timeout=timeout, verify=False)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    return parse(r.text)
