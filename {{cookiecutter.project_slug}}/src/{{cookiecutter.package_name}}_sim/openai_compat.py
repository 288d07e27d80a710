"""The OpenAI-compatible routes (/v1/*), shared by vLLM, llama.cpp, TGI and generic servers.

`OpenAICompatible` is also the `openai` dialect itself: a plain OpenAI-compatible
server in the LM Studio mould, with no load endpoints.  Subclasses adjust ids,
extra fields, context handling and errors to match their server.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .dialect import Dialect, RequestError, as_stop_list, positive_int, text_of
from .engine import Piece, Plan, count_tokens
from .wire import dumps, json_response, read_json

T = TypeVar("T")


@dataclass
class Turn:
    """The identity of one answer, shared by all its chunks."""

    id: str
    created: int
    model: str
    prompt_tokens: int
    include_usage: bool

    @classmethod
    def start(cls, id: str, model: str, prompt_tokens: int, body: dict[str, Any]) -> Turn:
        streaming = body.get("stream") is True
        return cls(
            id=id,
            created=int(time.time()),
            model=model,
            prompt_tokens=prompt_tokens,
            include_usage=streaming and _include_usage(body),
        )


class OpenAICompatible(Dialect):
    """A generic OpenAI-compatible server: models, chat, completions, embeddings."""

    reasoning_field: str | None = "reasoning"
    sse_prefix = b"data: "
    owned_by = "organization_owner"
    # The content of a stream's first (role) chunk: "" (OpenAI, vLLM) or null (llama.cpp).
    role_content: str | None = ""
    # OpenAI's default for /v1/completions; None: until the model stops.
    completion_default_max_tokens: int | None = 16
    # vLLM sends a chat stream's finish_reason on its last content chunk, not after it.
    finish_with_last_token = False

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/models", self.endpoint(self.list_models), methods=["GET"]),
            Route("/v1/chat/completions", self.endpoint(self.chat), methods=["POST"]),
            Route("/v1/completions", self.endpoint(self.completions), methods=["POST"]),
            Route("/v1/embeddings", self.endpoint(self.embeddings), methods=["POST"]),
        ]

    # --- errors ------------------------------------------------------------------

    def error(
        self, status: int, message: str, kind: str = "", param: str | None = None
    ) -> Response:
        code = {401: "invalid_api_key", 404: "model_not_found"}.get(status)
        body = {"message": message, "type": kind or "invalid_request_error", "param": param}
        return json_response({"error": {**body, "code": code}}, status)

    def overloaded(self) -> Response:
        return self.error(429, "Too many requests: the server queue is full.", "rate_limit_error")

    def context_error(self, prompt_tokens: int, requested: int | None) -> RequestError:
        total = prompt_tokens + (requested or 0)
        message = (
            f"This model's maximum context length is {self.sim.config.context_length} tokens. "
            f"However, you requested {total} tokens ({prompt_tokens} in the messages, "
            f"{requested or 0} in the completion). "
            "Please reduce the length of the messages or completion."
        )
        response = self.error(400, message, "invalid_request_error", "messages")
        return RequestError(response)

    # --- request helpers ---------------------------------------------------------

    async def parse(self, request: Request) -> dict[str, Any]:
        try:
            body = await read_json(request)
        except ValueError as error:
            raise self.bad_request(str(error)) from None
        if not isinstance(body, dict):
            raise self.bad_request("request body must be a JSON object")
        return body

    def field(self, name: str, parse: Callable[[Any], T], value: Any) -> T:
        """A parsed request field; a ValueError is the server's refusal naming the field."""
        try:
            return parse(value)
        except ValueError as error:
            raise self.bad_request(str(error), name) from None

    def resolve_model(self, name: Any) -> str:
        """The model the answer names; unknown names are refused as the server does."""
        if name in self.models():
            return str(name)
        raise RequestError(self.error(404, f"The model `{name}` does not exist.", "", "model"))

    def check_prompt(self, prompt: str, body: dict[str, Any]) -> None:
        """Checks before tokenizing: a sampling number that is not one is refused (vLLM's
        validation and llama-server's both answer 400 to `temperature: "hot"`)."""
        for name in ("temperature", "top_p"):
            self.field(name, _number, body.get(name))

    def token_limit(self, prompt_tokens: int, requested: int | None) -> int | None:
        """Tokens the answer may use; refuses what cannot fit in the context."""
        room = self.sim.config.context_length - prompt_tokens
        if room < 1 or (requested is not None and requested > room):
            raise self.context_error(prompt_tokens, requested)
        return requested

    def wants_reasoning(self, body: dict[str, Any]) -> bool:
        """Thinking is produced when asked for: `reasoning_effort` (not "none"),
        `chat_template_kwargs.enable_thinking` or an OpenRouter-style `reasoning` object."""
        if self.reasoning_field is None:
            return False
        effort = body.get("reasoning_effort")
        kwargs = body.get("chat_template_kwargs")
        reasoning = body.get("reasoning")
        return (
            (isinstance(effort, str) and effort != "none")
            or (isinstance(kwargs, dict) and kwargs.get("enable_thinking") is True)
            or (isinstance(reasoning, dict) and reasoning.get("enabled", True) is not False)
        )

    def calls_tools(self) -> bool:
        """Whether the server acts on `tools` at all (llama-server: per chat template)."""
        return True

    @staticmethod
    def tool_for(body: dict[str, Any], last_role: Any) -> tuple[str, dict[str, Any]] | None:
        """The tool to call: with `tools`, `tool_choice` other than "none" and a user turn
        last, the named tool (or the first one) is called; after a tool result, text."""
        tools = body.get("tools")
        choice = body.get("tool_choice")
        if not isinstance(tools, list) or not tools or choice == "none" or last_role != "user":
            return None
        functions = [
            tool["function"]
            for tool in tools
            if isinstance(tool, dict) and isinstance(tool.get("function"), dict)
        ]
        if isinstance(choice, dict):
            wanted = (choice.get("function") or {}).get("name")
            functions = [function for function in functions if function.get("name") == wanted]
        if not functions:
            return None
        return str(functions[0].get("name", "")), functions[0].get("parameters") or {}

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex}"

    def usage(self, turn: Turn, plan: Plan) -> dict[str, Any]:
        completion = plan.completion_tokens
        return {
            "prompt_tokens": turn.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": turn.prompt_tokens + completion,
        }

    def sse(self, body: Any) -> bytes:
        return self.sse_prefix + dumps(body) + b"\n\n"

    def done(self) -> bytes:
        return self.sse_prefix + b"[DONE]\n\n"

    # --- hooks for a server's extra fields ------------------------------------------

    def decorate(self, body: dict[str, Any], turn: Turn, plan: Plan | None) -> dict[str, Any]:
        """Add a server's own top-level fields to a body or chunk."""
        return body

    def decorate_message(self, message: dict[str, Any], plan: Plan) -> dict[str, Any]:
        return message

    def decorate_choice(self, choice: dict[str, Any], plan: Plan | None) -> dict[str, Any]:
        return choice

    # --- /v1/models ------------------------------------------------------------------

    async def list_models(self, request: Request) -> Response:
        return json_response(
            {"object": "list", "data": [self.model_card(m) for m in self.models()]}
        )

    def model_card(self, name: str) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": self.owned_by,
        }

    # --- /v1/chat/completions ----------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        body = await self.parse(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise self.bad_request("messages must be a non-empty list", "messages")
        if not all(isinstance(message, dict) for message in messages):
            raise self.bad_request("each message must be an object", "messages")
        model = self.resolve_model(body.get("model"))
        prompt = "\n".join(text_of(message.get("content")) for message in messages)
        self.check_prompt(prompt, body)
        prompt_tokens = count_tokens(prompt)
        requested = self.field(
            "max_tokens",
            partial(positive_int, name="max_tokens"),
            body.get("max_completion_tokens", body.get("max_tokens")),
        )
        stop = self.field("stop", as_stop_list, body.get("stop"))
        limit = self.token_limit(prompt_tokens, requested)
        seed = _seed(body)
        plan = self.sim.plan(
            prompt=prompt,
            limit=limit,
            stop=stop,
            seed=seed,
            reasoning=self.wants_reasoning(body),
            tool=self.tool_for(body, messages[-1].get("role")) if self.calls_tools() else None,
        )
        return await self.answer(
            request,
            body,
            Turn.start(self.new_id("chatcmpl"), model, prompt_tokens, body),
            plan,
            self.chat_stream,
            self.chat_body,
        )

    async def answer(
        self,
        request: Request,
        body: dict[str, Any],
        turn: Turn,
        plan: Plan,
        stream_body: Callable[[Turn, Plan, AsyncIterator[Piece]], AsyncGenerator[bytes, None]],
        whole_body: Callable[[Turn, Plan], dict[str, Any]],
    ) -> Response:
        """Generate the plan, streamed when the request asks, in this turn's identity."""
        return await self.generate(
            request,
            plan=plan,
            prompt_tokens=turn.prompt_tokens,
            stream_body=partial(stream_body, turn) if body.get("stream") is True else None,
            body=partial(whole_body, turn),
        )

    def chat_body(self, turn: Turn, plan: Plan) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": plan.text}
        if plan.reasoning and self.reasoning_field:
            message[self.reasoning_field] = plan.reasoning_text
        if plan.tool_call is not None:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": f"call_{plan.tool_call.id}",
                    "type": "function",
                    "function": {
                        "name": plan.tool_call.name,
                        "arguments": plan.tool_call.arguments_json,
                    },
                }
            ]
        choice = {
            "index": 0,
            "message": self.decorate_message(message, plan),
            "logprobs": None,
            "finish_reason": plan.finish_reason,
        }
        body = {
            "id": turn.id,
            "object": "chat.completion",
            "created": turn.created,
            "model": turn.model,
            "choices": [self.decorate_choice(choice, plan)],
            "usage": self.usage(turn, plan),
        }
        return self.decorate(body, turn, plan)

    def chat_chunk(
        self, turn: Turn, delta: dict[str, Any], finish: str | None = None, plan: Plan | None = None
    ) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        body = {
            "id": turn.id,
            "object": "chat.completion.chunk",
            "created": turn.created,
            "model": turn.model,
            "choices": [self.decorate_choice(choice, plan) if finish else choice],
        }
        return self.sse(self.decorate(body, turn, None))

    async def chat_stream(
        self, turn: Turn, plan: Plan, pieces: AsyncIterator[Piece]
    ) -> AsyncGenerator[bytes, None]:
        started = tool_started = False
        held: str | None = None  # the latest content, when the finish rides on it
        async for piece in pieces:
            if not started:
                # The role chunk goes out with the first token, as the servers do.
                yield self.chat_chunk(turn, {"role": "assistant", "content": self.role_content})
                started = True
            if held is not None:
                yield self.chat_chunk(turn, {"content": held})
                held = None
            if piece.kind == "content" and self.finish_with_last_token:
                held = piece.text
            elif piece.kind == "content":
                yield self.chat_chunk(turn, {"content": piece.text})
            elif piece.kind == "reasoning" and self.reasoning_field:
                yield self.chat_chunk(turn, {self.reasoning_field: piece.text})
            elif piece.kind == "tool":
                if not tool_started:
                    yield self.tool_header(turn, plan)
                    tool_started = True
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece.text}}]}
                yield self.chat_chunk(turn, delta)
        if not started:
            yield self.chat_chunk(turn, {"role": "assistant", "content": self.role_content})
        if plan.tool_call is not None and not tool_started:
            yield self.tool_header(turn, plan)
        last = {} if held is None else {"content": held}
        yield self.chat_chunk(turn, last, plan.finish_reason, plan)
        if turn.include_usage:
            yield self.usage_chunk(turn, plan, "chat.completion.chunk")
        yield self.done()

    def tool_header(self, turn: Turn, plan: Plan) -> bytes:
        """The first delta of a streamed tool call: index, id, type and name."""
        assert plan.tool_call is not None
        call = {
            "index": 0,
            "id": f"call_{plan.tool_call.id}",
            "type": "function",
            "function": {"name": plan.tool_call.name, "arguments": ""},
        }
        return self.chat_chunk(turn, {"tool_calls": [call]})

    def usage_chunk(self, turn: Turn, plan: Plan, kind: str) -> bytes:
        body = {
            "id": turn.id,
            "object": kind,
            "created": turn.created,
            "model": turn.model,
            "choices": [],
            "usage": self.usage(turn, plan),
        }
        return self.sse(self.decorate(body, turn, plan))

    # --- /v1/completions ------------------------------------------------------------------

    async def completions(self, request: Request) -> Response:
        body = await self.parse(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise self.bad_request("prompt must be a string (one prompt per request)", "prompt")
        model = self.resolve_model(body.get("model"))
        self.check_prompt(prompt, body)
        prompt_tokens = count_tokens(prompt)
        requested = self.field(
            "max_tokens", partial(positive_int, name="max_tokens"), body.get("max_tokens")
        )
        stop = self.field("stop", as_stop_list, body.get("stop"))
        if requested is None:
            requested = self.completion_default_max_tokens
        limit = self.token_limit(prompt_tokens, requested)
        seed = _seed(body)
        plan = self.sim.plan(prompt=prompt, limit=limit, stop=stop, seed=seed)
        return await self.answer(
            request,
            body,
            Turn.start(self.new_id("cmpl"), model, prompt_tokens, body),
            plan,
            self.completion_stream,
            self.completion_body,
        )

    def completion_body(self, turn: Turn, plan: Plan) -> dict[str, Any]:
        choice = {
            "index": 0,
            "text": plan.text,
            "logprobs": None,
            "finish_reason": plan.finish_reason,
        }
        body = {
            "id": turn.id,
            "object": "text_completion",
            "created": turn.created,
            "model": turn.model,
            "choices": [self.decorate_choice(choice, plan)],
            "usage": self.usage(turn, plan),
        }
        return self.decorate(body, turn, plan)

    def completion_chunk(
        self, turn: Turn, text: str, finish: str | None = None, plan: Plan | None = None
    ) -> bytes:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        body = {
            "id": turn.id,
            "object": "text_completion",
            "created": turn.created,
            "model": turn.model,
            "choices": [self.decorate_choice(choice, plan) if finish else choice],
        }
        return self.sse(self.decorate(body, turn, None))

    async def completion_stream(
        self, turn: Turn, plan: Plan, pieces: AsyncIterator[Piece]
    ) -> AsyncGenerator[bytes, None]:
        async for piece in pieces:
            yield self.completion_chunk(turn, piece.text)
        yield self.completion_chunk(turn, "", plan.finish_reason, plan)
        if turn.include_usage:
            yield self.usage_chunk(turn, plan, "text_completion")
        yield self.done()

    # --- /v1/embeddings ---------------------------------------------------------------------

    async def embeddings(self, request: Request) -> Response:
        body = await self.parse(request)
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(i, str) for i in inputs)
        ):
            raise self.bad_request("input must be a string or a list of strings", "input")
        model = self.resolve_model(body.get("model"))
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise self.bad_request("encoding_format must be 'float' or 'base64'", "encoding_format")
        tokens = sum(count_tokens(text) for text in inputs)
        refusal = await self.embed_admission(tokens)
        if refusal is not None:
            return refusal
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": _encode(self.sim.embedding(text), encoding),
            }
            for index, text in enumerate(inputs)
        ]
        answer = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return json_response(self.decorate_embedding(answer))

    def decorate_embedding(self, body: dict[str, Any]) -> dict[str, Any]:
        return body


def _number(value: Any) -> float | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        kind = {str: "string", bool: "boolean", list: "array", dict: "object"}.get(type(value))
        raise ValueError(f"type must be number, but is {kind or 'null'}")
    return value


def _seed(body: dict[str, Any]) -> int | None:
    seed = body.get("seed")
    return seed if isinstance(seed, int) else None


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
