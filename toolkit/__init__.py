"""deploy: plan, launch and prove a private OpenAI-compatible LLM server on your own hardware."""

__version__ = "0.1.0"
