"""Prometheus metrics per node, on the registry the context hands in."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .node import Node

# LLM requests take from milliseconds (a cached short answer) to minutes (a long stream).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True)
class NodeSeries:
    """One node's labelled series.  Looked up once per node, not per request:
    `labels()` takes a lock and builds a key on every call, and a request touches
    these series half a dozen times."""

    in_flight: Gauge
    healthy: Gauge
    requests: Counter
    latency: Histogram
    ttft: Histogram
    ejections: Counter


class BalancerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.in_flight = Gauge(
            "llm_node_in_flight", "Requests in flight on the node.", ["node"], registry=registry
        )
        self.healthy = Gauge(
            "llm_node_up",
            "1 when the node takes traffic (healthy, not ejected).",
            ["node"],
            registry=registry,
        )
        self.requests = Counter(
            "llm_node_requests", "Attempts sent to the node.", ["node"], registry=registry
        )
        self.errors = Counter(
            "llm_node_errors",
            "Failed attempts, by error code.",
            ["node", "error"],
            registry=registry,
        )
        self.latency = Histogram(
            "llm_node_request_duration_seconds",
            "Time from dispatch to the last byte of successful attempts.",
            ["node"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "llm_node_time_to_first_token_seconds",
            "Time from dispatch to the first streamed chunk.",
            ["node"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.selections = Counter(
            "llm_balancer_selections",
            "Times the strategy chose the node.",
            ["node", "strategy"],
            registry=registry,
        )
        self.ejections = Counter(
            "llm_node_ejections",
            "Times outlier detection ejected the node.",
            ["node"],
            registry=registry,
        )
        self.queued = Gauge(
            "llm_balancer_queued", "Requests waiting for a free node.", registry=registry
        )
        self.overloaded = Counter(
            "llm_balancer_overloaded",
            "Requests refused because no node had room in time.",
            registry=registry,
        )
        self.retries = Counter(
            "llm_balancer_retries", "Attempts retried on another node.", registry=registry
        )
        # Two-label series seen so far; prometheus_client has no public way to list them.
        self._pairs: set[tuple[Counter, tuple[str, str]]] = set()
        self._series: dict[str, NodeSeries] = {}
        # The selection counter of each (node, strategy), looked up once like NodeSeries.
        self._selected: dict[tuple[str, str], Counter] = {}

    def node(self, name: str) -> NodeSeries:
        series = self._series.get(name)
        if series is None:
            series = self._series[name] = NodeSeries(
                in_flight=self.in_flight.labels(name),
                healthy=self.healthy.labels(name),
                requests=self.requests.labels(name),
                latency=self.latency.labels(name),
                ttft=self.ttft.labels(name),
                ejections=self.ejections.labels(name),
            )
        return series

    def publish(self, node: Node, now: float) -> None:
        """Set the node's gauges from its state."""
        series = self.node(node.name)
        series.in_flight.set(node.in_flight)
        series.healthy.set(1 if not node.draining and node.usable(now) else 0)

    def forget(self, node: str) -> None:
        """Drop a removed node's series so the scrape does not keep reporting it."""
        self._series.pop(node, None)
        self._selected = {key: value for key, value in self._selected.items() if key[0] != node}
        for metric in (
            self.in_flight,
            self.healthy,
            self.requests,
            self.latency,
            self.ttft,
            self.ejections,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(node)
        for metric, labels in list(self._pairs):
            if labels[0] == node:
                metric.remove(*labels)
                self._pairs.discard((metric, labels))

    def error(self, node: str, code: str) -> None:
        self.errors.labels(node, code).inc()
        self._pairs.add((self.errors, (node, code)))

    def selected(self, node: str, strategy: str) -> None:
        counter = self._selected.get((node, strategy))
        if counter is None:
            counter = self._selected[(node, strategy)] = self.selections.labels(node, strategy)
            self._pairs.add((self.selections, (node, strategy)))
        counter.inc()
