"""A node's live load, kept by its client so the balancer can choose without I/O.

Local figures come from the client's own requests: in-flight count, totals, an
EWMA of latency, a peak-EWMA of latency (Finagle/Linkerd: a slower sample is
taken at once, faster ones pull the estimate down with a time constant, so a
node that slows down loses traffic quickly and wins it back cautiously), an
EWMA of time to first token and of output tokens per second.  Server gauges
(queue, running, KV-cache use, capacity) are stored with the time they were
read, so consumers can tell a fresh gauge from a stale one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ..llm.errors import LlmError
from ..llm.models import NodeMetrics

# Weight of a new sample in the plain EWMAs: about the last ten requests count.
EWMA_ALPHA = 0.2


def _ewma(current: float | None, sample: float) -> float:
    return sample if current is None else current + EWMA_ALPHA * (sample - current)


@dataclass
class ServerSignals:
    """Gauges the server itself publishes; None where it publishes none."""

    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    capacity: int | None = None


@dataclass
class RequestSample:
    """One request in flight; the tracker reads it when the request ends."""

    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    completion_tokens: int | None = None

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()


class LoadTracker:
    """Counters and averages for one node; every method is O(1) and does no I/O.

    `peak_decay_s` is the peak-EWMA time constant (`load_balancer.latency_decay_s`,
    10 s by default as in Finagle and Linkerd).
    """

    def __init__(self, peak_decay_s: float) -> None:
        self.peak_decay_s = peak_decay_s
        self.in_flight = 0
        self.requests_total = 0
        self.errors_total = 0
        self.ewma_latency_s: float | None = None
        self.peak_ewma_latency_s: float | None = None
        self._peak_updated = 0.0
        self.ewma_ttft_s: float | None = None
        self.tokens_per_second: float | None = None
        self.signals = ServerSignals()
        self._signals_at: float | None = None
        self._updated = time.time()

    def start(self) -> RequestSample:
        self.in_flight += 1
        self.requests_total += 1
        self._updated = time.time()
        return RequestSample()

    def finish(self, sample: RequestSample, error: BaseException | None) -> None:
        """Close a request: successes feed the averages, node failures count as errors.

        A request the caller abandoned (cancellation, closed stream) or one the
        server rejected as invalid says nothing about the node's speed or health,
        so it feeds neither.
        """
        self.in_flight -= 1
        now = time.monotonic()
        self._updated = time.time()
        if error is not None:
            if _node_failure(error):
                self.errors_total += 1
            return
        latency = now - sample.started
        self.ewma_latency_s = _ewma(self.ewma_latency_s, latency)
        self._peak_sample(latency, now)
        if sample.first_token_at is not None:
            self.ewma_ttft_s = _ewma(self.ewma_ttft_s, sample.first_token_at - sample.started)
            generating = now - sample.first_token_at
            if sample.completion_tokens and generating > 0:
                self.tokens_per_second = _ewma(
                    self.tokens_per_second, sample.completion_tokens / generating
                )

    def _peak_sample(self, latency: float, now: float) -> None:
        cost = self.peak_ewma_latency_s
        if cost is None or latency > cost:
            self.peak_ewma_latency_s = latency
        else:
            decay = math.exp(-(now - self._peak_updated) / self.peak_decay_s)
            self.peak_ewma_latency_s = cost * decay + latency * (1 - decay)
        self._peak_updated = now

    def set_signals(self, signals: ServerSignals) -> None:
        self.signals = signals
        self._signals_at = time.monotonic()

    def snapshot(self) -> NodeMetrics:
        def ms(value: float | None) -> float | None:
            return None if value is None else value * 1000

        age = None if self._signals_at is None else time.monotonic() - self._signals_at
        kv = self.signals.kv_cache_usage
        return NodeMetrics(
            in_flight=self.in_flight,
            requests_total=self.requests_total,
            errors_total=self.errors_total,
            ewma_latency_ms=ms(self.ewma_latency_s),
            peak_ewma_latency_ms=ms(self.peak_ewma_latency_s),
            ewma_ttft_ms=ms(self.ewma_ttft_s),
            tokens_per_second=self.tokens_per_second,
            server_running=self.signals.running,
            server_waiting=self.signals.waiting,
            # A gauge outside [0, 1] is the server's rounding; clamp rather than reject.
            server_kv_cache_usage=None if kv is None else min(max(kv, 0.0), 1.0),
            server_capacity=self.signals.capacity,
            server_signals_age_s=age,
            last_updated=self._updated,
        )


def _node_failure(error: BaseException) -> bool:
    if isinstance(error, LlmError):
        return error.retryable
    # Cancellation and generator close mean the caller left, not that the node failed.
    return isinstance(error, Exception)
