"""HTTP metrics, registered in the context's Prometheus registry beside the balancer's, and
the request id of each request's log lines."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..logs import request_id

_TOKEN = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "api_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "api_request_duration_seconds",
            "Time to the response headers, by route (streams: to the first byte).",
            ["route"],
            buckets=(0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.streams = Gauge("api_open_streams", "Streams being relayed now.", registry=registry)
        # Labelled series, looked up once each: `labels()` takes a lock and builds a key.
        self._answered: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def answered(self, route: str, status: int, seconds: float) -> None:
        """Count one response and its time to headers."""
        series = self._answered.get((route, status))
        if series is None:
            series = (self.requests.labels(route, str(status)), self.duration.labels(route))
            self._answered[(route, status)] = series
        series[0].inc()
        series[1].observe(seconds)


class HttpMiddleware:
    """Pure ASGI (no per-request task or body buffering): each request's id, and its count.

    The id of the request's log lines, echoed in `X-Request-Id`, is the client's own
    (OpenRouter's, a proxy's) when it is a plain token of at most 128 characters, else new.
    """

    def __init__(self, app: ASGIApp, metrics: Callable[[], HttpMetrics | None]) -> None:
        self.app = app
        self.metrics = metrics  # created with the context, after the app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics()
        given = next((value for name, value in scope["headers"] if name == b"x-request-id"), b"")
        request = given if _TOKEN.fullmatch(given) else uuid.uuid4().hex.encode()
        token = request_id.set(request.decode())
        start = time.perf_counter()
        streaming = False

        async def observed_send(message: Message) -> None:
            nonlocal streaming
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (b"x-request-id", request)]
                if metrics is not None:
                    # The matched route template, not the raw path, bounds label cardinality.
                    route = getattr(scope.get("route"), "path", "unmatched")
                    metrics.answered(route, message["status"], time.perf_counter() - start)
                    streaming = any(
                        name == b"content-type" and value.startswith(b"text/event-stream")
                        for name, value in headers
                    )
                    if streaming:
                        metrics.streams.inc()
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            request_id.reset(token)
            if streaming and metrics is not None:
                metrics.streams.dec()
