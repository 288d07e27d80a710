"""The job runner's state in the context's Prometheus registry (served at /metrics).

Read at scrape time from the runner and its chain, so the loops keep no
metric objects of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .runner import JobRunner


class RunnerCollector(Collector):
    def __init__(self, runner: JobRunner) -> None:
        self._runner = runner

    @classmethod
    def register(cls, runner: JobRunner, registry: CollectorRegistry) -> None:
        registry.register(cls(runner))

    def collect(self) -> Iterator[Metric]:
        runner = self._runner
        chain = runner.chain
        last = runner.checkpoint.last_processed
        if last is not None:
            yield GaugeMetricFamily(
                "tangle_last_processed_block",
                "Every job call up to this block is answered for good (the checkpoint).",
                value=last,
            )
            if runner.head is not None:
                yield GaugeMetricFamily(
                    "tangle_lag_blocks",
                    "Blocks between the chain's head and the last processed block.",
                    value=max(runner.head - last, 0),
                )
        yield GaugeMetricFamily(
            "tangle_pending_transactions",
            "Transactions of ours not yet final (unmined, or fewer than `confirmations` deep).",
            value=chain.pending_transactions,
        )
        yield GaugeMetricFamily(
            "tangle_unconfirmed_results",
            "Calls answered whose result is not yet final.",
            value=runner.unconfirmed,
        )
        yield GaugeMetricFamily(
            "tangle_waiting_for_fee",
            "Transactions waiting for the base fee to fall under max_fee_gwei.",
            value=chain.waiting_for_fee,
        )
        yield CounterMetricFamily(
            "tangle_fees_paid_wei",
            "Fees paid by our mined transactions (gas used x effective gas price).",
            value=chain.fees_paid_wei,
        )
        yield CounterMetricFamily(
            "tangle_calls_answered", "Job calls answered by this process.", value=runner.answered
        )
