"""The seed's client interfaces, in Python.

`LlmClient` answers whole requests; `StreamingLlmClient` adds streamed
variants.  Clients keep the server's load gauges (`get_metrics`) so the balancer
never has to ask the network before choosing a node.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

from .models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
    NodeMetrics,
    TextCompletionChunk,
    TextCompletionRequest,
    TextCompletionResponse,
)


class LlmClient(abc.ABC):
    """One node: one LLM server reached over HTTP."""

    @abc.abstractmethod
    def get_supported_models(self) -> list[ModelInfo]:
        """The models this node serves: configured ones merged with discovered ones."""

    @abc.abstractmethod
    def get_metrics(self) -> NodeMetrics:
        """The server's own load gauges as last read (no I/O; the same object each time)."""

    @abc.abstractmethod
    async def chat_completion(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """A non-streamed chat completion; `request.model` is the node's own model name."""

    @abc.abstractmethod
    async def text_completion(self, request: TextCompletionRequest) -> TextCompletionResponse:
        """A non-streamed text completion."""

    @abc.abstractmethod
    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeddings; raises NotSupportedError where the server has none."""

    @abc.abstractmethod
    async def check_health(self) -> None:
        """Ask the server whether it serves now; raise an LlmError when it does not.

        Servers that publish load gauges are scraped here too, so one periodic
        call keeps both health and load fresh.
        """

    @abc.abstractmethod
    async def discover_models(self) -> list[ModelInfo]:
        """Ask the server which models it has and their context lengths."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the node's connection pool."""

    async def count_tokens(self, model: str, text: str) -> int | None:
        """The server's own token count of `text`, or None where it cannot say."""
        return None


class StreamingLlmClient(LlmClient):
    """A client whose server can stream tokens as they are generated.

    Closing the iterator early (the caller went away) must close the upstream
    request so the server stops generating.
    """

    @abc.abstractmethod
    def stream_chat_completion(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        """OpenAI chunks; the last one carries usage and empty choices."""

    @abc.abstractmethod
    def stream_text_completion(
        self, request: TextCompletionRequest
    ) -> AsyncIterator[TextCompletionChunk]:
        """OpenAI text chunks; the last one carries usage and empty choices."""
