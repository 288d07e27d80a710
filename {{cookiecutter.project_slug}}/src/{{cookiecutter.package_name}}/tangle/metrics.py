"""The job runner's state in the context's Prometheus registry (served at /metrics).

Read at scrape time from the runner and its chain, so the loops keep no
metric objects of their own.  One collector per process: `runner` is the term
in force, None while this replica stands by (another one leads).
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
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runner: JobRunner | None = None
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        runner = self.runner
        leads = runner is not None and not runner.stopping.is_set()  # a term ending takes none
        yield GaugeMetricFamily("tangle_leader", "1 while this process takes jobs.", value=leads)
        if runner is None:
            return
        chain = runner.chain
        if runner.balance is not None:
            yield GaugeMetricFamily(
                "tangle_operator_balance_wei", "The operator's balance.", value=runner.balance
            )
            yield GaugeMetricFamily(
                "tangle_balance_low", "1: under an hour of gas.", value=runner.low_balance
            )
        yield GaugeMetricFamily(
            "tangle_oldest_unmined_transaction_seconds",
            "Age of our oldest transaction not yet mined (0: none waiting).",
            value=chain.oldest_unmined_s(),
        )
        outcomes = CounterMetricFamily(
            "tangle_results",
            "Results by fate (failed: refused by the contract).",
            labels=["outcome"],
        )
        for outcome, count in runner.consumer.stats.items():
            outcomes.add_metric([outcome.value], count)
        yield outcomes
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
        per_result = chain.fees_paid_wei / max(runner.answered, 1)
        yield GaugeMetricFamily("tangle_gas_per_result_wei", "Fees paid per result.", per_result)
        payments = runner.payments
        revenue = CounterMetricFamily(
            "tangle_revenue", "Payments of answered calls (token units).", labels=["model"]
        )
        for model, amount in payments.revenue.items():
            revenue.add_metric([model], amount)
        yield revenue
        yield CounterMetricFamily(
            "tangle_calls_underpaid", "Calls paying under their price.", payments.underpaid
        )
