"""`run`: the blueprint process the Tangle blueprint manager starts.

It takes job calls from the chain, answers them through the shared context
(the same balancer the HTTP API uses, served beside it), posts the results,
and sends a heartbeat every `heartbeat_interval_s`.  SIGTERM or SIGINT stops
taking new calls, lets the calls in flight finish and post their results
(up to `shutdown_grace_s`), saves the checkpoint and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from eth_abi.abi import encode

from ..backoff import backoff_s, pause
from ..config import ConfigError, Settings
from ..context import Context
from ..jobs import JobEnv, error_output, fleet_metrics, run_job
from ..llm.errors import InvalidRequestError
from ..logs import configure_logging, request_id
from .abi import (
    IS_SERVICE_OPERATOR,
    METRIC_PAIRS,
    STAKING_IS_OPERATOR_ACTIVE,
    SUBMIT_HEARTBEAT_DIRECT,
)
from .chain import Chain, ChainError
from .checkpoint import FILE_NAME, Checkpoint, CheckpointError
from .consumer import Answer, Consumer, Outcome
from .events import JobCall
from .keys import OperatorKeyError, operator_account
from .leader import lead_jobs
from .metrics import RunnerCollector
from .poison import PoisonGuard
from .pricing import Payments
from .producer import Producer
from .quotes import Quoter

log = logging.getLogger(__name__)


def _request(call: JobCall) -> tuple[object, ...]:
    """What a result answers: a call with the same id in another block is the same
    request only if this matches."""
    return call.caller, call.job_index, call.inputs, call.from_quote


@dataclass
class _Unconfirmed:
    """An answered call whose result is not final yet (fewer than `confirmations` blocks)."""

    call: JobCall
    result: bytes | None  # None: answered before this process saw it (or by others)
    block: int | None = None
    block_hash: str | None = None


class JobRunner:
    """Producer -> jobs -> consumer, with bounded concurrency and a checkpoint.

    Tasks: the producer's poll loop (in `run`), one task per call in flight, the
    consumer's sender, heartbeats, and a watcher that makes answers final: a
    result counts once it is `confirmations` blocks deep; if a reorg dropped it,
    the call is answered again.  The checkpoint moves past a call only then.
    """

    def __init__(
        self,
        context: Context,
        chain: Chain,
        *,
        chain_id: int,
        dry_run: bool = False,
        stopping: asyncio.Event | None = None,
        lost: asyncio.Event | None = None,
    ) -> None:
        settings = context.settings.tangle
        self.context = context
        self.chain = chain
        self.settings = settings
        self.dry_run = dry_run
        self.checkpoint = Checkpoint.for_service(settings, chain_id)
        self.producer = Producer(chain, settings, self.checkpoint)  # requires SERVICE_ID
        self.service_id = self.producer.service_id
        self.consumer = Consumer(
            chain, self.service_id, dry_run=dry_run, batch_max=settings.batch_max
        )
        self.poison = PoisonGuard(Path(settings.data_dir))
        self.stopping = stopping or asyncio.Event()
        self.lost = lost or asyncio.Event()  # set: the leader lease is gone, give up at once
        self._slots = asyncio.Semaphore(settings.max_concurrent_jobs)
        self._jobs: set[asyncio.Task[None]] = set()
        self._unconfirmed: dict[int, _Unconfirmed] = {}
        self.answered = 0
        self.progress = asyncio.Event()  # set whenever a call is answered
        self.head: int | None = None  # the chain's head as last seen by the watcher
        self.payments = Payments(context.settings, chain)
        self.balance: int | None = None  # the operator's, as last seen by the watcher
        self._fees_since = (time.monotonic(), chain.fees_paid_wei)

    # --- heartbeat ----------------------------------------------------------------

    async def heartbeat(self) -> str | None:
        """Post this operator's metrics to OperatorStatusRegistry; None in --dry-run."""
        metrics = fleet_metrics(self.context)
        status = 0 if metrics["nodes_healthy"] else 1  # 1: degraded, still answering
        payload = encode([METRIC_PAIRS], [list(metrics.items())])
        if self.dry_run:
            log.info("dry run: heartbeat not sent (%s)", metrics)
            return None
        sent = await self.chain.send(
            self.chain.status_registry,
            SUBMIT_HEARTBEAT_DIRECT,
            self.service_id,
            self.settings.blueprint_id,
            status,
            payload,
        )
        log.info("heartbeat sent in %s", sent.tx_hash)
        return sent.tx_hash

    async def _heartbeats(self) -> None:
        interval = self.settings.heartbeat_interval_s
        while interval > 0 and not self.stopping.is_set():
            try:
                await self.heartbeat()
            except ChainError as error:
                log.warning("heartbeat failed: %s", error)
            await pause(self.stopping, interval)

    # --- jobs -----------------------------------------------------------------------

    async def dispatch(self, call: JobCall, result: bytes | None = None) -> None:
        """Start answering `call` (or sending `result` again) once a slot is free."""
        await self._slots.acquire()
        task = asyncio.create_task(self._process(call, result))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _needs_answer(self, call: JobCall) -> bool:
        try:
            return await self.producer.needs_answer(call)
        except ChainError as error:
            # Answer anyway: submission retries, and reports a duplicate as done.
            log.warning("could not check call %d (%s); answering it", call.call_id, error)
            return True

    async def _process(self, call: JobCall, result: bytes | None = None) -> None:
        """Answer one call (or send `result` again); the slot is released at the end."""
        request_id.set(f"call-{call.call_id}")  # this task's own context: its log lines
        try:
            if result is None:
                if not await self._needs_answer(call):
                    log.debug("call %d already answered; skipping", call.call_id)
                    self._unconfirmed[call.call_id] = _Unconfirmed(call, None)
                    return
                result = await self._compute(call)
                if result is None:  # underpaid, and [job_pricing] says skip
                    self._finished([call.call_id])
                    return
            answer = await self._submit(call, result)
            if answer.outcome is Outcome.UNSENT:
                return  # only at shutdown: the call stays above the checkpoint
            self.answered += 1
            self.payments.answered(call.call_id)
            self.progress.set()
            if answer.outcome in (Outcome.SUBMITTED, Outcome.ALREADY_DONE):
                self._unconfirmed[call.call_id] = _Unconfirmed(
                    call, result, answer.block, answer.block_hash
                )
            else:
                self._finished([call.call_id])
        finally:
            self._slots.release()

    async def _compute(self, call: JobCall) -> bytes | None:
        if self.poison.poisoned(call.call_id):
            log.error("call %d stopped the runner twice; answering it with an error", call.call_id)
            return error_output(
                InvalidRequestError(
                    "this job's input stopped the operator twice; it was not processed",
                    code="poison_job",
                )
            )
        refusal = await self.payments.check(call)
        if refusal is not None:
            return refusal or None
        env = JobEnv(
            context=self.context,
            service_id=call.service_id,
            call_id=call.call_id,
            caller=call.caller,
            heartbeat=self.heartbeat,
            reading_input=functools.partial(self.poison.reading, call.call_id),
        )
        return await run_job(
            env,
            call.job_index,
            call.inputs,
            timeout_s=self.context.settings.api.request_timeout_s,
        )

    async def _submit(self, call: JobCall, result: bytes) -> Answer:
        """Submit, retrying while the chain is unreachable, until shutdown."""
        failures = 0
        while True:
            answer = await self.consumer.submit(call.call_id, result)
            if answer.outcome is not Outcome.UNSENT or self.stopping.is_set():
                return answer
            failures += 1
            await pause(self.stopping, backoff_s(failures, base_s=1.0, cap_s=5.0))

    def _finished(self, call_ids: list[int]) -> None:
        for call_id in call_ids:
            self.checkpoint.finished(call_id)
            self.poison.forget(call_id)
        self.checkpoint.save()

    # --- finality -------------------------------------------------------------------

    async def _watch(self) -> None:
        """Every poll interval: make answers final, and repair what a reorg undid."""
        while not self.stopping.is_set():
            try:
                await self.confirm()
            except ChainError as error:
                log.debug("confirming results failed: %s", error)
            await pause(self.stopping, self.settings.poll_interval_s)

    async def confirm(self) -> None:
        """One pass: results `confirmations` deep in an unchanged block are final."""
        self.head = head = await self.chain.block_number()
        if self.chain.account is not None:
            was_low, self.balance = self.low_balance, await self.chain.balance()
            if self.low_balance and not was_low:
                log.warning("balance %d wei < an hour of gas (%d)", self.balance, self.gas_per_hour)
        final_block = head - self.settings.confirmation_depth
        moved = not self.dry_run and await self.chain.keep_transactions(max(final_block, 0))
        if moved:
            await self.producer.recover(self.dispatch)  # results the chain dropped
        hashes: dict[int, str | None] = {}
        final: list[int] = []
        for call_id, item in list(self._unconfirmed.items()):
            deep = item.block is None or item.block <= final_block
            if item.block is not None:
                if not (deep or moved):  # after a reorg, a shallow result is looked at now
                    continue
                if item.block not in hashes:
                    hashes[item.block] = await self.chain.block_hash(item.block)
                if hashes[item.block] == item.block_hash:
                    if deep:
                        final.append(call_id)
                    continue
            # No block of ours to check, or that block was replaced: ask the contract.
            if not await self.producer.needs_answer(item.call, "latest"):
                if deep:
                    final.append(call_id)
            elif await self.producer.needs_answer(item.call, "pending"):
                current = await self.producer.current(call_id)
                if current is None:
                    log.warning("call %d left the chain with its result (reorg?)", call_id)
                    final.append(call_id)
                    continue
                del self._unconfirmed[call_id]
                if _request(current) == _request(item.call):
                    log.warning(
                        "call %d: its result is no longer on chain (reorg?); answering it again",
                        call_id,
                    )
                    await self.dispatch(item.call, item.result)
                else:
                    log.warning("call %d: another call holds its id since a reorg", call_id)
                    await self.dispatch(current)
            # else: an answer of ours is in the mempool; look again next time.
        for call_id in final:
            del self._unconfirmed[call_id]
        if final:
            self._finished(final)

    @property
    def unconfirmed(self) -> int:
        return len(self._unconfirmed)

    @property
    def gas_per_hour(self) -> float:
        """Fees paid an hour at the rate since this term began (at least a minute)."""
        start, spent = self._fees_since
        return (self.chain.fees_paid_wei - spent) * 3600 / max(time.monotonic() - start, 60.0)

    @property
    def low_balance(self) -> bool:
        return self.balance is not None and self.balance < self.gas_per_hour

    # --- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Until `stopping` is set; then finish the calls in flight within the grace."""
        self.poison.load()
        consumer = asyncio.create_task(self.consumer.run())
        helpers = [
            consumer,
            asyncio.create_task(self._heartbeats()),
            asyncio.create_task(self._watch()),
        ]
        try:
            await self.producer.run(self.dispatch, self.stopping)
            await self._finish_in_flight()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            self.checkpoint.save()
            outcomes = ", ".join(
                f"{count} {outcome.value}"
                for outcome, count in self.consumer.stats.items()
                if count
            )
            log.info(
                "stopped; %d calls answered (%s), last processed block %s",
                self.answered,
                outcomes or "none",
                self.checkpoint.last_processed,
            )

    def abandon(self) -> None:
        """Stop the calls in flight now; they stay above the checkpoint for the next start."""
        for task in self._jobs:
            task.cancel()

    async def _finish_in_flight(self) -> None:
        """Jobs, then their transactions, all within `shutdown_grace_s` together."""
        loop = asyncio.get_running_loop()
        if self.lost.is_set():
            self.abandon()
        deadline = loop.time() + (0.0 if self.lost.is_set() else self.settings.shutdown_grace_s)
        if self._jobs:
            log.info("finishing %d calls in flight", len(self._jobs))
            _done, late = await asyncio.wait(list(self._jobs), timeout=deadline - loop.time())
            for task in late:
                task.cancel()
            if late:
                # Their blocks stay above the checkpoint: the next start answers them.
                log.warning(
                    "%d calls unfinished at shutdown; they will be answered on restart", len(late)
                )
                await asyncio.gather(*late, return_exceptions=True)
        unsent = await self.consumer.drain(max(deadline - loop.time(), 0.0))
        if unsent:
            log.warning(
                "%d transactions still unmined at the end of the grace; the next start checks "
                "the pending state before answering their calls again",
                unsent,
            )


