"""HTTP metrics, registered in the context's Prometheus registry beside the balancer's."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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


class MetricsMiddleware:
    """Pure ASGI (no per-request task or body buffering): counts each response by route."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], HttpMetrics | None]) -> None:
        self.app = app
        self.metrics = metrics  # created with the context, after the app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.metrics()
        if scope["type"] != "http" or metrics is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        streaming = False

        async def counted_send(message: Message) -> None:
            nonlocal streaming
            if message["type"] == "http.response.start":
                # The matched route template, not the raw path, keeps label cardinality bounded.
                route = getattr(scope.get("route"), "path", "unmatched")
                metrics.answered(route, message["status"], time.perf_counter() - start)
                streaming = any(
                    name == b"content-type" and value.startswith(b"text/event-stream")
                    for name, value in message.get("headers", ())
                )
                if streaming:
                    metrics.streams.inc()
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            if streaming:
                metrics.streams.dec()
