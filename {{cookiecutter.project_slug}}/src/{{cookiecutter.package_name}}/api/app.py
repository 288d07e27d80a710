"""The ASGI app: OpenAI-compatible endpoints, the provider listing, health, readiness, metrics.

Handlers take the raw request and parse the body themselves (one pydantic
call on the bytes) so the hot path skips FastAPI's dependency machinery;
FastAPI still routes and documents every endpoint at /docs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import to_json
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ..config import ConfigError, Settings
from ..llm.errors import (
    InvalidRequestError,
    LlmError,
    ModelNotFoundError,
    UpstreamTimeoutError,
)
from ..llm.models import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    SamplingParams,
    TextCompletionRequest,
    TextCompletionResponse,
)
from .auth import KeyRing
from .body import read_body
from .errors import Scrubber, error_response, invalid_body, unexpected
from .listing import build_listing, unready
from .metrics import HttpMetrics, MetricsMiddleware
from .sse import Chunk, SseResponse, close_iterator, first_chunk

if TYPE_CHECKING:
    from ..context import Context

OpenContext = Callable[[Settings], AbstractAsyncContextManager["Context"]]
Req = TypeVar("Req", bound=BaseModel)


def check_auth(settings: Settings) -> None:
    """Refuse to serve an API that asks for keys but has none."""
    if settings.api.auth_enabled and not settings.api.api_keys:
        raise ConfigError(
            "api.auth_enabled is true but no API key is configured: set api.api_keys in the "
            "config file or OPENROUTER_API_KEY (comma-separated keys), or set "
            "api.auth_enabled = false for a private network"
        )


class Api:
    """The request handlers and the state they share: one per app."""

    def __init__(self, settings: Settings) -> None:
        check_auth(settings)
        self.settings = settings
        self.keys = KeyRing(settings.api.api_keys)
        self.metrics_keys = KeyRing(_maybe(settings.api.metrics_key))
        self.caps = {model.id: model.max_output_length for model in settings.models}
        self.scrub = _scrubber(settings)
        self.started = int(time.time())
        self._context: Context | None = None
        self.metrics: HttpMetrics | None = None

    def attach(self, context: Context) -> None:
        self._context = context
        self.metrics = HttpMetrics(context.metrics_registry)

    @property
    def context(self) -> Context:
        if self._context is None:
            raise RuntimeError("the app is not started (its lifespan has not run)")
        return self._context

    def reload(self, settings: Settings) -> None:
        """Apply re-read settings: keys, and the fleet once the app has started.

        Listen address and limits need a restart.
        """
        check_auth(settings)
        if self._context is not None:
            self._context.reload(settings)
        self.keys.replace(settings.api.api_keys)
        self.metrics_keys.replace(_maybe(settings.api.metrics_key))
        self.scrub = _scrubber(settings)

    # --- request handling ------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        if self.settings.api.auth_enabled:
            self.keys.check(request.headers.get("authorization"))

    async def _parse(self, request: Request, model: type[Req]) -> Req:
        self._authorize(request)
        body = await read_body(request, self.settings.api.max_body_bytes)
        try:
            return model.model_validate_json(body)
        except ValidationError as error:
            raise invalid_body(error) from None

    def _cap(self, request: SamplingParams) -> None:
        """Enforce the model's max_tokens cap, and apply it when the request sets none."""
        cap = self.caps.get(request.model)
        if cap is None:
            return
        asked = False
        for field in ("max_completion_tokens", "max_tokens"):
            value = getattr(request, field, None)
            if value is not None:
                asked = True
                if value > cap:
                    raise InvalidRequestError(
                        f"{field} is {value}, above this model's limit of {cap}", param=field
                    )
        if not asked:
            request.max_tokens = cap

    async def chat(self, request: Request) -> Response:
        return await self._guard(self._completion(request, ChatCompletionRequest))

    async def completions(self, request: Request) -> Response:
        return await self._guard(self._completion(request, TextCompletionRequest))

    async def embeddings(self, request: Request) -> Response:
        async def run() -> Response:
            parsed = await self._parse(request, EmbeddingRequest)
            async with asyncio.timeout(self.settings.api.request_timeout_s):
                result = await self.context.balancer.embeddings(parsed)
            return _json(result.wire())

        return await self._guard(run())

    async def _completion(
        self, request: Request, model: type[ChatCompletionRequest] | type[TextCompletionRequest]
    ) -> Response:
        parsed = await self._parse(request, model)
        self._cap(parsed)
        balancer = self.context.balancer
        api = self.settings.api
        if parsed.stream:
            iterator: AsyncIterator[Chunk]
            if isinstance(parsed, ChatCompletionRequest):
                iterator = balancer.stream_chat_completion(parsed)
            else:
                iterator = balancer.stream_text_completion(parsed)
            wait = min(api.keepalive_interval_s, api.request_timeout_s)
            first, done = await first_chunk(iterator, wait)
            if done and first.exception() is not None:
                await close_iterator(iterator)
                first.result()  # raises the failure with its own status
            return SseResponse(
                iterator,
                first,
                include_usage=api.always_include_usage or parsed.wants_usage_chunk(),
                keepalive_s=api.keepalive_interval_s,
                deadline_s=api.request_timeout_s - wait,
                scrub=self.scrub,
            )
        async with asyncio.timeout(api.request_timeout_s):
            if isinstance(parsed, ChatCompletionRequest):
                result: BaseModel = await balancer.chat_completion(parsed)
            else:
                result = await balancer.text_completion(parsed)
        # The same body as wire(), serialised by pydantic-core in one step.
        return Response(result.model_dump_json(exclude_none=True), media_type="application/json")

    async def _guard(self, work: Awaitable[Response]) -> Response:
        """Run a handler, turning every failure into an OpenAI error body."""
        try:
            return await work
        except LlmError as error:
            return error_response(error, self.scrub)
        except TimeoutError:
            return error_response(UpstreamTimeoutError("the request deadline passed"), self.scrub)
        except Exception as error:  # never a stack trace to the client
            return error_response(unexpected(error, self.scrub), self.scrub)

    # --- listing, health, metrics -------------------------------------------------

    def listing(self) -> dict[str, Any]:
        fleet = self.context.balancer.listed_models()
        return build_listing(self.settings, fleet, created=self.started)

    async def models(self, request: Request) -> Response:
        async def run() -> Response:
            self._authorize(request)
            return _json(self.listing())

        return await self._guard(run())

    async def model(self, request: Request) -> Response:
        async def run() -> Response:
            self._authorize(request)
            model_id = request.path_params["model_id"]
            for document in self.listing()["data"]:
                if document["id"] == model_id:
                    return _json(document)
            raise ModelNotFoundError(f"model {model_id!r} is not served here")

        return await self._guard(run())

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        missing = unready(self.context.balancer.listed_models())
        if missing:
            return _json({"status": "not ready", "models_without_healthy_node": missing}, 503)
        return _json({"status": "ready"})

    async def prometheus(self, request: Request) -> Response:
        if len(self.metrics_keys):
            try:
                self.metrics_keys.check(request.headers.get("authorization"))
            except LlmError as error:
                return error_response(error, self.scrub)
        return Response(
            generate_latest(self.context.metrics_registry), media_type=CONTENT_TYPE_LATEST
        )


