"""`tangle bench`: jobs completed per second with N jobs queued on a local chain.

The customer (the key in `--key-env`) submits N chat jobs while no runner is
listening; then the job runner starts in this process, as the configured
operator, against one simulated node, and the clock runs until every call has
its result on chain.  Once with one result per transaction, once batched.
Needs a chain where the operator serves SERVICE_ID and the customer may
submit (the tnt-core local testnet: operators anvil #1/#2, customer anvil #0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass

from eth_abi.abi import encode

from {{ cookiecutter.package_name }}.config import (
    ConfigError,
    NodeModel,
    NodeSettings,
    Settings,
    load_settings,
)
from {{ cookiecutter.package_name }}.tangle.chain import Chain, ChainError
from {{ cookiecutter.package_name }}.tangle.cli import (
    UsageError,
    key_from_env,
    required_service_id,
    submit_job,
)
from {{ cookiecutter.package_name }}.tangle.keys import OperatorKeyError
from {{ cookiecutter.package_name }}.tangle.runner import JobRunner, serve_jobs
from {{ cookiecutter.package_name }}_sim import SimConfig, running_sim


@dataclass
class Row:
    batch_max: int
    jobs: int
    seconds: float
    cpu_seconds: float
    transactions: int

    def line(self) -> str:
        rate = self.jobs / self.seconds if self.seconds else float("inf")
        per_tx = self.jobs / self.transactions if self.transactions else 0.0
        cpu_ms = 1000 * self.cpu_seconds / self.jobs
        return (
            f"| {self.batch_max} | {self.jobs} | {self.seconds:.2f} | {rate:.1f} "
            f"| {cpu_ms:.1f} | {self.transactions} | {per_tx:.1f} |"
        )


async def _one_run(settings: Settings, chain: Chain, jobs: int, batch_max: int) -> Row:
    service_id = required_service_id(settings)
    model = settings.models[0].id
    request = {
        "type": "chat.completion",
        "model": model,
        "messages": [{"role": "user", "content": "benchmark"}],
        "max_tokens": 8,
    }
    inputs = encode(["string"], [json.dumps(request)])
    first_block = await chain.block_number() + 1
    for _ in range(jobs):
        await submit_job(chain, service_id, 0, inputs)
    with tempfile.TemporaryDirectory(prefix="tangle-bench-") as data_dir:
        tangle = settings.tangle.model_copy(
            update={
                "data_dir": data_dir,
                "start_block": first_block,
                "batch_max": batch_max,
                "heartbeat_interval_s": 0.0,
                "poll_interval_s": 0.2,
                "confirmations": 0,
            }
        )
        api = settings.api.model_copy(update={"port": 0})
        run_settings = settings.model_copy(update={"tangle": tangle, "api": api})
        clock = _Clock(jobs)
        status = await serve_jobs(
            run_settings, dry_run=False, install_signals=False, ready=clock.watch
        )
    if status != 0 or clock.seconds is None:
        raise ChainError(f"the job runner stopped before answering every call (exit {status})")
    return Row(batch_max, jobs, clock.seconds, clock.cpu_seconds, clock.transactions)


class _Clock:
    """Times a runner from its start until it has answered `jobs` calls, then stops it."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.seconds: float | None = None
        self.cpu_seconds = 0.0
        self.transactions = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def watch(self, runner: JobRunner) -> None:
        started = time.perf_counter()
        cpu_started = time.process_time()

        async def until_done() -> None:
            while True:
                runner.progress.clear()
                if runner.answered >= self.jobs:
                    break
                await runner.progress.wait()
            self.seconds = time.perf_counter() - started
            self.cpu_seconds = time.process_time() - cpu_started
            self.transactions = runner.consumer.transactions
            runner.stopping.set()

        task = asyncio.create_task(until_done())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def bench(settings: Settings, *, jobs: int, key_env: str) -> int:
    model = settings.models[0].id
    chain = Chain(settings.tangle, key_from_env(key_env))
    rows = []
    try:
        async with running_sim(SimConfig(dialect="openai", models=[model])) as sim:
            node = NodeSettings(
                name="sim", url=sim.url, type="openai_compatible", models=[NodeModel(id=model)]
            )
            with_sim = settings.model_copy(update={"nodes": [node]})
            for batch_max in (1, settings.tangle.batch_max):
                rows.append(await _one_run(with_sim, chain, jobs, batch_max))
    finally:
        await chain.aclose()
    print(f"Jobs completed per second, {jobs} chat jobs queued, one simulated node")
    print("(CPU: this process, runner and simulated node, per job; the chain's own is apart)")
    print()
    print(
        "| results per tx (max) | jobs | seconds | jobs/s | CPU ms per job | transactions "
        "| jobs per tx |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.line())
    return 0


def main(argv: list[str]) -> int:
    """`tangle bench [options]`: the product's CLI hands it the options after `bench`."""
    parser = argparse.ArgumentParser(prog="tangle bench", description=__doc__.splitlines()[0])
    parser.add_argument("--config", metavar="PATH", help="config file; default: $OPENROUTER_CONFIG")
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--key-env", default="TANGLE_CUSTOMER_KEY", help="customer key variable")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        return asyncio.run(bench(settings, jobs=args.jobs, key_env=args.key_env))
    except (ConfigError, UsageError, OperatorKeyError, ChainError, OSError) as error:
        print(f"tangle bench: {error}", file=sys.stderr)
        return 1
