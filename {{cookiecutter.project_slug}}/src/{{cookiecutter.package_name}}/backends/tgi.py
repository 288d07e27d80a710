"""Hugging Face TGI: chat through its OpenAI route, text through /generate[_stream].

/info names the model and its limits (`max_input_tokens`, `max_total_tokens`,
`max_concurrent_requests`); /metrics has the queue (`tgi_queue_size`) and the
running batch (`tgi_batch_current_size`).  Errors are flat
`{"error": "...", "error_type": "..."}`: 429 when max_concurrent_requests is
exceeded, 422 for validation, 424 when generation fails.  TGI has no
embeddings route (embeddings are Text Embeddings Inference's job).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from ..llm.errors import NotSupportedError, UpstreamError
from ..llm.models import (
    ChatCompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
    TextCompletionChoice,
    TextCompletionChunk,
    TextCompletionRequest,
    TextCompletionResponse,
    Usage,
    new_id,
)
from .errors import error_in_stream
from .openai_compatible import OpenAICompatibleClient, finish_reason
from .streams import sse_events

QUEUE = "tgi_queue_size"
BATCH = "tgi_batch_current_size"


def grammar(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's response_format as TGI's grammar: `{"type": "json", "value": <schema>}`."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return {"type": "json", "value": {"type": "object"}}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
        return {"type": "json", "value": schema}
    return None


def generate_parameters(request: TextCompletionRequest) -> dict[str, Any]:
    """OpenAI sampling fields as /generate parameters.

    TGI decodes greedily unless told to sample, while OpenAI samples at
    temperature 1 by default; so sampling is on unless temperature is 0, which
    TGI itself rejects as a value.  top_p must be below 1 for TGI, and 1 means
    "off" anyway.
    """
    params: dict[str, Any] = {"details": True, "do_sample": request.temperature != 0}
    if request.max_tokens is not None:
        params["max_new_tokens"] = request.max_tokens
    if request.temperature:
        params["temperature"] = request.temperature
    if request.top_p is not None and 0 < request.top_p < 1:
        params["top_p"] = request.top_p
    for ours, theirs in (
        ("top_k", "top_k"),
        ("seed", "seed"),
        ("repetition_penalty", "repetition_penalty"),
        ("frequency_penalty", "frequency_penalty"),
    ):
        value = getattr(request, ours)
        if value is not None:
            params[theirs] = value
    if request.stop_list():
        params["stop"] = request.stop_list()
    if request.suffix is not None:
        raise NotSupportedError("TGI's /generate has no suffix (fill-in-the-middle) parameter")
    format_ = getattr(request, "response_format", None)
    if isinstance(format_, dict) and (value := grammar(format_)) is not None:
        params["grammar"] = value
    return params


def header_count(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    return int(value) if value is not None and value.isdigit() else None


class TgiClient(OpenAICompatibleClient):
    """A text-generation-inference node."""

    supports_embeddings = False
    max_concurrent: int | None = None

    def chat_body(self, request: ChatCompletionRequest, *, stream: bool) -> dict[str, Any]:
        body = super().chat_body(request, stream=stream)
        if (value := grammar(request.response_format)) is not None:
            body["response_format"] = value
        return body

    def _generate_body(self, request: TextCompletionRequest) -> dict[str, Any]:
        return {"inputs": request.prompt_text(), "parameters": generate_parameters(request)}

    async def text_completion(self, request: TextCompletionRequest) -> TextCompletionResponse:
        data, headers = await self.fetch("POST", "/generate", body=self._generate_body(request))
        if not isinstance(data.get("generated_text"), str):
            raise UpstreamError("TGI's /generate answer has no generated_text")
        details = data.get("details") or {}
        prompt = header_count(headers, "x-prompt-tokens")
        completion = details.get("generated_tokens", header_count(headers, "x-generated-tokens"))
        usage = (
            Usage.of(prompt, completion) if prompt is not None and completion is not None else None
        )
        return TextCompletionResponse(
            model=request.model,
            choices=[
                TextCompletionChoice(
                    text=data["generated_text"],
                    finish_reason=finish_reason(details.get("finish_reason")),
                )
            ],
            usage=usage,
        )

    async def stream_text_completion(
        self, request: TextCompletionRequest
    ) -> AsyncIterator[TextCompletionChunk]:
        chunk_id = new_id("cmpl")
        body = self._generate_body(request)
        async with self.streaming("/generate_stream", body, sse_events) as events:
            async for event in events:
                error = error_in_stream(event)
                if error is not None:
                    raise error
                token = event.get("token") or {}
                details = event.get("details")
                text = "" if token.get("special") else str(token.get("text", ""))
                yield TextCompletionChunk(
                    id=chunk_id,
                    model=request.model,
                    choices=[
                        TextCompletionChoice(
                            text=text,
                            finish_reason=finish_reason(details.get("finish_reason"))
                            if details
                            else None,
                        )
                    ],
                )
                if details:
                    prompt = details.get("input_length")
                    completion = details.get("generated_tokens")
                    if isinstance(prompt, int) and isinstance(completion, int):
                        yield TextCompletionChunk(
                            id=chunk_id,
                            model=request.model,
                            choices=[],
                            usage=Usage.of(prompt, completion),
                        )

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        raise NotSupportedError(
            f"node {self.node.name!r} runs TGI, which has no embeddings; use a TEI or vLLM node"
        )

    async def list_models(self) -> list[ModelInfo]:
        info = await self.query("GET", "/info")
        self.max_concurrent = info.get("max_concurrent_requests")
        total = info.get("max_total_tokens")
        return [
            ModelInfo(
                id=str(info.get("model_id")),
                context_length=total if isinstance(total, int) else None,
                capabilities={"embeddings": False},
            )
        ]

    async def check_health(self) -> None:
        await self.probe("/health")
        found = await self.scrape((QUEUE, BATCH))
        if found is None:
            return
        self.load.set_signals(
            running=sum(found[BATCH]) if BATCH in found else None,
            waiting=sum(found[QUEUE]) if QUEUE in found else None,
            capacity=self.max_concurrent if isinstance(self.max_concurrent, int) else None,
        )


CLIENT = TgiClient
