"""Any server speaking OpenAI's API: LM Studio, LocalAI, and the base for vLLM and llama.cpp.

Requests go out as OpenAI bodies with the caller's fields kept.  Answers are
normalised where servers drift from OpenAI: `reasoning_content` (llama.cpp,
older vLLM) becomes `reasoning`, finish reasons outside OpenAI's set are
mapped, and usage is moved to one final chunk with no choices.  Such servers
publish no load gauges, so the in-flight count kept here is the load signal.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, TypeVar, cast, get_args

from pydantic import ValidationError

from ..llm.errors import NotSupportedError
from ..llm.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    FinishReason,
    ModelInfo,
    TextCompletionChunk,
    TextCompletionRequest,
    TextCompletionResponse,
    Usage,
)
from .base import HttpClient, validate
from .errors import error_in_stream
from .streams import decode, sse_data

FINISH_REASONS = frozenset(get_args(FinishReason))
# Reasons some servers send instead of OpenAI's (TGI: eos_token, stop_sequence).
FINISH_ALIASES = {"eos_token": "stop", "eos": "stop", "stop_sequence": "stop", "abort": "error"}
# Fields servers use for a model's context length in /v1/models (vLLM, LM Studio, LocalAI).
CONTEXT_KEYS = ("max_model_len", "context_length", "max_context_length", "context_window")
NO_EMBEDDINGS = "this model does not serve embeddings"
ChunkT = TypeVar("ChunkT", ChatCompletionChunk, TextCompletionChunk)
# Chunks that need more than validation: in-band errors (`"error"` also as `"object"`'s
# value), usage to move to the end, reasoning to rename, tool calls that set the finish.
_NEEDS_WORK = re.compile(rb'"(?:error|usage|reasoning_content|tool_calls)"')


def finish_reason(value: Any) -> FinishReason | None:
    if value is None:
        return None
    reason = value if value in FINISH_REASONS else FINISH_ALIASES.get(str(value), "stop")
    return cast(FinishReason, reason)


def usage_of(data: Any) -> Usage | None:
    """The server's usage object as ours; None when it sent none."""
    if not isinstance(data, Mapping) or "prompt_tokens" not in data:
        return None
    prompt = int(data["prompt_tokens"])
    completion = int(data.get("completion_tokens") or 0)
    prompt_details = data.get("prompt_tokens_details") or {}
    completion_details = data.get("completion_tokens_details") or {}
    return Usage.of(
        prompt,
        completion,
        cached_tokens=prompt_details.get("cached_tokens"),
        reasoning_tokens=completion_details.get("reasoning_tokens"),
    )


def normalise_choices(
    data: dict[str, Any], part: str | None, *, called_tools: bool = False
) -> dict[str, Any]:
    """Map finish reasons and, for chat (`part` = message or delta), reasoning names.

    A choice that called tools finishes with `tool_calls`, as in OpenAI's API,
    even where the server says `stop` (TGI's `eos_token`); for streams the
    caller says whether an earlier delta called tools.
    """
    for choice in data.get("choices") or []:
        reason = finish_reason(choice.get("finish_reason"))
        content = choice.get(part) if part is not None else None
        if isinstance(content, dict):
            # OpenRouter's `reasoning` field, whichever name the server used.
            thinking = content.pop("reasoning_content", None)
            if thinking and not content.get("reasoning"):
                content["reasoning"] = thinking
            called_tools = called_tools or bool(content.get("tool_calls"))
        choice["finish_reason"] = "tool_calls" if reason == "stop" and called_tools else reason
    return data