async def _serve_api(context: Context, stop: asyncio.Event, quoter: Quoter | None) -> None:
    """The HTTP API beside the jobs, on the same context, when this project can serve it."""
    try:
        from ..api.app import create_app
        from ..api.body import read_body
        from ..api.server import serving
    except ImportError as error:
        log.warning("HTTP API not available (%s); running the job loop alone", error)
        return

    @contextlib.asynccontextmanager
    async def shared(_settings: Settings) -> AsyncIterator[Context]:
        yield context

    try:
        app = create_app(context.settings, open_context=shared)
    except ConfigError as error:
        # Jobs need no API; an operator without API keys still answers on chain.
        log.warning("HTTP API not served: %s", error)
        return
    if quoter is not None:
        app.router.routes.append(quoter.route(read_body))
    api = context.settings.api
    try:
        async with serving(app, api, api.host, api.port):
            await stop.wait()
    except OSError as error:
        log.error("HTTP API not served: %s; jobs continue", error)


async def _check_operator(chain: Chain, service_id: int) -> None:
    """Warn early about what would make every result revert."""
    (member,) = await chain.call(chain.tangle, IS_SERVICE_OPERATOR, service_id, chain.address)
    if not member:
        log.warning(
            "%s is not an operator of service %d: results will be refused until it joins",
            chain.address,
            service_id,
        )
    (active,) = await chain.call(chain.staking, STAKING_IS_OPERATOR_ACTIVE, chain.address)
    if not active:
        log.warning("%s is not an active staking operator: results will be refused", chain.address)


