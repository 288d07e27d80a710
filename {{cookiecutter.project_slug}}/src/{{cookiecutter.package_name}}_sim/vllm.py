"""vLLM's OpenAI server: /v1/*, /health, /metrics (`vllm:` gauges), /load, /version.

Shapes follow vLLM's protocol models: errors `{"error": {message, type, param,
code: <HTTP status>}}`, model cards with `max_model_len`, null-valued extras in
non-streamed bodies, `stop_reason` beside `finish_reason`, and thinking in
`reasoning`.  The API key guards only /v1 (vLLM answers `{"error": "Unauthorized"}`).
Stock vLLM queues without bound; with `max_queue` set the simulator answers 503
"The engine is currently busy ...", without Retry-After, as vLLM does with
`--max-num-queued-reqs` (which caps running and waiting requests together, so it
is max_concurrency + max_queue).

Checked against a running vLLM 0.32 (CPU build): a generate runner has no
/v1/embeddings and a pooling runner (`embeddings=True`) no generation routes, both
answered by FastAPI's `{"detail": "Not Found"}`; only a prompt that alone exceeds
`max_model_len` is refused (a very long one by its characters, before tokenizing),
and `max_tokens` above it; otherwise the answer is cut at the context.  A chat
stream's finish_reason comes on its last content chunk; a client that leaves stops
its request, streamed or not.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .dialect import RequestError
from .engine import Plan, count_tokens
from .openai_compat import OpenAICompatible, Turn
from .wire import Metric, json_response, prometheus

VERSION = "0.32.0"
FINGERPRINT = f"vllm-{VERSION}-5e1f0a2b"


# The simulator's tokens are words; vLLM bounds a prompt's characters by the tokenizer's
# longest token before tokenizing (renderers/params.py, _text_len_check).
MAX_CHARS_PER_TOKEN = 16


class VllmServer(OpenAICompatible):
    owned_by = "vllm"
    finish_with_last_token = True
    public_paths = frozenset({"/health", "/metrics", "/load", "/version", "/ping"})

    def routes(self) -> list[BaseRoute]:
        # A server runs one runner: pooling (embeddings) or generate (the rest).
        if self.sim.config.serves_embeddings():
            absent = {"/v1/chat/completions", "/v1/completions"}
        else:
            absent = {"/v1/embeddings"}
        return [
            *(route for route in super().routes() if getattr(route, "path", "") not in absent),
            Route("/health", self.health, methods=["GET"]),
            Route("/ping", self.health, methods=["GET", "POST"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/load", self.load, methods=["GET"]),
            Route("/version", self.version, methods=["GET"]),
            Route("/tokenize", self.endpoint(self.tokenize), methods=["POST"]),
        ]

    # --- errors ------------------------------------------------------------------

    def error(
        self, status: int, message: str, kind: str = "", param: str | None = None
    ) -> Response:
        name = HTTPStatus(status).phrase.replace(" ", "")
        error_type = name if name.endswith("Error") else f"{name}Error"
        body = {"message": message, "type": error_type, "param": param, "code": status}
        return json_response({"error": body}, status)

    def exception_handlers(self) -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
        async def framework(request: Request, error: Exception) -> Response:
            assert isinstance(error, HTTPException)
            headers = dict(error.headers or {})
            return json_response({"detail": error.detail}, error.status_code, headers)

        return {404: framework, 405: framework}

    def bad_request(self, message: str, param: str | None = None) -> RequestError:
        """A request FastAPI's validation refuses: type "Bad Request", param `body.<field>`."""
        where = f"body.{param}" if param else "body"
        error = {"type": "value_error", "loc": where, "msg": message}
        detail = f"1 validation error:\n  {error}"
        body = {"message": detail, "type": "Bad Request", "param": where, "code": 400}
        return RequestError(json_response({"error": body}, 400))

    def resolve_model(self, name: Any) -> str:
        if name in self.models():
            return str(name)
        message = f"The model `{name}` does not exist. Valid aliases: {', '.join(self.models())}."
        raise RequestError(self.error(404, message, param="model"))

    def unauthorized(self) -> Response:
        return json_response({"error": "Unauthorized"}, 401)

    def overloaded(self) -> Response:
        message = (
            "The engine is currently busy and cannot accept new requests. "
            "Please try again later or on a different instance."
        )
        body = {"message": message, "type": "Service Unavailable", "param": None, "code": 503}
        return json_response({"error": body}, 503)

    def server_error(self) -> Response:
        return self.error(
            500, "EngineCore encountered an issue. See stack trace for the root cause."
        )

    def context_error(self, prompt_tokens: int, requested: int | None) -> RequestError:
        # vLLM tokenizes at most one token past the context, so it reports a lower bound.
        context = self.sim.config.context_length
        seen = min(prompt_tokens, context + 1)
        qualifier = "at least " if seen == context + 1 else ""
        message = (
            f"This model's maximum context length is {context} tokens. However, your prompt "
            f"contains {qualifier}{seen} input tokens, which exceeds this limit even without "
            f"any output tokens. Please reduce the length of the input prompt. "
            f"(parameter=input_tokens, value={seen})"
        )
        return RequestError(self.error(400, message, param="input_tokens"))

    def check_prompt(self, prompt: str, body: dict[str, Any]) -> None:
        super().check_prompt(prompt, body)
        context = self.sim.config.context_length
        limit = context * MAX_CHARS_PER_TOKEN
        if len(prompt) > limit:
            message = (
                f"This model's maximum context length is {context} tokens. However, your "
                f"prompt contains {len(prompt)} characters (more than {limit} characters, "
                f"which is the upper bound for {context} input tokens). Please reduce the "
                f"length of the input prompt. (parameter=input_text, value={len(prompt)})"
            )
            raise RequestError(self.error(400, message, param="input_text"))

    def token_limit(self, prompt_tokens: int, requested: int | None) -> int | None:
        """vLLM 0.32 refuses a prompt over the context, or a max_tokens over it; a request
        whose max_tokens overruns the room left is served and cut there.  No limit: the
        rest of the context."""
        context = self.sim.config.context_length
        if prompt_tokens > context:
            raise self.context_error(prompt_tokens, requested)
        if requested is not None and requested > context:
            message = (
                f"max_tokens={requested} cannot be greater than max_model_len={context}. "
                f"Please request fewer output tokens. (parameter=max_tokens, value={requested})"
            )
            raise RequestError(self.error(400, message, param="max_tokens"))
        room = context - prompt_tokens
        return min(requested, room) if requested is not None else room

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
        """vLLM 0.32's extras: null-valued fields in whole answers, the prompt fields on a
        stream's role chunk, and the fingerprint on whole answers and a stream's end."""
        chat = body["object"].startswith("chat.completion")
        if plan is not None and body["choices"]:
            body["usage"] |= {"prompt_tokens_details": None, "completion_tokens_details": None}
            body |= {"service_tier": None, "system_fingerprint": FINGERPRINT}
            if chat:
                body |= {"prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None}
            body |= {"kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}
        elif plan is not None:  # the usage chunk
            body["system_fingerprint"] = FINGERPRINT
        elif chat and "role" in body["choices"][0]["delta"]:
            body |= {"prompt_token_ids": None, "prompt_text": None}
        else:
            choice = body["choices"][0]
            choice.setdefault("token_ids", None)
            if not chat:
                choice.setdefault("stop_reason", None)
                choice.setdefault("prompt_token_ids", None)
        return body

    def decorate_message(self, message: dict[str, Any], plan: Plan) -> dict[str, Any]:
        for key in ("refusal", "annotations", "audio", "function_call", "reasoning"):
            message.setdefault(key, None)
        return message

    def decorate_choice(self, choice: dict[str, Any], plan: Plan | None) -> dict[str, Any]:
        choice["stop_reason"] = plan.stopped_by if plan is not None else None
        choice["token_ids"] = None
        if "text" in choice:
            choice["prompt_token_ids"] = None
        return choice

    def decorate_embedding(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.new_id("embd"), "created": int(time.time()), **body}

    # --- health and load -------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        # The real server listens only once loaded; during the simulated load it is unhealthy.
        return Response(status_code=200 if self.sim.ready else 503)

    async def load(self, request: Request) -> Response:
        return json_response({"server_load": self.sim.running + self.sim.waiting})

    async def tokenize(self, request: Request) -> Response:
        """vLLM's /tokenize for a `prompt` (the simulator's tokenizer: one token a word)."""
        count = count_tokens(str((await request.json()).get("prompt", "")))
        limit = self.sim.config.context_length
        return json_response({"count": count, "max_model_len": limit, "tokens": [0] * count})

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