class OpenAICompatibleClient(HttpClient):
    """A node whose server implements OpenAI's /v1 endpoints."""

    chat_path = "/v1/chat/completions"
    completions_path = "/v1/completions"
    embeddings_path = "/v1/embeddings"
    models_path = "/v1/models"

    # --- requests ------------------------------------------------------------------

    def chat_body(self, request: ChatCompletionRequest, *, stream: bool) -> dict[str, Any]:
        body = request.wire(self.node.extra_fields)
        effort = (request.reasoning or {}).get("effort")
        if effort is not None:
            # OpenRouter's `reasoning` object; OpenAI servers read `reasoning_effort`.
            body.pop("reasoning", None)
            body.setdefault("reasoning_effort", effort)
        return self._streaming(body, stream)

    def text_body(self, request: TextCompletionRequest, *, stream: bool) -> dict[str, Any]:
        return self._streaming(request.wire(self.node.extra_fields), stream)

    @staticmethod
    def _streaming(body: dict[str, Any], stream: bool) -> dict[str, Any]:
        body["stream"] = stream
        if stream:
            # Always ask for usage: the provider bills from it; the API decides whether
            # the caller sees the usage chunk.
            body["stream_options"] = {**body.get("stream_options", {}), "include_usage": True}
        else:
            body.pop("stream_options", None)
        return body

    # --- whole answers ---------------------------------------------------------------

    async def chat_completion(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        data, _ = await self.fetch(
            "POST", self.chat_path, body=self.chat_body(request, stream=False)
        )
        data = normalise_choices(data, "message")
        data["usage"] = usage_of(data.get("usage"))
        return validate(ChatCompletionResponse, data)

    async def text_completion(self, request: TextCompletionRequest) -> TextCompletionResponse:
        data, _ = await self.fetch(
            "POST", self.completions_path, body=self.text_body(request, stream=False)
        )
        data = normalise_choices(data, None)
        data["usage"] = usage_of(data.get("usage"))
        return validate(TextCompletionResponse, data)

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        if not self.supports_embeddings:
            raise NotSupportedError(NO_EMBEDDINGS)
        try:
            data, _ = await self.fetch(
                "POST", self.embeddings_path, body=request.wire(self.node.extra_fields)
            )
        except NotSupportedError:
            # Learned from the server itself (no route, or llama.cpp's 501).
            self.supports_embeddings = False
            raise NotSupportedError(NO_EMBEDDINGS) from None
        return validate(EmbeddingResponse, data)

    # --- streams ---------------------------------------------------------------------

    def stream_chat_completion(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        return self._stream(
            self.chat_path,
            lambda: self.chat_body(request, stream=True),
            "delta",
            ChatCompletionChunk,
        )

    def stream_text_completion(
        self, request: TextCompletionRequest
    ) -> AsyncIterator[TextCompletionChunk]:
        return self._stream(
            self.completions_path,
            lambda: self.text_body(request, stream=True),
            None,
            TextCompletionChunk,
        )

    async def _stream(
        self,
        path: str,
        body: Callable[[], dict[str, Any]],
        part: str | None,
        chunk_type: type[ChunkT],
    ) -> AsyncGenerator[ChunkT, None]:
        """The server's chunks, normalised and validated, with its usage moved to one last
        chunk.  One generator for both steps: every layer costs each chunk a hop."""
        usage: Usage | None = None
        last: bytes | None = None
        called_tools = False
        async with self.streaming(path, body(), sse_data) as payloads:
            async for payload in payloads:
                last = payload
                if not called_tools and _NEEDS_WORK.search(payload) is None:
                    # The common chunk: OpenAI's shape already, validated straight from its
                    # bytes.  Anything that does not fit takes the general path below.
                    try:
                        chunk = chunk_type.model_validate_json(payload)
                    except ValidationError:
                        pass
                    else:
                        if chunk.choices:
                            yield chunk
                        continue
                event = decode(payload)
                error = error_in_stream(event)
                if error is not None:
                    raise error
                usage = usage_of(event.pop("usage", None)) or usage
                if event.get("choices"):
                    called_tools = called_tools or any(
                        (choice.get("delta") or {}).get("tool_calls") for choice in event["choices"]
                    )
                    yield validate(
                        chunk_type, normalise_choices(event, part, called_tools=called_tools)
                    )
            if usage is not None and last is not None:
                final = {**decode(last), "choices": [], "usage": usage.wire()}
                yield validate(chunk_type, final)

    # --- discovery and health ----------------------------------------------------------

    async def list_models(self) -> list[ModelInfo]:
        data = await self.query("GET", self.models_path)
        cards = data.get("data")
        if not isinstance(cards, list):
            return []
        return [
            self.model_info(card) for card in cards if isinstance(card, dict) and card.get("id")
        ]

    def model_info(self, card: dict[str, Any]) -> ModelInfo:
        context = (card.get(key) for key in CONTEXT_KEYS)
        length = next((v for v in context if isinstance(v, int) and v > 0), None)
        return ModelInfo(id=str(card["id"]), context_length=length)

    async def check_health(self) -> None:
        """No health route in OpenAI's API: a model listing that answers means serving."""
        await self.probe(self.models_path)


CLIENT = OpenAICompatibleClient
