"""The ASGI app: OpenAI-compatible endpoints, the provider listing, health, readiness, metrics.

Plain Starlette routes whose endpoints are ASGI apps taking the raw request: each handler parses its
body itself (one pydantic call on the bytes) and turns its own failures into OpenAI error bodies.
The OpenAPI document is generated from the models (openapi.py) and served behind the key like
everything but /health and /ready.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import to_json
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .. import __version__
from ..config import ConfigError, Settings
from ..llm.errors import (
    InvalidRequestError,
    LlmError,
    ModelNotFoundError,
    UpstreamTimeoutError,
)
from ..llm.limits import check_json_size, collector_paused
from ..llm.models import (
    MAX_MODEL_ID,
    ChatCompletionRequest,
    EmbeddingRequest,
    SamplingParams,
    TextCompletionRequest,
)
from .auth import KeyRing
from .body import disconnected, read_body
from .errors import Scrubber, error_response, invalid_body, unexpected
from .listing import build_listing, unready
from .media import check_media
from .metrics import HttpMetrics, HttpMiddleware
from .openapi import build_document
from .sse import FIRST_BYTE_S, Chunk, SseResponse, close_iterator, first_chunk

TITLE = "OpenRouter provider"
# The status a request gets when its client left before the answer (nginx's 499).
CLIENT_GONE = 499

if TYPE_CHECKING:
    from ..context import Context

OpenContext = Callable[[Settings], AbstractAsyncContextManager["Context"]]
Handler = Callable[[Request], Awaitable[Response]]
Req = TypeVar("Req", bound=BaseModel)
T = TypeVar("T")


class Api:
    """The request handlers and the state they share: one per app."""

    def __init__(self, settings: Settings) -> None:
        self.started = int(time.time())
        self._context: Context | None = None
        self.metrics: HttpMetrics | None = None
        self.keys, self.metrics_keys = KeyRing(), KeyRing()
        self.reload(settings)

    def attach(self, context: Context) -> None:
        self._context = context
        self.metrics = HttpMetrics(context.metrics_registry)

    @property
    def context(self) -> Context:
        if self._context is None:
            raise RuntimeError("the app is not started (its lifespan has not run)")
        return self._context

    def reload(self, settings: Settings) -> None:
        """Apply (re-read) settings: keys, and the fleet once the app has started.

        Listen address and limits need a restart.  An API asking for keys has some.
        """
        if settings.api.auth_enabled and not settings.api.api_keys:
            raise ConfigError(
                "api.auth_enabled is true but no API key is configured: set api.api_keys in the "
                "config file or OPENROUTER_API_KEY (comma-separated keys), or set "
                "api.auth_enabled = false for a private network"
            )
        if self._context is not None:
            self._context.reload(settings)  # all or nothing: a ConfigError changes nothing
        # The same object the balancer and the listing now read: caps, auth, limits and
        # the model list never disagree between them.
        self.settings = settings
        self.caps = {model.id: model.max_output_length for model in settings.models}
        self.keys.replace(settings.api.api_keys)
        self.metrics_keys.replace(_maybe(settings.api.metrics_key))
        self.scrub = _scrubber(settings)
        self._openapi: bytes | None = None  # built on first use, for the models listed now

    def _authorize(self, request: Request) -> None:
        if self.settings.api.auth_enabled:
            self.keys.check(request.headers.get("authorization"))

    async def _parse(self, request: Request, model: type[Req]) -> Req:
        self._authorize(request)
        api = self.settings.api
        body = await read_body(request, api.max_body_bytes, api.body_timeout_s)
        check_json_size(body, api.max_json_keys, api.max_json_items)
        try:
            # Strict: "5" and true are not a max_tokens of 5 and 1.
            with collector_paused():
                parsed = model.model_validate_json(body, strict=True)
        except ValidationError as error:
            raise invalid_body(error) from None
        if isinstance(parsed, ChatCompletionRequest) and not self.settings.api.private_media_urls:
            check_media(parsed)
        return parsed

    def _cap(self, request: SamplingParams) -> None:
        """Enforce the model's max_tokens cap, and apply it when the request sets none."""
        cap = self.caps.get(request.model)
        if cap is None:
            return
        fields = ("max_completion_tokens", "max_tokens")
        asked = {f: value for f in fields if (value := getattr(request, f, None)) is not None}
        for field, value in asked.items():
            if value > cap:
                message = f"{field} is {value}, above this model's limit of {cap}"
                raise InvalidRequestError(message, param=field)
        if not asked:
            request.max_tokens = cap

    async def embeddings(self, request: Request) -> Response:
        parsed = await self._parse(request, EmbeddingRequest)
        async with asyncio.timeout(self.settings.api.request_timeout_s):
            result = await _unless_gone(request, self.context.balancer.embeddings(parsed))
        return _json(result.wire())

    async def completion(
        self, model: type[ChatCompletionRequest] | type[TextCompletionRequest], request: Request
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
            # Headers wait out the node selection (so a stream that finds no room gets a
            # real 429 with Retry-After), then leave with a comment: OpenRouter counts the
            # time to the first byte and asks for comments while the model works.
            lb = self.settings.load_balancer
            placement = lb.selection_timeout_s if lb.max_queue else 0.0
            wait = min(placement + FIRST_BYTE_S, api.request_timeout_s)
            started = time.monotonic()
            try:
                first, done = await _unless_gone(request, first_chunk(iterator, wait))
            except BaseException:
                await close_iterator(iterator)
                raise
            if done and first.exception() is not None:
                await close_iterator(iterator)
                first.result()  # raises the failure with its own status
            return SseResponse(
                iterator,
                first,
                include_usage=api.always_include_usage or parsed.wants_usage_chunk(),
                keepalive_s=api.keepalive_interval_s,
                deadline_s=api.request_timeout_s - (time.monotonic() - started),
                scrub=self.scrub,
            )
        async with asyncio.timeout(api.request_timeout_s):
            work: Coroutine[Any, Any, BaseModel]
            if isinstance(parsed, ChatCompletionRequest):
                work = balancer.chat_completion(parsed)
            else:
                work = balancer.text_completion(parsed)
            result = await _unless_gone(request, work)
        # The same body as wire(), serialised by pydantic-core in one step.
        return Response(result.model_dump_json(exclude_none=True), media_type="application/json")

    async def answer(self, handler: Handler, request: Request) -> Response:
        """Run a handler, turning every failure into an OpenAI error body."""
        try:
            if request.scope["http_version"] == "1.1" and len(request.headers.getlist("host")) != 1:
                # RFC 9112 3.2: an HTTP/1.1 request with two Host headers is refused with 400.
                raise InvalidRequestError("an HTTP/1.1 request needs exactly one Host header")
            return await handler(request)
        except LlmError as error:
            return error_response(error, self.scrub)
        except ClientDisconnect:
            # Counted apart from failures (anyone can leave mid-upload), and not logged.
            return Response(status_code=CLIENT_GONE)
        except TimeoutError:
            return error_response(UpstreamTimeoutError("the request deadline passed"), self.scrub)
        except Exception as error:  # never a stack trace to the client
            return error_response(unexpected(error, self.scrub), self.scrub)

    def listing(self) -> dict[str, Any]:
        fleet = self.context.balancer.listed_models()
        return build_listing(self.settings, fleet, created=self.started)

    async def models(self, request: Request) -> Response:
        self._authorize(request)
        return _json(self.listing())

    async def model(self, request: Request) -> Response:
        self._authorize(request)
        model_id = request.path_params["model_id"][: MAX_MODEL_ID + 1]
        for document in self.listing()["data"]:
            if document["id"] == model_id:
                return _json(document)
        raise ModelNotFoundError(f"model {model_id!r} is not served here")

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        if not self.context.balancer.health_checks_running:
            # Without them a node that dies stays "healthy": not ready, whatever the list says.
            return _json({"status": "not ready", "health_checks": "stopped"}, 503)
        missing = unready(self.context.balancer.listed_models())
        # A replica degraded to local state still serves: ready, and says how it shares.
        fleet = self.context.fleet
        cluster = {"cluster": fleet.describe()} if fleet is not None else {}
        if missing:
            body = {"status": "not ready", "models_without_healthy_node": missing, **cluster}
            return _json(body, 503)
        return _json({"status": "ready", **cluster})

    async def prometheus(self, request: Request) -> Response:
        """With a metrics_key only that key; else the API keys, as every endpoint."""
        if len(self.metrics_keys):
            self.metrics_keys.check(request.headers.get("authorization"))
        else:
            self._authorize(request)
        registry = self.context.metrics_registry
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # serve --workers N: all N in one view
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        self._authorize(request)
        if self._openapi is None:
            models = [model.id for model in self.settings.models]
            self._openapi = to_json(build_document(TITLE, __version__, models))
        return Response(self._openapi, media_type="application/json")


class Endpoint:
    """A route's ASGI app: the bare Request to a handler, its failures to `Api.answer`.

    Starlette serves an endpoint that is not a function as a plain ASGI app: no
    per-route wrapper, and the app-level exception middleware still answers anything
    unforeseen.
    """

    def __init__(self, api: Api, handler: Handler) -> None:
        self.api = api
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.api.answer(self.handler, Request(scope, receive, send))
        await response(scope, receive, send)


def create_app(settings: Settings, *, open_context: OpenContext | None = None) -> Starlette:
    """The app; its lifespan opens the shared context (or `open_context`, for tests)."""
    api = Api(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        opener = open_context
        if opener is None:
            from ..context import Context

            opener = Context.open
        async with opener(settings) as context:
            api.attach(context)
            yield

    routes = [
        Route(path, Endpoint(api, handler), methods=[method])
        for path, handler, method in (
            ("/v1/chat/completions", partial(api.completion, ChatCompletionRequest), "POST"),
            ("/v1/completions", partial(api.completion, TextCompletionRequest), "POST"),
            ("/v1/embeddings", api.embeddings, "POST"),
            ("/v1/models", api.models, "GET"),
            ("/v1/models/{model_id:path}", api.model, "GET"),
            ("/health", api.health, "GET"),
            ("/ready", api.ready, "GET"),
            ("/metrics", api.prometheus, "GET"),
            ("/openapi.json", api.openapi, "GET"),
        )
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(HttpMiddleware, metrics=lambda: api.metrics)],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    # Starlette answers `/metrics/` with a 307 to `/metrics`, before auth, with a Location
    # built from the client's Host header: unknown paths get 404 (or 401) instead.
    app.router.redirect_slashes = False
    app.state.api = api
    return app


async def _unless_gone(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await `work`, cancelling it the moment the client disconnects.

    The node's slot is freed at once (closing the upstream request stops the
    generation) instead of when an answer nobody reads is complete.  The work
    runs in the request's own task; a watcher waits for `http.disconnect`.
    """
    task = asyncio.current_task()
    assert task is not None
    waiting = True

    def leave(signal: asyncio.Future[None]) -> None:
        if waiting and not signal.cancelled():
            task.cancel()

    gone = asyncio.ensure_future(disconnected(request.receive))
    gone.add_done_callback(leave)
    try:
        return await work
    except asyncio.CancelledError:
        # Ours alone (not a deadline's or a shutdown's too): the client left.
        if gone.done() and not gone.cancelled() and task.uncancel() == 0:
            raise ClientDisconnect from None
        raise
    finally:
        waiting = False
        gone.cancel()


def _json(data: Any, status: int = 200) -> Response:
    return Response(to_json(data), status_code=status, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer in the OpenAI error shape too."""
    assert isinstance(exc, HTTPException)  # the only exception it is registered for
    kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
    message = f"no route {request.method} {request.url.path[:200]}"
    error = {"message": message, "type": kind, "param": None, "code": str(exc.status_code)}
    return JSONResponse({"error": error}, exc.status_code, headers=exc.headers)


def _maybe(key: SecretStr | None) -> list[SecretStr]:
    return [key] if key is not None else []


def _scrubber(settings: Settings) -> Scrubber:
    """Every key this process knows and every node's host, kept out of answers and logs."""
    keys = [*settings.api.api_keys, *_maybe(settings.api.metrics_key)]
    keys += [node.api_key for node in settings.nodes if node.api_key is not None]
    return Scrubber(
        secrets=[key.get_secret_value() for key in keys],
        hosts=[urlsplit(node.url).netloc.rsplit("@", 1)[-1] for node in settings.nodes],
    )
