"""vLLM's OpenAI server: /v1/*, /health, /metrics (`vllm:` gauges), /load, /version.

Shapes follow vLLM's protocol models: errors `{"error": {message, type, param,
code: <HTTP status>}}`, model cards with `max_model_len`, null-valued extras in
non-streamed bodies, `stop_reason` beside `finish_reason`, and thinking in
`reasoning`.  The API key guards only /v1 (vLLM answers `{"error": "Unauthorized"}`).
Stock vLLM queues without bound; with `max_queue` set the simulator answers 503.
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .dialect import RequestError
from .engine import Plan
from .openai_compat import OpenAICompatible, Turn
from .wire import Metric, json_response, prometheus

VERSION = "0.11.0"


class VllmServer(OpenAICompatible):
    owned_by = "vllm"
    public_paths = frozenset({"/health", "/metrics", "/load", "/version", "/ping"})

    def routes(self) -> list[BaseRoute]:
        return [
            *super().routes(),
            Route("/health", self.health, methods=["GET"]),
            Route("/ping", self.health, methods=["GET", "POST"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/load", self.load, methods=["GET"]),
            Route("/version", self.version, methods=["GET"]),
        ]

    # --- errors ------------------------------------------------------------------

    def error(
        self, status: int, message: str, kind: str = "", param: str | None = None
    ) -> Response:
        name = HTTPStatus(status).phrase.replace(" ", "")
        error_type = name if name.endswith("Error") else f"{name}Error"
        body = {"message": message, "type": error_type, "param": param, "code": status}
        return json_response({"error": body}, status)

    def unauthorized(self) -> Response:
        return json_response({"error": "Unauthorized"}, 401)

    def overloaded(self) -> Response:
        return self.error(503, "The waiting queue is full; try again later.")

    def server_error(self) -> Response:
        return self.error(
            500, "EngineCore encountered an issue. See stack trace for the root cause."
        )

    def context_error(self, prompt_tokens: int, requested: int | None) -> RequestError:
        context = self.sim.config.context_length
        output = requested or 0
        # vLLM tokenizes at most the room left plus one, so it reports a lower bound.
        seen = prompt_tokens if output > context else min(prompt_tokens, context - output + 1)
        message = (
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{output} output tokens and your prompt contains at least {seen} input tokens, "
            f"for a total of at least {seen + output} tokens. Please reduce the length of the "
            f"input prompt or the number of requested output tokens. "
            f"(parameter=input_tokens, value={seen})"
        )
        return RequestError(self.error(400, message, param="input_tokens"))

    def token_limit(self, prompt_tokens: int, requested: int | None) -> int | None:
        """vLLM fills the rest of the context when no limit is given."""
        room = self.sim.config.context_length - prompt_tokens
        if room < 1 or (requested is not None and requested > room):
            raise self.context_error(prompt_tokens, requested)
        return requested if requested is not None else room

    # --- extra fields --------------------------------------------------------------

    def model_card(self, name: str) -> dict[str, Any]:
        created = int(time.time())
        permission = {
            "id": f"modelperm-{name.replace('/', '-')}",
            "object": "model_permission",
            "created": created,
            "allow_create_engine": False,
            "allow_sampling": True,
            "allow_logprobs": True,
            "allow_search_indices": False,
            "allow_view": True,
            "allow_fine_tuning": False,
            "organization": "*",
            "group": None,
            "is_blocking": False,
        }
        return {
            **super().model_card(name),
            "created": created,
            "root": name,
            "parent": None,
            "max_model_len": self.sim.config.context_length,
            "permission": [permission],
        }

    def decorate(self, body: dict[str, Any], turn: Turn, plan: Plan | None) -> dict[str, Any]:
        if plan is not None and body["choices"]:
            body["usage"]["prompt_tokens_details"] = None
            extras = {"service_tier": None, "system_fingerprint": None, "prompt_logprobs": None}
            if body["object"] == "chat.completion":
                extras["kv_transfer_params"] = None
            body.update(extras)
        return body

    def decorate_message(self, message: dict[str, Any], plan: Plan) -> dict[str, Any]:
        for key in ("refusal", "annotations", "audio", "function_call", "reasoning"):
            message.setdefault(key, None)
        message.setdefault("tool_calls", [])
        return message

    def decorate_choice(self, choice: dict[str, Any], plan: Plan | None) -> dict[str, Any]:
        choice["stop_reason"] = plan.stopped_by if plan is not None else None
        return choice

    def decorate_embedding(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.new_id("embd"), "created": int(time.time()), **body}

    # --- health and load -------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        # The real server listens only once loaded; during the simulated load it is unhealthy.
        return Response(status_code=200 if self.sim.ready else 503)

    async def load(self, request: Request) -> Response:
        return json_response({"server_load": self.sim.running + self.sim.waiting})

    async def version(self, request: Request) -> Response:
        return json_response({"version": VERSION})

    async def metrics(self, request: Request) -> Response:
        sim = self.sim
        labels = [{"engine": "0", "model_name": name} for name in self.models()]

        def metric(name: str, kind: str, help_text: str, value: float) -> Metric:
            return (name, kind, help_text, [(label, float(value)) for label in labels])

        return prometheus(
            [
                metric("vllm:num_requests_running", "gauge", "Requests in batches.", sim.running),
                metric("vllm:num_requests_waiting", "gauge", "Requests waiting.", sim.waiting),
                metric(
                    "vllm:kv_cache_usage_perc", "gauge", "KV-cache usage.", sim.kv_cache_usage()
                ),
                metric(
                    "vllm:prompt_tokens_total",
                    "counter",
                    "Prefill tokens.",
                    sim.prompt_tokens_total,
                ),
                metric(
                    "vllm:generation_tokens_total",
                    "counter",
                    "Generation tokens.",
                    sim.generation_tokens_total,
                ),
            ]
        )