class _Signals:
    """SIGTERM/SIGINT: the first stops taking calls, a second abandons those in flight."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.runner: JobRunner | None = None

    def __call__(self, sig: signal.Signals) -> None:
        if self.stopping.is_set():
            log.warning("second %s: abandoning the calls in flight", sig.name)
            if self.runner is not None:
                self.runner.abandon()
            return
        log.info("%s received: finishing the calls in flight", sig.name)
        self.stopping.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def _data_dir_problem(data_dir: str) -> str | None:
    """Why DATA_DIR cannot hold the checkpoint, or None; checked before any work."""
    path = Path(data_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
        Checkpoint(path / FILE_NAME, key={}).load()
    except OSError as error:
        return f"DATA_DIR {path}: not writable ({error.strerror or type(error).__name__})"
    except CheckpointError as error:
        return f"DATA_DIR: {error}"
    return None


async def _report_pending(chain: Chain) -> None:
    """Say so when an earlier run left transactions in the mempool."""
    mined = await chain.transaction_count("latest")
    pending = await chain.transaction_count("pending")
    if pending > mined:
        log.warning(
            "%d transactions from an earlier run are pending (nonces %d-%d); calls they answer "
            "are not answered again",
            pending - mined,
            mined,
            pending - 1,
        )


async def serve_jobs(
    settings: Settings,
    *,
    dry_run: bool,
    install_signals: bool = True,
    ready: Callable[[JobRunner], Awaitable[None]] | None = None,
) -> int:
    """Open the context and chain, run jobs (and the API) until a signal; the exit status.

    Start-up errors are one line naming the setting, path or node, and exit 2.
    Signals are caught from the start, so a stop during start-up still saves
    the position the next start resumes from.
    """
    service_id = settings.tangle.service_id
    if service_id is None:
        log.error("SERVICE_ID (tangle.service_id) is required to take jobs")
        return 2
    problem = _data_dir_problem(settings.tangle.data_dir)
    if problem is not None:
        log.error("%s", problem)
        return 2
    try:
        account = operator_account(settings.tangle)
    except OperatorKeyError as error:
        if not dry_run:
            log.error("no operator key: %s", error)
            return 2
        log.warning("dry run without an operator key: %s", error)
        account = None
    signals = _Signals()
    try:
        chain = Chain(settings.tangle, account)
    except ChainError as error:
        log.error("%s", error)
        return 2
    try:
        with signals.installed() if install_signals else contextlib.nullcontext():
            async with contextlib.AsyncExitStack() as stack:
                try:
                    context = await stack.enter_async_context(Context.open(settings))
                except ConfigError as error:  # e.g. a node type this project was made without
                    log.error("%s", error)
                    return 2
                collector = RunnerCollector(context.metrics_registry)
                try:
                    chain_id = await chain.chain_id()
                    if account is not None:
                        log.info("operator %s on chain %d", chain.address, chain_id)
                        await _check_operator(chain, service_id)
                        await _report_pending(chain)
                except ChainError as error:
                    log.error("HTTP_RPC_URL (tangle.http_rpc_url): %s", error)
                    return 2
                quoter = None if account is None else Quoter(settings, chain, service_id)

                async def run_term(
                    stop: asyncio.Event = signals.stopping, lost: asyncio.Event | None = None
                ) -> None:
                    runner = JobRunner(
                        context, chain, chain_id=chain_id, dry_run=dry_run, stopping=stop, lost=lost
                    )
                    signals.runner = collector.runner = runner
                    if ready is not None:
                        await ready(runner)
                    try:
                        await runner.run()
                    finally:
                        collector.runner = None

                if settings.cluster.redis_url is None or dry_run:
                    await _run_with_api(context, run_term(), quoter)
                else:  # one leader among the replicas sends (tangle.leader)
                    work = lead_jobs(settings, chain, chain_id, signals.stopping, run_term)
                    await _run_with_api(context, work, quoter)
    except ChainError as error:
        log.error("%s", error)
        return 1
    finally:
        await chain.aclose()
    return 0


async def _run_with_api(context: Context, work: Awaitable[None], quoter: Quoter | None) -> None:
    stop = asyncio.Event()
    api_task = asyncio.create_task(_serve_api(context, stop, quoter))
    try:
        await work
    finally:
        stop.set()
        await asyncio.gather(api_task, return_exceptions=True)


def run(settings: Settings, *, test_mode: bool, pretty: bool, verbosity: int, dry_run: bool) -> int:
    """The blueprint manager's entry point: `run [--test-mode] [--pretty] [-v] [--dry-run]`."""
    configure_logging("json" if settings.log_json else "text" if pretty else "logfmt", verbosity)
    if test_mode:
        # Accepted for the blueprint manager; this runner behaves the same either way.
        log.info("test mode")
    return asyncio.run(serve_jobs(settings, dry_run=dry_run))