class RawRoute(APIRoute):
    """A documented route whose endpoint takes the bare Request.

    FastAPI's own handler resolves dependencies and validates parameters on
    every call, and its request wrapper opens exit stacks for dependencies and
    maps exceptions per route; these endpoints have none of those (each turns
    its own failures into error responses), so the route's ASGI app calls the
    endpoint directly.  The OpenAPI schema still comes from the declarations,
    and the app-level exception middleware still answers anything unforeseen.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await endpoint(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint


def create_app(settings: Settings, *, open_context: OpenContext | None = None) -> FastAPI:
    """The app; its lifespan opens the shared context (or `open_context`, for tests)."""
    api = Api(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opener = open_context
        if opener is None:
            from ..context import Context

            opener = Context.open
        async with opener(settings) as context:
            api.attach(context)
            yield

    app = FastAPI(
        title="OpenRouter provider",
        summary="OpenAI-compatible completions and OpenRouter's provider model listing.",
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.api = api
    app.router.route_class = RawRoute
    documented: list[tuple[str, Callable[[Request], Any], type[BaseModel], type[BaseModel]]] = [
        ("/v1/chat/completions", api.chat, ChatCompletionRequest, ChatCompletionResponse),
        ("/v1/completions", api.completions, TextCompletionRequest, TextCompletionResponse),
        ("/v1/embeddings", api.embeddings, EmbeddingRequest, EmbeddingResponse),
    ]
    for path, endpoint, body, answer in documented:
        app.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            responses={200: {"model": answer}},
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": _ref(body)}}},
                }
            },
        )
    app.add_api_route("/v1/models", api.models, methods=["GET"], summary="The provider listing")
    app.add_api_route("/v1/models/{model_id:path}", api.model, methods=["GET"], summary="One model")
    app.add_api_route("/health", api.health, methods=["GET"], summary="The process is up")
    app.add_api_route(
        "/ready", api.ready, methods=["GET"], summary="Every model has a healthy node"
    )
    app.add_api_route("/metrics", api.prometheus, methods=["GET"], summary="Prometheus metrics")
    app.add_middleware(MetricsMiddleware, metrics=lambda: api.metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for _, _, body, _ in documented:
                definition = body.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, sub in definition.pop("$defs", {}).items():
                    components.setdefault(name, sub)
                components[body.__name__] = definition
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _json(data: Any, status: int = 200) -> Response:
    return Response(to_json(data), status_code=status, media_type="application/json")


def _ref(model: type[BaseModel]) -> str:
    return f"#/components/schemas/{model.__name__}"


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer in the OpenAI error shape too."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    kind = "not_found" if status == 404 else "invalid_request_error"
    message = f"no route {request.method} {request.url.path}"
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}, status
    )


def _maybe(key: SecretStr | None) -> list[SecretStr]:
    return [key] if key is not None else []


def _scrubber(settings: Settings) -> Scrubber:
    """Every key this process knows and every node's host, kept out of answers and logs."""
    keys = [*settings.api.api_keys, *_maybe(settings.api.metrics_key)]
    keys += [node.api_key for node in settings.nodes if node.api_key is not None]
    return Scrubber(
        secrets=[key.get_secret_value() for key in keys],
        hosts=[_host(node.url) for node in settings.nodes],
    )


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
