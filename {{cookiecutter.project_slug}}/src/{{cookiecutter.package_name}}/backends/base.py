"""What every server client shares: the connection pool, the load gauges, request plumbing.

A server module subclasses `HttpClient` and writes only what its server does
differently: paths, request and answer shapes, health and load signals.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Any, TypeVar

import httpx
from httpx_aiohttp import AiohttpTransport
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json, to_json

from ..config import LoadBalancerSettings, NodeSettings
from ..llm.errors import InvalidRequestError, LlmError, UpstreamCredentialsError, UpstreamError
from ..llm.interfaces import StreamingLlmClient
from ..llm.models import ModelInfo, NodeMetrics
from .errors import error_for_status, error_for_transport
from .scrape import gauges

# Connections beyond max_concurrency, so health checks and metric scrapes never
# wait behind a full pool of long streams.
HEALTH_HEADROOM = 2
# Below the 5 s keep-alive of uvicorn (vLLM) and cpp-httplib (llama.cpp): a pooled
# connection is dropped before the server closes it under us.
KEEPALIVE_EXPIRY_S = 4.0
JSON_BODY = {"content-type": "application/json"}
USER_AGENT = f"python-httpx/{httpx.__version__}"

Model = TypeVar("Model", bound=BaseModel)
Item = TypeVar("Item")


def build_transport(node: NodeSettings, settings: LoadBalancerSettings) -> httpx.AsyncBaseTransport:
    """One pool per node, sized to its concurrency."""
    limits = httpx.Limits(
        max_connections=node.max_concurrency + HEALTH_HEADROOM,
        max_keepalive_connections=node.max_concurrency + HEALTH_HEADROOM,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )
    if settings.http_transport == "aiohttp":
        return AiohttpTransport(limits=limits)
    return httpx.AsyncHTTPTransport(limits=limits)


def parse_object(raw: bytes) -> dict[str, Any]:
    """A JSON object answer; anything else is the server's fault."""
    try:
        data = from_json(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        text = raw[:200].decode("utf-8", "replace")
        raise UpstreamError(f"the server's answer is not a JSON object: {text!r}")
    return data


def validate(model: type[Model], data: Any) -> Model:
    """The server's answer as our model, or an UpstreamError saying what did not fit."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UpstreamError(
            f"the server's answer does not fit {model.__name__}: {where}: {first['msg']}"
        ) from None


class HttpClient(StreamingLlmClient):
    """A node reached over HTTP, with its pool and live load figures.

    `supports_embeddings` starts as the server type's answer and is corrected by
    what the server says (a generate-only vLLM, llama-server without --embeddings).
    """

    supports_embeddings: bool = True

    def __init__(self, node: NodeSettings, settings: LoadBalancerSettings) -> None:
        self.node = node
        self.settings = settings
        self.load = NodeMetrics()  # the one object get_metrics() hands out
        # Requests go straight to the transport: an httpx.AsyncClient would add, on every
        # request, cookie extraction, header merging, auth and redirect steps that a node
        # needs none of (about a tenth of the CPU a small request costs).
        self.transport = build_transport(node, settings)
        self.base_url = httpx.URL(node.url if node.url.endswith("/") else node.url + "/")
        self.headers = {"user-agent": USER_AGENT}
        if node.api_key is not None:
            self.headers["authorization"] = f"Bearer {node.api_key.get_secret_value()}"
        self.json_headers = {**self.headers, **JSON_BODY}
        # Idle-read timeouts, no total timeout; health reads use their own read timeout.
        self._timeouts: dict[float | None, dict[str, float | None]] = {
            None: httpx.Timeout(
                connect=settings.connect_timeout_s,
                read=settings.read_timeout_s,
                write=settings.read_timeout_s,
                pool=settings.connect_timeout_s,
            ).as_dict()
        }
        # Each path's full URL, parsed once.
        self._urls: dict[str, httpx.URL] = {}
        self._configured = [ModelInfo(id=model.upstream_name) for model in node.models]
        self._discovered: list[ModelInfo] = []

    # --- the LlmClient surface that needs no server knowledge -------------------

    def get_supported_models(self) -> list[ModelInfo]:
        """Configured models, enriched with what discovery learned, then any others found."""
        found = {model.id: model for model in self._discovered}
        configured = [found.pop(model.id, model) for model in self._configured]
        return configured + list(found.values())

    def get_metrics(self) -> NodeMetrics:
        return self.load

    async def discover_models(self) -> list[ModelInfo]:
        self._discovered = await self.list_models()
        return self._discovered

    @abc.abstractmethod
    async def list_models(self) -> list[ModelInfo]:
        """The server's models with their context lengths, as this server tells them."""

    async def aclose(self) -> None:
        await self.transport.aclose()

    # --- plumbing for subclasses --------------------------------------------------

    def error_for(self, status_code: int, body: bytes, headers: Mapping[str, str]) -> LlmError:
        """Map a failed answer; servers with special wording override this."""
        return error_for_status(status_code, body, headers)

    @asynccontextmanager
    async def open(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        read_timeout_s: float | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Send a request and hand over the streaming response, closed on exit.

        Closing is what stops generation when a caller leaves: the connection is
        dropped (or returned only once fully read), and the servers abort.
        Failed answers become LlmErrors carrying the server's message.
        """
        url = self._urls.get(path)
        if url is None:
            # As httpx joins: the path goes under the base URL's own path (`/`-ended).
            raw_path = self.base_url.raw_path + httpx.URL(path).raw_path.lstrip(b"/")
            url = self._urls[path] = self.base_url.copy_with(raw_path=raw_path)
        timeout = self._timeouts.get(read_timeout_s)
        if timeout is None:
            timeout = self._timeouts[read_timeout_s] = httpx.Timeout(read_timeout_s).as_dict()
        # pydantic-core's encoder: the same JSON as httpx's json=, in a fraction of the time.
        try:
            content = None if body is None else to_json(body)
        except ValueError as error:  # nested too deep: the caller's request, not the node
            raise InvalidRequestError(f"the request cannot be encoded as JSON: {error}") from None
        request = httpx.Request(
            method,
            url,
            content=content,
            headers=self.headers if body is None else self.json_headers,
            extensions={"timeout": timeout},
        )
        try:
            response = await self.transport.handle_async_request(request)
        except httpx.HTTPError as error:
            raise error_for_transport(error, self.node.name) from None
        response.request = request
        try:
            if response.status_code >= 300:  # httpx does not follow redirects
                raw = await response.aread()
                raise self.error_for(response.status_code, raw, response.headers)
            yield response
        except httpx.HTTPError as error:
            raise error_for_transport(error, self.node.name) from None
        finally:
            await response.aclose()

    @asynccontextmanager
    async def streaming(
        self,
        path: str,
        body: Any,
        reader: Callable[[httpx.Response], AsyncGenerator[Item, None]],
    ) -> AsyncIterator[AsyncGenerator[Item, None]]:
        """A streaming POST and its objects, as `reader` parses them.

        Every layer is closed on exit (reader, response), so a caller that stops
        iterating closes the upstream connection at once.
        """
        async with (
            self.open("POST", path, body=body) as response,
            aclosing(reader(response)) as objects,
        ):
            yield objects

    async def fetch(
        self, method: str, path: str, *, body: Any = None
    ) -> tuple[dict[str, Any], httpx.Headers]:
        """A whole JSON answer and its headers, on the data path's timeouts."""
        async with self.open(method, path, body=body) as response:
            return parse_object(await response.aread()), response.headers

    async def query(self, method: str, path: str, *, body: Any = None) -> dict[str, Any]:
        """A JSON answer for discovery or health, on the health-check timeout."""
        return parse_object((await self.probe(path, method, body=body)).content)

    async def scrape(self, names: Iterable[str]) -> dict[str, list[float]] | None:
        """The server's /metrics gauges, or None when it serves none we can read.

        A server may serve without publishing metrics (llama.cpp without
        --metrics): its gauges are then unknown, which fails no health check.
        """
        try:
            return gauges((await self.probe("/metrics")).text, names)
        except UpstreamCredentialsError:
            raise  # The node refuses our key: it will refuse requests too.
        except LlmError:
            return None

    async def probe(self, path: str, method: str = "GET", *, body: Any = None) -> httpx.Response:
        """A health or metrics read on the health-check timeout; the body is read."""
        timeout = self.settings.health_check_timeout_s
        async with self.open(method, path, body=body, read_timeout_s=timeout) as response:
            await response.aread()
            return response
