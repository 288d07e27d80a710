"""Accounting: what each attempt's outcome does to its node, the metrics and the logs.

In-flight counts change only here: up when an attempt is dispatched, down in the
request path's `finally`, so they cannot drift whatever way the attempt ends.
Only the node's own failures (retryable errors: it was down, broke the
connection) count against it; a full node is set aside for its Retry-After but
not counted as failing, and a request refused for its content says nothing about
the node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..llm.errors import LlmError, OverloadedError, UpstreamError
from .metrics import BalancerMetrics
from .node import Node
from .shared import SharedState

log = logging.getLogger(__name__)
# Bounds (s) of the Retry-After derived for a busy answer that gave none.
BUSY_RETRY_AFTER_S = (1.0, 30.0)

# Answers longer than this count as this long in latency samples.
REFERENCE_TOKENS = 100


class Accounting:
    def __init__(
        self,
        metrics: BalancerMetrics,
        shared: SharedState | None,
        current: Callable[[Node], bool],
        now: Callable[[], float],
    ) -> None:
        self._metrics = metrics
        self._shared = shared
        self._current = current  # whether the node is still registered (not retired)
        self._now = now

    def dispatched(self, node: Node) -> bool:
        """Count an attempt sent; True when it is the node's half-open trial."""
        now = self._now()
        trial = node.dispatched(now)
        self._metrics.node(node.name).requests.inc()
        self._metrics.publish(node, now)
        return trial

    def released(self, node: Node, trial: bool) -> None:
        """The attempt ended, however; called exactly once per dispatch."""
        node.finished(trial)
        if self._shared is not None:
            self._shared.released(node)
        if self._current(node):
            self._metrics.publish(node, self._now())

    def first_chunk(self, node: Node, started: float) -> float:
        now = self._now()
        node.ttft.observe((now - started) * 1000, now)
        self._metrics.node(node.name).ttft.observe(now - started)
        return now

    def succeeded(self, node: Node, started: float, first_at: float, tokens: int | None) -> None:
        """Record a whole answer.  The latency sample is the time to the first chunk plus
        the generation time scaled to a reference answer length: a long answer must not
        make a node look slow (LiteLLM #1393), and a short answer that queued must not make
        it look fast."""
        now = self._now()
        before = node.state(now)
        scale = REFERENCE_TOKENS / max(tokens or 0, REFERENCE_TOKENS)
        node.succeeded(((first_at - started) + (now - first_at) * scale) * 1000, now)
        if tokens and tokens > 1 and first_at > started:
            # Decode speed, scaled both ways: the first chunk carries the first token, the
            # rest took (now - first_at), whatever the answer's length.
            node.decode.observe((now - first_at) * 1000 * REFERENCE_TOKENS / (tokens - 1), now)
        series = self._metrics.node(node.name)
        series.latency.observe(now - started)
        series.tokens.inc(tokens or 0)
        self.transition(node, before)

    def failed(self, node: Node, exc: Exception, started: float) -> LlmError:
        """Count the failure against the node when it is the node's fault; return it as an
        LlmError (a client bug becomes a retryable upstream error that names only the node)."""
        if isinstance(exc, LlmError):
            error = exc
        else:
            log.error("node %s: client raised %s", node.name, type(exc).__name__, exc_info=exc)
            error = UpstreamError(f"node {node.name} failed")
        self._metrics.error(node.name, error.code or error.error_type)
        log.info("node %s: attempt failed: %s", node.name, error.code or error.error_type)
        if isinstance(error, OverloadedError):
            # A full node (vLLM's busy 503) works: tried elsewhere, set aside, not ejected.
            if error.retry_after is None:
                error.retry_after = _busy_retry_after(node)
            node.busy(self._now(), error.retry_after)
        elif error.retryable:
            now = self._now()
            before = node.state(now)
            if node.failed((now - started) * 1000, now, error.retry_after):
                self._metrics.node(node.name).ejections.inc()
                if self._shared is not None:
                    self._shared.ejected(node)
            self.transition(node, before)
        return error

    def transition(self, node: Node, before: str) -> None:
        """Log a change of the node's state and publish its gauges."""
        now = self._now()
        after = node.state(now)
        if after != before:
            if after == "ejected":
                log.warning(
                    "node %s ejected for %.0f s after failures", node.name, node.backoff_s()
                )
            else:
                log.info("node %s: %s -> %s", node.name, before, after)
        if self._current(node):
            self._metrics.publish(node, now)


def _busy_retry_after(node: Node) -> float:
    """For a full node that gave no Retry-After (vLLM's busy 503): about one of its
    answers, when a running request should have freed room."""
    latency_s = (node.success_latency.value_ms or 1000.0) / 1000
    return min(max(latency_s, BUSY_RETRY_AFTER_S[0]), BUSY_RETRY_AFTER_S[1])
