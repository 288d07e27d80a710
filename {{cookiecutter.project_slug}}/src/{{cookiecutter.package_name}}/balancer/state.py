"""What the balancer tells the rest of the service about its fleet.

The model listing and `/ready` read `ListedModel`; `/ready` and the `nodes`
command read `NodeState`.  A node's URL is here for operators: the HTTP API
must not echo it to callers.
"""

from __future__ import annotations

from pydantic import BaseModel

from ..config import ModelSettings, NodeType
from .node import Breaker, Node


class ListedModel(BaseModel):
    settings: ModelSettings
    nodes: list[str]
    context_length: int | None
    healthy: bool


class NodeState(BaseModel):
    name: str
    url: str
    type: NodeType
    state: str
    healthy: bool
    ejected: bool
    draining: bool
    weight: float
    max_concurrency: int
    models: list[str]
    in_flight: int
    requests_total: int
    errors_total: int
    latency_ms: float | None
    ttft_ms: float | None
    ejected_for_s: float | None
    server_running: float | None
    server_waiting: float | None
    server_kv_cache_usage: float | None
    server_signals_age_s: float | None
    last_error: str | None


def describe(node: Node, now: float) -> NodeState:
    metrics = node.client.get_metrics()
    state = node.state(now)
    ejected = node.breaker is Breaker.OPEN
    return NodeState(
        name=node.name,
        url=node.settings.url,
        type=node.settings.type,
        state=state,
        healthy=node.healthy,
        ejected=ejected,
        draining=node.draining,
        weight=node.weight,
        max_concurrency=node.max_concurrency,
        models=sorted(node.served),
        in_flight=node.in_flight,
        requests_total=node.requests_total,
        errors_total=node.errors_total,
        latency_ms=node.latency.value_ms,
        ttft_ms=node.ttft.value_ms,
        ejected_for_s=node.ejected_until - now if ejected else None,
        server_running=metrics.server_running,
        server_waiting=metrics.server_waiting,
        server_kv_cache_usage=metrics.server_kv_cache_usage,
        server_signals_age_s=metrics.server_signals_age_s,
        last_error=node.last_error,
    )
