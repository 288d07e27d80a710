"""llama.cpp's `llama-server`: /v1/*, /health, /props, /slots and /metrics (with --metrics).

Shapes follow tools/server in llama.cpp (checked against a running llama-server
built from llama-cpp-python 0.3.36's sources, b1-0c1e570): errors `{"error": {code,
message, type}}` (503 `unavailable_error` "Loading model" while loading, 400
`exceed_context_size_error` with `n_prompt_tokens` and `n_ctx`), answers with
`timings` and `system_fingerprint`, a stream's role chunk with `content: null`,
thinking in `reasoning_content`, /v1/embeddings refused with 501 unless started
with `--embeddings` (`embeddings=True`, which keeps chat), and only /health open with
an API key.  The server serves one model whatever the request names, answers an
unknown route with a JSON 404, ignores `tools` unless its chat template can call
them (`tool_template`, told in /props), and finishes a whole answer whose client left
(only a stream stops).  Stock llama-server defers without bound; with `max_queue`
set the simulator answers 503 `unavailable_error`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .dialect import RequestError
from .engine import Plan, Slot, count_tokens
from .openai_compat import OpenAICompatible, Turn
from .wire import json_response, prometheus

BUILD = "b6500-sim"
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


class LlamaCppServer(OpenAICompatible):
    reasoning_field = "reasoning_content"
    role_content = None
    owned_by = "llamacpp"
    completion_default_max_tokens = None  # n_predict -1: until the model stops
    # Only health is open with --api-key (tools/server/server-http.cpp).
    public_paths = frozenset({"/health", "/v1/health"})
    stops_whole_answers = False

    def exception_handlers(self) -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
        async def not_found(request: Request, error: Exception) -> Response:
            return self.error(404, "File Not Found")

        return {404: not_found}

    def calls_tools(self) -> bool:
        return self.sim.config.tool_template

    def routes(self) -> list[BaseRoute]:
        return [
            *super().routes(),
            Route("/chat/completions", self.endpoint(self.chat), methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/v1/health", self.health, methods=["GET"]),
            Route("/props", self.endpoint(self.props), methods=["GET"]),
            Route("/slots", self.endpoint(self.slots), methods=["GET"]),
            Route("/metrics", self.endpoint(self.metrics), methods=["GET"]),
            Route("/tokenize", self.endpoint(self.tokenize), methods=["POST"]),
        ]

    # --- errors ------------------------------------------------------------------

    def error(
        self, status: int, message: str, kind: str = "", param: str | None = None
    ) -> Response:
        error_type = kind if kind in ERROR_TYPES.values() else ERROR_TYPES.get(status, "")
        return json_response(
            {"error": {"code": status, "message": message, "type": error_type}}, status
        )

    def bad_request(self, message: str, param: str | None = None) -> RequestError:
        """A field of the wrong type, as its request schema words it (server-schema.cpp)."""
        if param is not None:
            message = f"Field '{param}': [json.exception.type_error.302] {message}"
        return super().bad_request(message, param)

    def unauthorized(self) -> Response:
        return self.error(401, "Invalid API Key")

    def loading(self) -> Response:
        return self.error(503, "Loading model")

    def overloaded(self) -> Response:
        return self.error(503, "no slot available")

    def server_error(self) -> Response:
        return self.error(500, "simulated decode failure")

    def context_error(self, prompt_tokens: int, requested: int | None) -> RequestError:
        context = self.sim.config.context_length
        body = {
            "code": 400,
            "message": (
                f"request ({prompt_tokens} tokens) exceeds the available context size "
                f"({context} tokens), try increasing it"
            ),
            "type": "exceed_context_size_error",
            "n_prompt_tokens": prompt_tokens,
            "n_ctx": context,
        }
        return RequestError(json_response({"error": body}, 400))

    def resolve_model(self, name: Any) -> str:
        """One model per server: the request's name is echoed, never checked."""
        return name if isinstance(name, str) and name else self.models()[0]

    def token_limit(self, prompt_tokens: int, requested: int | None) -> int | None:
        """Generation stops when the slot's context is full, finishing with `length`."""
        room = self.sim.config.context_length - prompt_tokens
        if room < 1:
            raise self.context_error(prompt_tokens, requested)
        return min(requested, room) if requested is not None else room

    async def embeddings(self, request: Request) -> Response:
        if not self.sim.config.serves_embeddings():
            message = "This server does not support embeddings. Start it with `--embeddings`"
            return self.error(501, message)
        return await super().embeddings(request)

    # --- extra fields --------------------------------------------------------------

    def model_card(self, name: str) -> dict[str, Any]:
        meta = {
            "vocab_type": 2,
            "n_vocab": 128256,
            "n_ctx": self.sim.config.context_length,
            "n_ctx_train": self.sim.config.context_length,
            "n_embd": 3072,
            "n_params": 3212749888,
            "size": 2019373056,
        }
        return {**super().model_card(name), "aliases": [name], "tags": [], "meta": meta}

    async def list_models(self, request: Request) -> Response:
        name = self.models()[0]
        ollama_style = {
            "name": name,
            "model": name,
            "modified_at": "",
            "size": "",
            "digest": "",
            "type": "model",
            "description": "",
            "tags": [""],
            "capabilities": ["completion"],
            "parameters": "",
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "",
                "families": [""],
                "parameter_size": "",
                "quantization_level": "",
            },
        }
        body = {"models": [ollama_style], "object": "list", "data": [self.model_card(name)]}
        return json_response(body)

    def decorate(self, body: dict[str, Any], turn: Turn, plan: Plan | None) -> dict[str, Any]:
        body["system_fingerprint"] = BUILD
        if plan is not None:
            body["usage"]["prompt_tokens_details"] = {"cached_tokens": 0}
            body["timings"] = self.timings(turn, plan)
        return body

    def timings(self, turn: Turn, plan: Plan) -> dict[str, float]:
        config = self.sim.config
        rate = config.tokens_per_s
        predicted_ms = 1000 * plan.completion_tokens / rate if rate else 0.0
        prompt_ms = 1000 * config.ttft_s
        return {
            "cache_n": 0,
            "prompt_n": turn.prompt_tokens,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / max(turn.prompt_tokens, 1),
            "prompt_per_second": 1000 * turn.prompt_tokens / prompt_ms if prompt_ms else 0.0,
            "predicted_n": plan.completion_tokens,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / max(plan.completion_tokens, 1),
            "predicted_per_second": config.tokens_per_s,
        }

    # --- health and load -------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        if not self.sim.ready:
            return self.loading()
        return json_response({"status": "ok"})

    def slot_json(self, index: int, slot: Slot | None) -> dict[str, Any]:
        return {
            "id": index,
            "id_task": index if slot is not None else -1,
            "n_ctx": self.sim.config.context_length,
            "speculative": False,
            "is_processing": slot is not None,
            "params": {"n_predict": -1, "temperature": 0.8, "top_k": 40, "top_p": 0.95},
            "next_token": {
                "has_next_token": slot is not None,
                "has_new_line": False,
                "n_remain": -1,
                "n_decoded": slot.generated if slot is not None else 0,
                "stopping_word": "",
            },
        }

    async def tokenize(self, request: Request) -> Response:
        """llama-server's /tokenize of `content` (one token a word, as the simulator counts)."""
        count = count_tokens(str((await request.json()).get("content", "")))
        return json_response({"tokens": [0] * count})

    async def props(self, request: Request) -> Response:
        name = self.models()[0]
        return json_response(
            {
                "default_generation_settings": self.slot_json(0, None),
                "total_slots": self.sim.config.max_concurrency,
                "model_path": f"models/{name}.gguf",
                "modalities": {"vision": False, "audio": False},
                "chat_template_caps": {"supports_tool_calls": self.sim.config.tool_template},
                "chat_template": "{{ messages }}",
                "bos_token": "<|begin_of_text|>",
                "eos_token": "<|eot_id|>",
                "build_info": BUILD,
                "is_sleeping": False,
            }
        )

    async def slots(self, request: Request) -> Response:
        slots = self.sim.busy_slots()
        if request.query_params.get("fail_on_no_slot") and all(slots):
            return self.error(503, "no slot available")
        return json_response([self.slot_json(index, slot) for index, slot in enumerate(slots)])

    async def metrics(self, request: Request) -> Response:
        sim = self.sim
        if not sim.config.metrics_enabled:
            message = "This server does not support metrics endpoint. Start it with `--metrics`"
            return self.error(501, message)
        rate = sim.config.tokens_per_s
        values = [
            ("prompt_tokens_total", "counter", "Prompt tokens processed.", sim.prompt_tokens_total),
            ("tokens_predicted_total", "counter", "Tokens generated.", sim.generation_tokens_total),
            ("prompt_tokens_seconds", "gauge", "Average prompt tokens/s.", 0.0),
            ("predicted_tokens_seconds", "gauge", "Average generation tokens/s.", rate),
            ("requests_processing", "gauge", "Requests processing.", sim.running),
            ("requests_deferred", "gauge", "Requests deferred.", sim.waiting),
        ]
        return prometheus(
            [
                (f"llamacpp:{name}", kind, text, [({}, float(value))])
                for name, kind, text, value in values
            ]
        )
