"""Ollama through its native API: /api/chat, /api/generate, /api/embed.

The native API, not Ollama's /v1 layer, because only it reports which models
are warm (/api/ps) and their context (/api/show), and takes `think`, `format`
schemas and every sampling option.  The functions below translate to and from
OpenAI's shapes; a full queue answers 503 "server busy", a retryable overload.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any, get_args

from ..config import Capability
from ..llm.errors import InvalidRequestError, LlmError, UpstreamError
from ..llm.models import (
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChatMessage,
    ChoiceDelta,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    FinishReason,
    FunctionCall,
    ModelInfo,
    SamplingParams,
    TextCompletionChoice,
    TextCompletionChunk,
    TextCompletionRequest,
    TextCompletionResponse,
    ToolCall,
    ToolCallDelta,
    Usage,
    new_id,
)
from .base import HttpClient
from .errors import error_in_stream
from .streams import ndjson_objects

OLLAMA_WORDS = ("completion", "completion", "embedding", "tools", "vision")  # as Capability
# OpenAI sampling fields Ollama takes as options, under the same name but one.
OPTIONS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
)
RENAMED = {"repetition_penalty": "repeat_penalty"}


def options(request: SamplingParams, max_tokens: int | None) -> dict[str, Any]:
    opts = {
        RENAMED.get(name, name): value
        for name in OPTIONS
        if (value := getattr(request, name)) is not None
    }
    if max_tokens is not None:
        opts["num_predict"] = max_tokens
    if request.stop_list():
        opts["stop"] = request.stop_list()
    return opts


def output_format(response_format: Any) -> str | dict[str, Any] | None:
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_object":
        return "json"
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else "json"
    return None


def think(request: ChatCompletionRequest | TextCompletionRequest) -> bool | str | None:
    """OpenRouter's `reasoning` ({effort} / {enabled}) or `reasoning_effort` as Ollama's `think`."""
    reasoning = getattr(request, "reasoning", None) or {}
    effort = reasoning.get("effort") or getattr(request, "reasoning_effort", None)
    if effort in ("none", "minimal"):
        return False
    if effort in ("low", "medium", "high"):
        return str(effort)
    if "enabled" in reasoning:
        return bool(reasoning["enabled"])
    return None


def arguments_object(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        raise InvalidRequestError(
            f"tool call arguments are not JSON: {arguments[:200]!r}", param="messages"
        ) from None


def images(message: ChatMessage) -> list[str]:
    """Base64 images from `image_url` parts; Ollama takes no URLs."""
    found = []
    for part in message.content if isinstance(message.content, list) else []:
        if part.get("type") != "image_url":
            continue
        url = str((part.get("image_url") or {}).get("url", ""))
        header, _, data = url.partition(",")
        if not (header.startswith("data:") and header.endswith(";base64")):
            raise InvalidRequestError(
                "Ollama takes images as base64 data URLs only", param="messages"
            )
        found.append(data)
    return found


def ollama_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    tool_names: dict[str, str] = {}
    out = []
    for message in messages:
        role = {"developer": "system", "function": "tool"}.get(message.role, message.role)
        item: dict[str, Any] = {"role": role, "content": message.text()}
        if pictures := images(message):
            item["images"] = pictures
        if message.reasoning:
            item["thinking"] = message.reasoning
        if message.tool_calls:
            item["tool_calls"] = [
                {
                    "function": {
                        "name": call.function.name,
                        "arguments": arguments_object(call.function.arguments),
                    }
                }
                for call in message.tool_calls
            ]
            tool_names.update({call.id: call.function.name for call in message.tool_calls})
        if role == "tool":
            # Ollama matches a result to its call by the tool's name, not by id.
            name = tool_names.get(message.tool_call_id or "") or message.name
            if name:
                item["tool_name"] = name
        out.append(item)
    return out


def finish(done_reason: Any, tool_calls: bool) -> FinishReason:
    if tool_calls:
        return "tool_calls"
    return "length" if done_reason == "length" else "stop"


def usage_of(final: dict[str, Any]) -> Usage | None:
    # Go omits zero counts: an absent count on the final object is zero, as Ollama's /v1 reads it.
    if "eval_count" not in final and "prompt_eval_count" not in final:
        return None
    return Usage.of(int(final.get("prompt_eval_count", 0)), int(final.get("eval_count", 0)))


def tool_calls_of(message: dict[str, Any]) -> list[ToolCall]:
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        name = str(function.get("name", ""))
        call_id = str(call.get("id") or new_id("call"))
        calls.append(ToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments)))
    return calls


def float32_base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: little-endian float32s."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


class OllamaClient(HttpClient):
    """An Ollama node."""

    # --- requests ------------------------------------------------------------------

    def chat_body(self, request: ChatCompletionRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": ollama_messages(request.messages),
            "stream": stream,
            "options": options(request, request.token_limit()),
            # Refuse a prompt that does not fit, as OpenAI servers do, rather than let
            # Ollama silently drop the oldest messages (older versions ignore this).
            "truncate": False,
        }
        # Ollama has no tool_choice; "none" is honoured by not offering the tools.
        if request.tools and request.tool_choice != "none":
            body["tools"] = request.tools
        if (fmt := output_format(request.response_format)) is not None:
            body["format"] = fmt
        if (thinking := think(request)) is not None:
            body["think"] = thinking
        return body

    def generate_body(self, request: TextCompletionRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "prompt": request.prompt_text(),
            "stream": stream,
            "options": options(request, request.max_tokens),
            "truncate": False,
        }
        if request.suffix is not None:
            body["suffix"] = request.suffix
        else:
            # A text completion continues the prompt as written, as /v1/completions
            # does on other servers: no chat template around it.
            body["raw"] = True
        if (fmt := output_format(getattr(request, "response_format", None))) is not None:
            body["format"] = fmt
        return body

    # --- whole answers ---------------------------------------------------------------

    async def chat_completion(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        data, _ = await self.fetch("POST", "/api/chat", body=self.chat_body(request, stream=False))
        message = data.get("message") or {}
        calls = tool_calls_of(message)
        return ChatCompletionResponse(
            model=request.model,
            choices=[
                ChatCompletionChoice(
                    message=ChatMessage(
                        role="assistant",
                        content=message.get("content") or ("" if not calls else None),
                        reasoning=message.get("thinking") or None,
                        tool_calls=calls or None,
                    ),
                    finish_reason=finish(data.get("done_reason"), bool(calls)),
                )
            ],
            usage=usage_of(data),
        )

    async def text_completion(self, request: TextCompletionRequest) -> TextCompletionResponse:
        data, _ = await self.fetch(
            "POST", "/api/generate", body=self.generate_body(request, stream=False)
        )
        return TextCompletionResponse(
            model=request.model,
            choices=[
                TextCompletionChoice(
                    text=str(data.get("response", "")),
                    finish_reason=finish(data.get("done_reason"), False),
                )
            ],
            usage=usage_of(data),
        )

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        body: dict[str, Any] = {
            "model": request.model,
            "input": request.inputs(),
            # OpenAI refuses an input that does not fit; Ollama would cut it silently.
            "truncate": False,
        }
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        data, _ = await self.fetch("POST", "/api/embed", body=body)
        vectors = data.get("embeddings")
        if not isinstance(vectors, list):
            raise UpstreamError("Ollama's /api/embed answer has no embeddings")
        as_base64 = request.encoding_format == "base64"
        prompt_tokens = int(data.get("prompt_eval_count", 0))
        return EmbeddingResponse(
            model=request.model,
            data=[
                EmbeddingData(index=i, embedding=float32_base64(v) if as_base64 else v)
                for i, v in enumerate(vectors)
            ],
            usage=EmbeddingUsage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens),
        )

    # --- streams ---------------------------------------------------------------------

    async def stream_chat_completion(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        chunk_id = new_id("chatcmpl")

        def chunk(delta: ChoiceDelta, reason: FinishReason | None = None) -> ChatCompletionChunk:
            return ChatCompletionChunk(
                id=chunk_id,
                model=request.model,
                choices=[ChatCompletionStreamChoice(delta=delta, finish_reason=reason)],
            )

        body = self.chat_body(request, stream=True)
        calls = 0
        started = False
        async with self.streaming("/api/chat", body, ndjson_objects) as objects:
            async for obj in objects:
                if (error := error_in_stream(obj)) is not None:
                    raise error  # sent in-band after a 200
                if not started:
                    started = True
                    yield chunk(ChoiceDelta(role="assistant", content=""))
                message = obj.get("message") or {}
                deltas = [
                    ToolCallDelta(index=calls + i, **call.model_dump())
                    for i, call in enumerate(tool_calls_of(message))
                ]
                calls += len(deltas)
                if message.get("content") or message.get("thinking") or deltas:
                    yield chunk(
                        ChoiceDelta(
                            content=message.get("content") or None,
                            reasoning=message.get("thinking") or None,
                            tool_calls=deltas or None,
                        )
                    )
                if obj.get("done"):
                    yield chunk(ChoiceDelta(), finish(obj.get("done_reason"), calls > 0))
                    if (usage := usage_of(obj)) is not None:
                        yield ChatCompletionChunk(
                            id=chunk_id, model=request.model, choices=[], usage=usage
                        )
                    return

    async def stream_text_completion(
        self, request: TextCompletionRequest
    ) -> AsyncIterator[TextCompletionChunk]:
        chunk_id = new_id("cmpl")
        body = self.generate_body(request, stream=True)
        async with self.streaming("/api/generate", body, ndjson_objects) as objects:
            async for obj in objects:
                if (error := error_in_stream(obj)) is not None:
                    raise error  # sent in-band after a 200
                done = bool(obj.get("done"))
                text = str(obj.get("response", ""))
                if text or done:
                    reason = finish(obj.get("done_reason"), False) if done else None
                    yield TextCompletionChunk(
                        id=chunk_id,
                        model=request.model,
                        choices=[TextCompletionChoice(text=text, finish_reason=reason)],
                    )
                if done:
                    if (usage := usage_of(obj)) is not None:
                        yield TextCompletionChunk(
                            id=chunk_id, model=request.model, choices=[], usage=usage
                        )
                    return

    # --- discovery and health ----------------------------------------------------------

    async def list_models(self) -> list[ModelInfo]:
        """Installed models; those this node is configured for are described in full."""
        tags, warm = await asyncio.gather(self.query("GET", "/api/tags"), self._running())
        installed = [str(m.get("name")) for m in tags.get("models") or [] if m.get("name")]
        wanted = {model.upstream_name for model in self.node.models}

        async def describe(name: str) -> ModelInfo:
            # "llama3.2" in the config is "llama3.2:latest" on the server.
            alias = name.removesuffix(":latest")
            model_id = alias if alias in wanted and name not in wanted else name
            if wanted and model_id not in wanted:
                return ModelInfo(id=model_id, loaded=name in warm)
            return await self._describe(model_id, name, warm)

        # Concurrently: the balancer gives discovery one health-check timeout in all.
        return list(await asyncio.gather(*(describe(name) for name in installed)))

    async def _running(self) -> dict[str, int | None]:
        """Warm models and the context they were loaded with."""
        data = await self.query("GET", "/api/ps")
        return {
            str(m.get("name")): m.get("context_length")
            if isinstance(m.get("context_length"), int)
            else None
            for m in data.get("models") or []
        }

    async def _describe(self, model_id: str, name: str, warm: dict[str, int | None]) -> ModelInfo:
        try:
            show = await self.query("POST", "/api/show", body={"model": name})
        except LlmError:
            return ModelInfo(id=model_id, loaded=name in warm)
        trained = next(
            (v for k, v in (show.get("model_info") or {}).items() if k.endswith(".context_length")),
            None,
        )
        configured = None
        for line in str(show.get("parameters") or "").splitlines():
            key, _, value = line.partition(" ")
            if key == "num_ctx" and value.strip().isdigit():
                configured = int(value.strip())
        # The context a request really gets: as loaded, else the Modelfile's, else trained.
        context = warm.get(name) or configured or (trained if isinstance(trained, int) else None)
        capabilities = show.get("capabilities")
        details = show.get("details") or {}
        return ModelInfo(
            id=model_id,
            context_length=context,
            loaded=name in warm,
            # Ollama refuses tools a model lacks; a missing "embedding" is no refusal.
            capabilities={
                ours: theirs in capabilities
                for ours, theirs in zip(get_args(Capability), OLLAMA_WORDS, strict=True)
                if isinstance(capabilities, list)
                and (theirs in capabilities or ours != "embeddings")
            },
            parameters={
                key: str(details[key])
                for key in ("family", "parameter_size", "quantization_level", "format")
                if details.get(key)
            },
        )

    async def check_health(self) -> None:
        """Ollama has no health route or gauges: /api/version answering means serving."""
        await self.probe("/api/version")
        warm = await self._running()
        for model in self._discovered:
            model.loaded = model.id in warm or f"{model.id}:latest" in warm


CLIENT = OllamaClient
