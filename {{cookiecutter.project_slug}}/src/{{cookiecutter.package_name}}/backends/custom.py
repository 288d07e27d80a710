"""A client for your own LLM server: fill in the methods below.

`HttpClient` (backends/base.py) does the connection pool, timeouts, API key, load
gauges and error mapping; what is left is what only your server knows.
`openai_compatible.py` is a complete worked example, `ollama.py` one for a server
whose API is not OpenAI's.

1. Requests.  Each method gets an OpenAI-shaped request (llm/models.py) whose `model`
   is your server's own name for the model; `request.wire(self.node.extra_fields)`
   gives the OpenAI JSON a node may be sent (unknown fields stay out).  Send a whole
   request with `self.fetch(...)`, a stream with `async with self.streaming(path,
   body, streams.sse_events) as objects:` (`streams.ndjson_objects` for NDJSON),
   discovery with `self.query(...)` and health with `self.probe(path)` (these two on
   the health-check timeout).  All raise the right `LlmError` when the server
   refuses; the balancer counts in-flight requests, latency and errors itself.
2. Answers.  Build the response models from your server's answer, with usage only
   from its own token counts (None when it gives none).  A stream ends with a chunk
   that has empty `choices` and the usage.  Yield from inside the `async with
   self.streaming(...)` block: closing the iterator then closes the upstream request
   and your server stops generating.  The readers keep split UTF-8 characters whole.
3. Errors.  `errors.error_for_status` maps status codes (400/422 invalid, 404 unknown
   model, 429 and "busy" 503 overloaded, other 5xx upstream errors) and reads the
   common error bodies.  If your server words context overflow or overload
   differently, override `error_for` and return `ContextLengthExceededError` /
   `OverloadedError` yourself, with the server's message.  Errors sent inside a 200
   stream go through `errors.error_in_stream`.
4. Metrics.  If your server publishes load (queue length, running requests, KV-cache
   use), read it in `check_health` and store it with `self.load.set_signals(...)`;
   `scrape.gauges` reads Prometheus text.  Otherwise the balancer's own in-flight
   count is the load signal.
5. Register nothing: a node with `type = "custom"` gets this client through
   `backends.create_client`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..llm.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
    TextCompletionChunk,
    TextCompletionRequest,
    TextCompletionResponse,
)
from .base import HttpClient

WHERE = "in backends/custom.py (see openai_compatible.py for a worked example)"


class CustomClient(HttpClient):
    """Your server's client; each method says what it must do."""

    async def chat_completion(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        raise NotImplementedError(
            f"CustomClient.chat_completion {WHERE}: send the chat request to your server "
            "and build a ChatCompletionResponse with the server's own usage"
        )

    async def text_completion(self, request: TextCompletionRequest) -> TextCompletionResponse:
        raise NotImplementedError(
            f"CustomClient.text_completion {WHERE}: send the prompt to your server and "
            "build a TextCompletionResponse, or raise NotSupportedError if it has none"
        )

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        raise NotImplementedError(
            f"CustomClient.embeddings {WHERE}: return an EmbeddingResponse, or raise "
            "NotSupportedError if your server has no embeddings"
        )

    def stream_chat_completion(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        raise NotImplementedError(
            f"CustomClient.stream_chat_completion {WHERE}: yield ChatCompletionChunks "
            "from inside `async with self.streaming(...)`, ending with a usage chunk"
        )

    def stream_text_completion(
        self, request: TextCompletionRequest
    ) -> AsyncIterator[TextCompletionChunk]:
        raise NotImplementedError(
            f"CustomClient.stream_text_completion {WHERE}: yield TextCompletionChunks "
            "from inside `async with self.streaming(...)`, ending with a usage chunk"
        )

    async def check_health(self) -> None:
        raise NotImplementedError(
            f"CustomClient.check_health {WHERE}: call your server's health route with "
            "self.probe(path) and store its load gauges with self.load.set_signals"
        )

    async def list_models(self) -> list[ModelInfo]:
        raise NotImplementedError(
            f"CustomClient.list_models {WHERE}: ask your server for its models and "
            "return a ModelInfo (id, context_length) for each"
        )


CLIENT = CustomClient
