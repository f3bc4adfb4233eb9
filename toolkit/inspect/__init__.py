"""Facts from model files: GGUF headers, HF config.json and safetensors headers."""
