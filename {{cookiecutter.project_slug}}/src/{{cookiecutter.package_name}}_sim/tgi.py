"""Hugging Face TGI's router: /generate, /generate_stream, /v1/*, /info, /health, /metrics.

Shapes follow router/src (lib.rs, server.rs, validation.rs): flat errors
`{"error", "error_type"}` (422 `validation` with "Input validation error: ...",
429 `overloaded` "Model is overloaded"), SSE written `data:{...}` without a
space, token events with `generated_text`/`details` on the last one, empty
ids and a `system_fingerprint` in chat answers.  TGI serves one model and no
embeddings or thinking.  `max_concurrency + max_queue` is its
`--max-concurrent-requests` (unset: unbounded here, 128 in TGI).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncGenerator, AsyncIterator
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .dialect import RequestError, as_stop_list, positive_int
from .engine import Piece, Plan, count_tokens
from .openai_compat import OpenAICompatible, Turn
from .wire import json_response, prometheus

VERSION = "3.3.6"
FINISH = {"stop": "eos_token", "length": "length", "tool_calls": "eos_token"}


class TgiServer(OpenAICompatible):
    reasoning_field = None
    sse_prefix = b"data:"
    owned_by = "system"  # TGI lists its one model as owned by the system
    completion_default_max_tokens = None
    public_paths = frozenset({"/health", "/info", "/metrics"})

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/models", self.endpoint(self.list_models), methods=["GET"]),
            Route("/v1/chat/completions", self.endpoint(self.chat), methods=["POST"]),
            Route("/v1/completions", self.endpoint(self.completions), methods=["POST"]),
            Route("/generate", self.endpoint(self.generate_text), methods=["POST"]),
            Route("/generate_stream", self.endpoint(self.generate_stream), methods=["POST"]),
            Route("/info", self.info, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    # --- errors ------------------------------------------------------------------

    def error(
        self, status: int, message: str, kind: str = "", param: str | None = None
    ) -> Response:
        return json_response({"error": message, "error_type": kind}, status)

    def bad_request(self, message: str, param: str | None = None) -> RequestError:
        return RequestError(self.error(422, f"Input validation error: {message}", "validation"))

    def unauthorized(self) -> Response:
        return Response(status_code=401)

    def loading(self) -> Response:
        return self.error(503, "unhealthy", "healthcheck")

    def overloaded(self) -> Response:
        return self.error(429, "Model is overloaded", "overloaded")

    def server_error(self) -> Response:
        return self.error(500, "Incomplete generation", "incomplete_generation")

    def resolve_model(self, name: Any) -> str:
        """One model per server: the request's name is ignored."""
        return self.models()[0]

    def token_limit(self, prompt_tokens: int, requested: int | None) -> int | None:
        """TGI's validation: input below `max_input_tokens`, input + new within the total."""
        total = self.sim.config.context_length
        max_input = total - 1
        if prompt_tokens > max_input:
            raise self.bad_request(
                f"`inputs` must have less than {max_input} tokens. Given: {prompt_tokens}"
            )
        if requested is None:
            return total - prompt_tokens
        if prompt_tokens + requested > total:
            raise self.bad_request(
                f"`inputs` tokens + `max_new_tokens` must be <= {total}. "
                f"Given: {prompt_tokens} `inputs` tokens and {requested} `max_new_tokens`"
            )
        return requested

    def new_id(self, prefix: str) -> str:
        return ""

    def decorate(self, body: dict[str, Any], turn: Turn, plan: Plan | None) -> dict[str, Any]:
        body["system_fingerprint"] = f"{VERSION}-native"
        return body

    # --- native generation -------------------------------------------------------------

    def native_request(self, body: dict[str, Any]) -> tuple[int, Plan, dict[str, Any]]:
        inputs = body.get("inputs")
        if not isinstance(inputs, str) or not inputs:
            raise self.bad_request("`inputs` cannot be empty")
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise self.bad_request("`parameters` must be an object")
        try:
            requested = positive_int(parameters.get("max_new_tokens"), "max_new_tokens")
            stop = as_stop_list(parameters.get("stop"))
        except ValueError as error:
            raise self.bad_request(f"`{error}`") from None
        prompt_tokens = count_tokens(inputs)
        limit = self.token_limit(prompt_tokens, requested)
        seed = parameters.get("seed") if isinstance(parameters.get("seed"), int) else None
        plan = self.sim.plan(prompt=inputs, limit=limit, stop=stop, seed=seed)
        return prompt_tokens, plan, parameters

    @staticmethod
    def token(text: str) -> dict[str, Any]:
        token_id = zlib.crc32(text.encode()) % 32000
        return {"id": token_id, "text": text, "logprob": -0.5, "special": False}

    @staticmethod
    def finish_reason(plan: Plan) -> str:
        return "stop_sequence" if plan.stopped_by else FINISH[plan.finish_reason]

    async def generate_text(self, request: Request) -> Response:
        prompt_tokens, plan, parameters = self.native_request(await self.parse(request))
        seed = parameters.get("seed")

        def body(plan: Plan) -> dict[str, Any]:
            answer: dict[str, Any] = {"generated_text": plan.text}
            if parameters.get("details") is True:
                answer["details"] = {
                    "finish_reason": self.finish_reason(plan),
                    "generated_tokens": plan.completion_tokens,
                    "seed": seed,
                    "prefill": [],
                    "tokens": [self.token(word) for word in plan.content],
                }
            return answer

        headers = {
            "x-compute-type": "gpu+optimized",
            "x-prompt-tokens": str(prompt_tokens),
            "x-generated-tokens": str(plan.completion_tokens),
        }
        return await self.generate(
            request,
            plan=plan,
            prompt_tokens=prompt_tokens,
            stream_body=None,
            body=body,
            headers=headers,
        )

    async def generate_stream(self, request: Request) -> Response:
        prompt_tokens, plan, parameters = self.native_request(await self.parse(request))
        stream_body = partial(self.token_stream, prompt_tokens, parameters.get("seed"))
        return await self.generate(
            request,
            plan=plan,
            prompt_tokens=prompt_tokens,
            stream_body=stream_body,
            body=lambda _: {},
        )

    async def token_stream(
        self, prompt_tokens: int, seed: Any, plan: Plan, pieces: AsyncIterator[Piece]
    ) -> AsyncGenerator[bytes, None]:
        total = len(plan.content)
        index = 0
        async for piece in pieces:
            index += 1
            event: dict[str, Any] = {
                "index": index,
                "token": self.token(piece.text),
                "generated_text": None,
                "details": None,
            }
            if index == total:
                event["generated_text"] = plan.text
                event["details"] = {
                    "finish_reason": self.finish_reason(plan),
                    "generated_tokens": plan.completion_tokens,
                    "seed": seed,
                    "input_length": prompt_tokens,
                }
            yield self.sse(event)

    # --- model info, health and load -------------------------------------------------------

    async def info(self, request: Request) -> Response:
        config = self.sim.config
        limit = config.max_concurrency + config.max_queue if config.max_queue is not None else 128
        return json_response(
            {
                "model_id": self.models()[0],
                "model_sha": None,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": limit,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": config.context_length - 1,
                "max_total_tokens": config.context_length,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": VERSION,
                "sha": None,
                "docker_label": None,
            }
        )

    async def health(self, request: Request) -> Response:
        return Response(status_code=200) if self.sim.ready else self.loading()

    async def metrics(self, request: Request) -> Response:
        sim = self.sim
        batch_tokens = sum(slot.tokens + slot.generated for slot in sim.busy_slots() if slot)
        values = [
            ("tgi_queue_size", "gauge", sim.waiting),
            ("tgi_batch_current_size", "gauge", sim.running),
            ("tgi_batch_current_max_tokens", "gauge", batch_tokens),
            ("tgi_request_count", "counter", sim.requests_total),
            ("tgi_request_success", "counter", sim.completed_total),
        ]
        return prometheus(
            [(name, kind, name, [({}, float(value))]) for name, kind, value in values]
        )
