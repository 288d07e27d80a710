"""One node as the balancer sees it: its client, its load, its health and its latency.

All load figures the strategies read live here, changed only by the balancer's
own request lifecycle (see accounting.py).  Times come from the event loop's
clock, which the benchmark replaces with a virtual one.
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import get_args

from ..config import Capability, LoadBalancerSettings, NodeModel, NodeSettings
from ..llm.errors import NotSupportedError
from ..llm.interfaces import StreamingLlmClient
from ..llm.models import ModelInfo, NodeMetrics


class Breaker(enum.Enum):
    """Passive outlier detection, as a circuit breaker."""

    CLOSED = "closed"  # taking traffic
    OPEN = "open"  # ejected until its backoff ends
    HALF_OPEN = "half_open"  # backoff over: one trial request or health check readmits it


@dataclass
class ServedModel:
    """A listed model on one node: the node's own name for it and what the node said of it."""

    upstream_name: str
    context_length: int | None = None
    loaded: bool | None = None
    lacks: frozenset[Capability] = frozenset()


@dataclass
class PeakEwma:
    """Latency estimate that jumps up at once and decays slowly (Finagle/Linkerd peak-EWMA)."""

    decay_s: float
    value_ms: float | None = None
    updated_at: float = 0.0

    def observe(self, sample_ms: float, now: float) -> None:
        if self.value_ms is None or sample_ms > self.value_ms:
            self.value_ms = sample_ms
        else:
            weight = math.exp(-max(now - self.updated_at, 0.0) / self.decay_s)
            self.value_ms = self.value_ms * weight + sample_ms * (1.0 - weight)
        self.updated_at = now


