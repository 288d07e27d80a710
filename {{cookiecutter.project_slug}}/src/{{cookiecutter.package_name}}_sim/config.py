"""What a simulated server is: its dialect, its models, its speed, its limits and its faults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Dialect = Literal["ollama", "vllm", "llamacpp", "tgi", "openai"]

DEFAULT_MODELS: dict[str, str] = {
    "ollama": "llama3.2:3b",
    "vllm": "meta-llama/Llama-3.2-3B-Instruct",
    "llamacpp": "llama-3.2-3b-instruct",
    "tgi": "meta-llama/Llama-3.2-3B-Instruct",
    "openai": "llama-3.2-3b-instruct",
}


class SimConfig(BaseModel):
    """One simulated LLM server.

    Token counts use the simulator's tokenizer: a prompt costs one token per
    whitespace-separated word, and each generated word is one token.  A request
    without a token limit gets `output_tokens` words and finishes with `stop`.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    dialect: Dialect = "openai"
    models: list[str] = Field(default_factory=list, description="Empty: the dialect's default.")
    context_length: int = Field(default=4096, ge=16)
    ttft_s: float = Field(default=0.0, ge=0, description="Delay before the first token.")
    tokens_per_s: float = Field(default=0.0, ge=0, description="0: as fast as possible.")
    output_tokens: int = Field(default=16, ge=1, description="Length of a natural answer.")
    reasoning_tokens: int = Field(default=4, ge=0, description="Thinking words, when asked for.")
    embedding_dim: int = Field(default=8, ge=1)
    max_concurrency: int = Field(default=4, ge=1, description="Requests generating at once.")
    max_queue: int | None = Field(
        default=None, ge=0, description="Requests waiting beyond that; None: unbounded."
    )
    error_rate: float = Field(default=0.0, ge=0, le=1, description="Answer 500 this often.")
    hang_rate: float = Field(default=0.0, ge=0, le=1, description="Accept, then never answer.")
    drop_rate: float = Field(default=0.0, ge=0, le=1, description="Close the connection mid-way.")
    loading_s: float = Field(default=0.0, ge=0, description="Not ready for this long at start.")
    split_utf8: bool = Field(
        default=False, description="Multi-byte words, and stream chunks split inside characters."
    )
    seed: int = 0
    api_key: str | None = None
    metrics_enabled: bool = Field(default=True, description="llama.cpp's --metrics.")
    tool_template: bool = Field(
        default=True,
        description="llama.cpp: the chat template can call tools; without, `tools` is ignored.",
    )
    embeddings: bool | None = Field(
        default=None,
        description=(
            "Serve /v1/embeddings. vLLM: a pooling runner (--runner pooling), which then "
            "serves no generation; llama.cpp: --embeddings.  None: as the server starts by "
            "default (vLLM and llama.cpp without, the others with)."
        ),
    )

    @field_validator("models")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        if any(not name.strip() for name in value):
            raise ValueError("model names must not be empty")
        return value

    def serves_embeddings(self) -> bool:
        if self.embeddings is not None:
            return self.embeddings
        return self.dialect not in ("vllm", "llamacpp")

    def model_names(self) -> list[str]:
        return self.models or [DEFAULT_MODELS[self.dialect]]
