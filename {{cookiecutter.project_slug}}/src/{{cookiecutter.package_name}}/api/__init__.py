"""The OpenRouter-facing HTTP API: OpenAI-compatible endpoints and the provider listing."""
