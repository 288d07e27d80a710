"""The LLM interface: OpenAI-shaped models, client interfaces and the error hierarchy."""