@dataclass
class Node:
    settings: NodeSettings
    client: StreamingLlmClient
    lb: LoadBalancerSettings
    served: dict[str, ServedModel] = field(default_factory=dict)
    discovered: list[ModelInfo] = field(default_factory=list)
    refused: set[tuple[str, Capability]] = field(default_factory=set)  # (listed id, capability)
    in_flight: int = 0
    reserved: int = 0  # free slots handed to queued requests that have not started yet
    requests_total: int = 0
    errors_total: int = 0
    draining: bool = False
    # Active health checks.
    healthy: bool = True
    health_failures: int = 0
    checked_at: float | None = None
    discovered_at: float | None = None
    last_error: str | None = None
    # Passive outlier detection.
    breaker: Breaker = Breaker.CLOSED
    consecutive_failures: int = 0
    recent: deque[bool] = field(default_factory=deque)
    ejections: int = 0
    ejected_until: float = 0.0
    readmitted_at: float = 0.0
    trial_in_flight: bool = False
    cooldown_until: float = 0.0
    # Latency.
    latency: PeakEwma = field(init=False)  # successes, and failures with a penalty
    success_latency: PeakEwma = field(init=False)
    ttft: PeakEwma = field(init=False)
    decode: PeakEwma = field(init=False)  # generating a reference answer, once started

    def __post_init__(self) -> None:
        self.latency = PeakEwma(self.lb.latency_decay_s)
        self.success_latency = PeakEwma(self.lb.latency_decay_s)
        self.ttft = PeakEwma(self.lb.latency_decay_s)
        self.decode = PeakEwma(self.lb.latency_decay_s)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def weight(self) -> float:
        return self.settings.weight

    @property
    def max_concurrency(self) -> int:
        return self.settings.max_concurrency

    # --- models ----------------------------------------------------------------

    def refresh_served(self, listed: dict[str, int | None]) -> None:
        """Rebuild listed id -> node model from config and discovery.

        `listed` maps each listed id to its configured context length.  A
        configured model is served even when discovery misses it (the server may
        load it on demand); a discovered model is served when its own name is a
        listed id.  Capabilities: the server's word, else config, else all, less refusals.
        """
        by_upstream = {info.id: info for info in self.discovered}
        models = {model.id: model for model in self.settings.models if model.id in listed}
        for info in self.discovered:
            if info.id in listed and info.id not in models:
                models[info.id] = NodeModel(id=info.id)
        self.served = {
            id: self._served(model, by_upstream.get(model.upstream_name), listed[id])
            for id, model in models.items()
        }

    def _served(self, model: NodeModel, info: ModelInfo | None, context: int | None) -> ServedModel:
        said, allowed = info.capabilities if info else {}, model.capabilities
        lacks = frozenset(
            capability
            for capability in get_args(Capability)
            if not said.get(capability, allowed is None or capability in allowed)
            or (model.id, capability) in self.refused
        )
        if info and info.context_length:
            context = info.context_length
        return ServedModel(model.upstream_name, context, info.loaded if info else None, lacks)

    def can(self, model: str, needs: Sequence[Capability]) -> bool:
        served = self.served.get(model)
        return served is not None and not served.lacks.intersection(needs)

    def refuse(self, model: str, capability: Capability) -> None:
        """The server said it cannot: not asked again until the node is rebuilt."""
        self.refused.add((model, capability))
        self.served[model].lacks |= {capability}

    # --- load ------------------------------------------------------------------

    def signals_fresh(self, metrics: NodeMetrics) -> bool | None:
        """True/False for fresh/stale server gauges; None when the server publishes none."""
        if metrics.read_at is None:
            return None
        return time.monotonic() - metrics.read_at <= self.lb.stale_signal_age_s

    def load(self) -> float:
        """Requests on the node: ours, or the server's own count when fresh and higher.

        A stale gauge is unknown, not idle: the node then counts as full, as llm-d's
        saturation detector does, so it ranks behind nodes whose load is known.
        """
        metrics = self.client.get_metrics()
        fresh = self.signals_fresh(metrics)
        if fresh is None:
            return float(self.in_flight)
        if not fresh:
            return float(max(self.in_flight, self.max_concurrency))
        server = (metrics.server_running or 0.0) + (metrics.server_waiting or 0.0)
        return max(float(self.in_flight), server)

    def saturated(self) -> bool:
        """No room: our own count at max_concurrency, or fresh server gauges say full."""
        if self.in_flight + self.reserved >= self.max_concurrency:
            return True
        metrics = self.client.get_metrics()
        if not self.signals_fresh(metrics):
            return False
        if (metrics.server_waiting or 0.0) >= self.lb.max_server_waiting > 0:
            return True
        kv = metrics.server_kv_cache_usage
        return kv is not None and kv >= self.lb.max_kv_cache_usage

    def service_ms(self) -> float | None:
        """What one more request costs here before any queueing: the measured time to
        generate a reference answer (streamed answers only), else the latency estimate;
        None before either.

        Queue wait is left out on purpose: the caller counts it from the load, and a
        peak-sensitive estimate would keep a burst's wait for `latency_decay_s`.
        """
        value = self.decode.value_ms
        return self.latency.value_ms if value is None else value

    def attempts_per_success(self) -> float:
        """Expected attempts for one answer over the recent outcomes, smoothed so that a
        node without history counts 1 and one failing everything stays finite."""
        successes = sum(1 for ok in self.recent if ok)
        return (len(self.recent) + 1) / (successes + 1)

    # --- health ----------------------------------------------------------------

    def usable(self, now: float) -> bool:
        """Healthy, not ejected (or half-open with no trial running), not cooling down."""
        if not self.healthy or now < self.cooldown_until:
            return False
        self._tick(now)
        if self.breaker is Breaker.OPEN:
            return False
        return not (self.breaker is Breaker.HALF_OPEN and self.trial_in_flight)

    def _tick(self, now: float) -> None:
        if self.breaker is Breaker.OPEN and now >= self.ejected_until:
            self.breaker = Breaker.HALF_OPEN

    def state(self, now: float) -> str:
        self._tick(now)
        if self.draining:
            return "draining"
        if self.breaker is Breaker.OPEN:
            return "ejected"
        if not self.healthy:
            return "unhealthy"
        if self.breaker is Breaker.HALF_OPEN:
            return "half_open"
        return "healthy"

    def health_ok(self, now: float) -> None:
        """A passing health check marks the node up and, once its backoff is over, readmits it."""
        self.healthy = True
        self.health_failures = 0
        self.checked_at = now
        self.last_error = None
        self._readmit(now)

    def health_failed(self, reason: str, now: float) -> None:
        """Mark the node down after `unhealthy_threshold` failures in a row, or at once when
        it has never passed a check (nothing says it ever worked)."""
        first = self.checked_at is None
        self.health_failures += 1
        self.checked_at = now
        self.last_error = reason
        if first or self.health_failures >= self.lb.unhealthy_threshold:
            self.healthy = False

    # --- outcomes --------------------------------------------------------------

    def dispatched(self, now: float) -> bool:
        """Count a request sent; return True when it is the half-open trial."""
        self._tick(now)
        self.in_flight += 1
        self.requests_total += 1
        if self.breaker is Breaker.HALF_OPEN:
            self.trial_in_flight = True
            return True
        return False

    def finished(self, trial: bool) -> None:
        """Always called once per dispatch, whatever the outcome (even cancellation)."""
        self.in_flight -= 1
        if trial:
            self.trial_in_flight = False

    def succeeded(self, latency_ms: float, now: float) -> None:
        self.latency.observe(latency_ms, now)
        self.success_latency.observe(latency_ms, now)
        self.consecutive_failures = 0
        self._remember(True)
        self._readmit(now)

    def busy(self, now: float, retry_after: float | None) -> None:
        """Set the node aside for the Retry-After it gave (capped)."""
        if retry_after:
            self.cooldown_until = max(
                self.cooldown_until, now + min(retry_after, self.lb.retry_after_max_s)
            )

    def failed(self, elapsed_ms: float, now: float, retry_after: float | None) -> bool:
        """Count a node failure; return True when it ejects the node.

        The failure enters the latency estimate as a penalty, so a node failing
        fast never looks fast.
        """
        self.errors_total += 1
        # Relative to successes only, so failures in a row do not compound; and never
        # cheaper than a node not yet measured.
        baseline = max(self.success_latency.value_ms or 0.0, self.lb.default_latency_ms)
        self.latency.observe(max(elapsed_ms, baseline) * self.lb.failure_latency_penalty, now)
        self.busy(now, retry_after)
        self.consecutive_failures += 1
        self._remember(False)
        self._tick(now)
        if self.breaker is Breaker.HALF_OPEN or self._outlier():
            self._eject(now)
            return True
        return False

    def _remember(self, ok: bool) -> None:
        self.recent.append(ok)
        while len(self.recent) > self.lb.failure_window:
            self.recent.popleft()

    def _outlier(self) -> bool:
        if self.breaker is not Breaker.CLOSED:
            return False
        if self.consecutive_failures >= self.lb.eject_consecutive_failures:
            return True
        if len(self.recent) < self.lb.failure_window_min:
            return False
        failures = sum(1 for ok in self.recent if not ok)
        return failures / len(self.recent) >= self.lb.eject_failure_rate

    def backoff_s(self) -> float:
        """The current ejection's length: doubling with each ejection in a row, capped."""
        return min(
            self.lb.ejection_base_s * 2.0 ** max(self.ejections - 1, 0), self.lb.ejection_max_s
        )

    def _eject(self, now: float) -> None:
        # An ejection long after the last readmission starts the backoff afresh.
        if self.readmitted_at and now - self.readmitted_at > self.lb.ejection_max_s:
            self.ejections = 0
        self.ejections += 1
        self.breaker = Breaker.OPEN
        self.ejected_until = now + self.backoff_s()
        self.trial_in_flight = False

    def _readmit(self, now: float) -> None:
        self._tick(now)
        if self.breaker is not Breaker.HALF_OPEN:
            return
        self.breaker = Breaker.CLOSED
        self.trial_in_flight = False
        self.consecutive_failures = 0
        self.recent.clear()
        self.readmitted_at = now


def capable(nodes: list[Node], model: str, needs: Sequence[Capability]) -> list[Node]:
    """The nodes that can do all the request needs; when none can, a 400 naming what lacks."""
    able = [node for node in nodes if node.can(model, needs)]
    if nodes and not able:
        lacking = set(needs).intersection(*(node.served[model].lacks for node in nodes))
        missing = " and ".join(sorted(lacking) or needs)
        raise NotSupportedError(f"no node serving {model!r} supports {missing}", param="model")
    return able
