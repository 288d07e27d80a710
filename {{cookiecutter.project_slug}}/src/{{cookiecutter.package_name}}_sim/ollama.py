"""Ollama: native /api/* (NDJSON streams) and its OpenAI-compatible /v1/*.

Shapes follow Ollama's api/types.go, server/routes.go and docs/api.md: flat
errors `{"error": "..."}` (503 "server busy, please try again.  maximum
pending requests exceeded" when the queue is full, 404 `model "x" not found,
try pulling it first`), streams on by default, a final object with
`done_reason` and nanosecond durations, tool-call arguments as an object,
thinking in `message.thinking` when `think` is set.  Ollama drops the oldest
messages to fit `num_ctx` rather than refusing (an error only with
`truncate: false`), has no health or load endpoints (`GET /` says it is
running), and loads models per request, so `loading_s` does not apply.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from .dialect import Dialect, RequestError, as_stop_list, text_of
from .engine import Piece, Plan, count_tokens
from .openai_compat import OpenAICompatible
from .wire import dumps, json_response, read_json

VERSION = "0.12.6"
BUSY = "server busy, please try again.  maximum pending requests exceeded"
NDJSON = "application/x-ndjson"
DETAILS = {
    "parent_model": "",
    "format": "gguf",
    "family": "llama",
    "families": ["llama"],
    "parameter_size": "3.2B",
    "quantization_level": "Q4_K_M",
}
SIZE = 2019393189


def _timestamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).isoformat().replace("+00:00", "Z")


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _not_found(name: Any) -> str:
    return (
        f"model {json.dumps(name if isinstance(name, str) else '')} not found, try pulling it first"
    )


class OllamaServer(Dialect):
    """Ollama's native API, plus `/v1/*` through `OllamaOpenAI`."""

    def routes(self) -> list[BaseRoute]:
        native = [
            Route("/", self.root, methods=["GET", "HEAD"]),
            Route("/api/version", self.version, methods=["GET", "HEAD"]),
            Route("/api/tags", self.endpoint(self.tags), methods=["GET", "HEAD"]),
            Route("/api/show", self.endpoint(self.show), methods=["POST"]),
            Route("/api/ps", self.endpoint(self.ps), methods=["GET"]),
            Route("/api/chat", self.endpoint(self.chat), methods=["POST"]),
            Route("/api/generate", self.endpoint(self.generate_text), methods=["POST"]),
            Route("/api/embed", self.endpoint(self.embed), methods=["POST"]),
        ]
        return native + OllamaOpenAI(self.sim).routes()

    def gate(self, request: Request) -> None:
        # Ollama has no API key of its own; the simulator's stands for an auth proxy.
        key = self.sim.config.api_key
        if key and request.headers.get("authorization") != f"Bearer {key}":
            raise RequestError(self.unauthorized())

    # --- errors ------------------------------------------------------------------

    def error(
        self, status: int, message: str, kind: str = "", param: str | None = None
    ) -> Response:
        return json_response({"error": message}, status)

    def unauthorized(self) -> Response:
        return self.error(401, "unauthorized")

    def overloaded(self) -> Response:
        return self.error(503, BUSY)

    def server_error(self) -> Response:
        return self.error(500, "llama runner process has terminated: exit status 2")

    async def parse(self, request: Request) -> dict[str, Any]:
        try:
            body = await read_json(request)
        except ValueError as error:
            raise self.bad_request(str(error)) from None
        if not isinstance(body, dict):
            raise self.bad_request("request body must be a JSON object")
        return body

    def model_of(self, body: dict[str, Any]) -> str:
        name = body.get("model") or body.get("name")
        if not name:
            raise self.bad_request("model is required")
        if name not in self.models():
            raise RequestError(self.error(404, _not_found(name)))
        return str(name)

    # --- discovery -------------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(self, request: Request) -> Response:
        return json_response({"version": VERSION})

    async def tags(self, request: Request) -> Response:
        models = [
            {
                "name": name,
                "model": name,
                "modified_at": _timestamp(),
                "size": SIZE,
                "digest": _digest(name),
                "details": DETAILS,
            }
            for name in self.models()
        ]
        return json_response({"models": models})

    async def show(self, request: Request) -> Response:
        body = await self.parse(request)
        name = body.get("model") or body.get("name")
        if name not in self.models():
            return self.error(404, f"model '{name}' not found")
        context = self.sim.config.context_length
        return json_response(
            {
                "modelfile": f"FROM {name}\n",
                "parameters": 'stop "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": DETAILS,
                "model_info": {
                    "general.architecture": "llama",
                    "general.parameter_count": 3212749888,
                    "llama.context_length": context,
                    "llama.embedding_length": 3072,
                    "llama.block_count": 28,
                },
                "capabilities": ["completion", "tools", "thinking"],
                "modified_at": _timestamp(),
            }
        )

    async def ps(self, request: Request) -> Response:
        expires = _timestamp(datetime.now(UTC) + timedelta(minutes=5))
        models = [
            {
                "name": name,
                "model": name,
                "size": SIZE,
                "digest": _digest(name),
                "details": DETAILS,
                "expires_at": expires,
                "size_vram": SIZE,
                "context_length": self.sim.config.context_length,
            }
            for name in self.models()
        ]
        return json_response({"models": models})

    # --- generation -------------------------------------------------------------------

    def options(self, body: dict[str, Any]) -> tuple[int, int | None, list[str], int | None]:
        """num_ctx, the token limit from num_predict, stop and seed."""
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise self.bad_request("options must be an object")
        num_ctx = options.get("num_ctx")
        context = (
            num_ctx if isinstance(num_ctx, int) and num_ctx > 0 else self.sim.config.context_length
        )
        predict = options.get("num_predict")
        limit: int | None = None
        if isinstance(predict, int) and predict > 0:
            limit = predict
        try:
            stop = as_stop_list(options.get("stop"))
        except ValueError as error:
            raise self.bad_request(str(error)) from None
        seed = options.get("seed") if isinstance(options.get("seed"), int) else None
        if predict == -2:
            limit = -2  # fill the context: resolved once the prompt is known
        return context, limit, stop, seed

    def fit(self, prompts: list[str], context: int, truncate: bool) -> list[str]:
        """Drop the oldest non-system turns until the prompt fits, as Ollama does."""
        if sum(count_tokens(text) for text in prompts) <= context:
            return prompts
        if not truncate:
            raise self.bad_request("the input length exceeds the context length")
        kept = list(prompts)
        while len(kept) > 1 and sum(count_tokens(text) for text in kept) > context:
            kept.pop(0)
        return kept

    @staticmethod
    def wants_thinking(body: dict[str, Any]) -> bool:
        think = body.get("think")
        return think is True or think in ("low", "medium", "high", "max")

    async def chat(self, request: Request) -> Response:
        body = await self.parse(request)
        model = self.model_of(body)
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise self.bad_request("messages must be a list of objects")
        if not messages:
            return json_response(
                self.loaded(model, {"message": {"role": "assistant", "content": ""}})
            )
        context, limit, stop, seed = self.options(body)
        texts = self.fit(
            [text_of(m.get("content")) for m in messages],
            context,
            body.get("truncate") is not False,
        )
        prompt = "\n".join(texts)
        prompt_tokens = min(count_tokens(prompt), context)
        if limit == -2:
            limit = max(context - prompt_tokens, 1)
        tool = OpenAICompatible.tool_for({"tools": body.get("tools")}, messages[-1].get("role"))
        plan = self.sim.plan(
            prompt=prompt,
            limit=limit,
            stop=stop,
            seed=seed,
            reasoning=self.wants_thinking(body),
            tool=tool,
        )
        started = time.monotonic_ns()
        streaming = body.get("stream") is not False
        return await self.generate(
            request,
            plan=plan,
            prompt_tokens=prompt_tokens,
            stream_body=partial(self.chat_stream, model, prompt_tokens, started)
            if streaming
            else None,
            body=partial(self.chat_final, model, prompt_tokens, started, whole=True),
            media_type=NDJSON,
        )

    def loaded(self, model: str, fields: dict[str, Any]) -> dict[str, Any]:
        """The answer to an empty request: Ollama loads the model and says so."""
        return {
            "model": model,
            "created_at": _timestamp(),
            **fields,
            "done_reason": "load",
            "done": True,
        }

    @staticmethod
    def tool_calls(plan: Plan) -> list[dict[str, Any]]:
        assert plan.tool_call is not None
        call = plan.tool_call
        return [
            {
                "id": f"call_{call.id}",
                "function": {"index": 0, "name": call.name, "arguments": call.arguments},
            }
        ]

    def chat_final(
        self, model: str, prompt_tokens: int, started: int, plan: Plan, *, whole: bool
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": plan.text if whole else ""}
        if whole and plan.reasoning:
            message["thinking"] = plan.reasoning_text
        if whole and plan.tool_call is not None:
            message["tool_calls"] = self.tool_calls(plan)
        return {
            "model": model,
            "created_at": _timestamp(),
            "message": message,
            "done": True,
            "done_reason": "length" if plan.finish_reason == "length" else "stop",
            **self.durations(prompt_tokens, plan, started),
        }

    def durations(self, prompt_tokens: int, plan: Plan, started: int) -> dict[str, int]:
        total = time.monotonic_ns() - started
        prompt_ns = int(self.sim.config.ttft_s * 1e9)
        return {
            "total_duration": total,
            "load_duration": 1_000_000,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": prompt_ns,
            "eval_count": plan.completion_tokens,
            "eval_duration": max(total - prompt_ns, 0),
        }

    async def chat_stream(
        self, model: str, prompt_tokens: int, started: int, plan: Plan, pieces: AsyncIterator[Piece]
    ) -> AsyncGenerator[bytes, None]:
        tool_pieces = 0
        async for piece in pieces:
            message: dict[str, Any] = {"role": "assistant", "content": ""}
            if piece.kind == "content":
                message["content"] = piece.text
            elif piece.kind == "reasoning":
                message["thinking"] = piece.text
            else:
                # Ollama parses the whole call before sending it, in one chunk.
                tool_pieces += 1
                if plan.tool_call is None or tool_pieces < len(plan.tool_call.pieces):
                    continue
                message["tool_calls"] = self.tool_calls(plan)
            yield self.line(
                {"model": model, "created_at": _timestamp(), "message": message, "done": False}
            )
        yield self.line(self.chat_final(model, prompt_tokens, started, plan, whole=False))

    @staticmethod
    def line(body: dict[str, Any]) -> bytes:
        return dumps(body) + b"\n"

    async def generate_text(self, request: Request) -> Response:
        body = await self.parse(request)
        model = self.model_of(body)
        prompt = body.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise self.bad_request("prompt must be a string")
        if not prompt:
            return json_response(self.loaded(model, {"response": ""}))
        system = body.get("system") if isinstance(body.get("system"), str) else ""
        context, limit, stop, seed = self.options(body)
        full = f"{system}\n{prompt}" if system else prompt
        prompt_tokens = count_tokens(full)
        if prompt_tokens > context:
            if body.get("truncate") is False:
                raise self.bad_request("the input length exceeds the context length")
            prompt_tokens = context  # the runner keeps the end of the prompt
        if limit == -2:
            limit = max(context - prompt_tokens, 1)
        plan = self.sim.plan(
            prompt=full, limit=limit, stop=stop, seed=seed, reasoning=self.wants_thinking(body)
        )
        started = time.monotonic_ns()
        streaming = body.get("stream") is not False
        return await self.generate(
            request,
            plan=plan,
            prompt_tokens=prompt_tokens,
            stream_body=partial(self.generate_stream, model, prompt_tokens, started)
            if streaming
            else None,
            body=partial(self.generate_final, model, prompt_tokens, started, whole=True),
            media_type=NDJSON,
        )

    def generate_final(
        self, model: str, prompt_tokens: int, started: int, plan: Plan, *, whole: bool
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "model": model,
            "created_at": _timestamp(),
            "response": plan.text if whole else "",
        }
        if whole and plan.reasoning:
            answer["thinking"] = plan.reasoning_text
        answer.update(
            done=True,
            done_reason="length" if plan.finish_reason == "length" else "stop",
            context=list(range(1, prompt_tokens + plan.completion_tokens + 1)),
            **self.durations(prompt_tokens, plan, started),
        )
        return answer

    async def generate_stream(
        self, model: str, prompt_tokens: int, started: int, plan: Plan, pieces: AsyncIterator[Piece]
    ) -> AsyncGenerator[bytes, None]:
        async for piece in pieces:
            chunk: dict[str, Any] = {"model": model, "created_at": _timestamp(), "response": ""}
            if piece.kind == "reasoning":
                chunk["thinking"] = piece.text
            else:
                chunk["response"] = piece.text
            chunk["done"] = False
            yield self.line(chunk)
        yield self.line(self.generate_final(model, prompt_tokens, started, plan, whole=False))

    async def embed(self, request: Request) -> Response:
        body = await self.parse(request)
        model = self.model_of(body)
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(text, str) for text in inputs):
            raise self.bad_request("invalid input type")
        context, _, _, _ = self.options(body)
        if body.get("truncate") is False and any(count_tokens(t) > context for t in inputs):
            raise self.bad_request("the input length exceeds the context length")
        tokens = sum(min(count_tokens(text), context) for text in inputs)
        started = time.monotonic_ns()
        refusal = await self.embed_admission(tokens)
        if refusal is not None:
            return refusal
        return json_response(
            {
                "model": model,
                "embeddings": [self.sim.embedding(text) for text in inputs],
                "total_duration": time.monotonic_ns() - started,
                "load_duration": 1_000_000,
                "prompt_eval_count": tokens,
            }
        )


class OllamaOpenAI(OpenAICompatible):
    """Ollama's /v1 layer: OpenAI shapes, Ollama's error types, no context refusals."""

    owned_by = "library"
    completion_default_max_tokens = None

    def error(
        self, status: int, message: str, kind: str = "", param: str | None = None
    ) -> Response:
        error_type = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        body = {"message": message, "type": error_type, "param": None, "code": None}
        return json_response({"error": body}, status)

    def overloaded(self) -> Response:
        return self.error(503, BUSY)

    def resolve_model(self, name: Any) -> str:
        if name in self.models():
            return str(name)
        raise RequestError(self.error(404, _not_found(name)))

    def token_limit(self, prompt_tokens: int, requested: int | None) -> int | None:
        return requested  # Ollama truncates the prompt instead of refusing it

    def model_card(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": int(time.time()), "owned_by": "library"}
