"""Offline mode: what deploy and the engines it starts must be told to stay off the network."""

from __future__ import annotations

from toolkit import settings


def is_offline(flag: bool | None = None) -> bool:
    """`--offline` wins; otherwise DEPLOY_OFFLINE=1 or HF_HUB_OFFLINE=1."""
    return True if flag else settings.offline()


def offline_env() -> dict[str, str]:
    """Environment for an engine process that must make no network access.

    huggingface_hub/transformers/vLLM read these: no hub look-ups (files come from the
    cache), no usage statistics, no telemetry.
    """
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
