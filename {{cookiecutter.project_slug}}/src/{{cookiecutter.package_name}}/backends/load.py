"""A node's load gauges, kept by its client so the balancer can choose without I/O.

The server's own gauges (queue, running, KV-cache use, capacity) are stored with
the time they were read, so the balancer can tell a fresh gauge from a stale one.
Everything the balancer learns from its own requests (in-flight counts,
latencies, failures) it keeps itself, per node.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..llm.models import NodeMetrics


@dataclass
class ServerSignals:
    """Gauges the server itself publishes; None where it publishes none."""

    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    capacity: int | None = None


class LoadGauges:
    """The one gauge object of a node, which `get_metrics()` hands out as is."""

    def __init__(self) -> None:
        self.metrics = NodeMetrics()

    def set_signals(self, signals: ServerSignals) -> None:
        metrics = self.metrics
        metrics.server_running = signals.running
        metrics.server_waiting = signals.waiting
        kv = signals.kv_cache_usage
        # A gauge outside [0, 1] is the server's rounding; clamp rather than reject.
        metrics.server_kv_cache_usage = None if kv is None else min(max(kv, 0.0), 1.0)
        metrics.server_capacity = signals.capacity
        metrics.read_at = time.monotonic()
