"""Results to the chain: submitResult, or submitResults when several are ready at once.

One sender task takes whatever results are waiting, signs one transaction for
them (nonces come from the chain's NonceManager, so several transactions can be
in flight), and resolves each result's future when its fate is known.  "Job
already completed" and "result already submitted" count as done: the customer
has an answer.  A batch the contract refuses because of one call is retried
without it; any other refusal is sent one by one so a bad result cannot hold
up good ones.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from enum import Enum

from .abi import DONE_ERRORS, SUBMIT_RESULT, SUBMIT_RESULTS
from .chain import Chain, ChainError, Reverted, Sent

log = logging.getLogger(__name__)

_MAX_PENDING_TX = 4  # result transactions in flight at once


class Outcome(Enum):
    SUBMITTED = "submitted"
    ALREADY_DONE = "already_done"  # completed by others, or our earlier result
    DRY_RUN = "dry_run"
    FAILED = "failed"  # the contract refused it for another reason; logged
    UNSENT = "unsent"  # the chain could not be reached; try again later


@dataclass(frozen=True)
class Answer:
    """A result's fate; for one we sent, the block it was mined in (a reorg may undo it)."""

    outcome: Outcome
    block: int | None = None
    block_hash: str | None = None


@dataclass
class Pending:
    call_id: int
    result: bytes
    done: asyncio.Future[Answer] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def resolve(self, outcome: Outcome, sent: Sent | None = None) -> None:
        if not self.done.done():
            block = (None, None) if sent is None else (sent.block_number, sent.block_hash)
            self.done.set_result(Answer(outcome, *block))


class Consumer:
    def __init__(
        self,
        chain: Chain,
        service_id: int,
        *,
        dry_run: bool = False,
        batch_max: int = 16,
    ) -> None:
        self.chain = chain
        self.service_id = service_id
        self.dry_run = dry_run
        self.batch_max = batch_max
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._tx_slots = asyncio.Semaphore(_MAX_PENDING_TX)
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self.transactions = 0

    async def submit(self, call_id: int, result: bytes) -> Answer:
        """Queue one result and wait until it is on chain (or known not to be needed)."""
        pending = Pending(call_id, result)
        await self._queue.put(pending)
        answer = await asyncio.shield(pending.done)
        self.stats[answer.outcome] += 1
        return answer

    async def run(self) -> None:
        """Send batches until cancelled; in-flight transactions finish in `drain`."""
        while True:
            first = await self._queue.get()
            if self.dry_run:
                log.info(
                    "dry run: result for call %d not sent (%d bytes)",
                    first.call_id,
                    len(first.result),
                )
                first.resolve(Outcome.DRY_RUN)
                continue
            # Results that arrive while every transaction slot is busy join this batch.
            await self._tx_slots.acquire()
            batch = [first]
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            task = asyncio.create_task(self._send_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float) -> int:
        """Wait for the transactions already handed to the sender, up to `timeout_s`.

        Those still unsent or unmined then are abandoned (a restart finds what got
        out in the pending state); returns how many.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(list(self._tasks), timeout=deadline - loop.time())
        late = list(self._tasks)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        return len(late)

    async def _send_batch(self, batch: list[Pending]) -> None:
        everything = list(batch)
        try:
            while batch:
                if len(batch) == 1:
                    await self._send_one(batch[0])
                    return
                batch = await self._try_batch(batch)
        except Exception as error:
            # A bug must not leave callers waiting forever; the calls stay unanswered.
            log.error("sending results failed: %s: %s", type(error).__name__, error)
            log.debug("sending results failed", exc_info=True)
        finally:
            # Also when abandoned at shutdown: nobody waits forever.
            for item in everything:
                item.resolve(Outcome.UNSENT)
            self._tx_slots.release()

    async def _try_batch(self, batch: list[Pending]) -> list[Pending]:
        """Send the batch; return what is left to send (nothing when it went through)."""
        call_ids = [item.call_id for item in batch]
        try:
            sent = await self.chain.send(
                self.chain.tangle,
                SUBMIT_RESULTS,
                self.service_id,
                call_ids,
                [item.result for item in batch],
            )
        except Reverted as reverted:
            revert = reverted.revert
            if revert.name in DONE_ERRORS and len(revert.args) >= 2:
                # The error names the call; drop it and send the rest together.
                done_id = int(revert.args[1])
                rest = [item for item in batch if item.call_id != done_id]
                if len(rest) < len(batch):
                    for item in batch:
                        if item.call_id == done_id:
                            log.info("call %d already answered (%s)", done_id, revert.name)
                            item.resolve(Outcome.ALREADY_DONE)
                    return rest
            log.warning("batch of %d refused (%s); sending one by one", len(batch), revert)
            for item in batch:
                await self._send_one(item)
            return []
        except ChainError as error:
            log.warning("batch of %d results not sent: %s", len(batch), error)
            for item in batch:
                item.resolve(Outcome.UNSENT)
            return []
        self.transactions += 1
        log.info("results for calls %s submitted in %s", call_ids, sent.tx_hash)
        for item in batch:
            item.resolve(Outcome.SUBMITTED, sent)
        return []

    async def _send_one(self, item: Pending) -> None:
        try:
            sent = await self.chain.send(
                self.chain.tangle, SUBMIT_RESULT, self.service_id, item.call_id, item.result
            )
        except Reverted as reverted:
            if reverted.revert.name in DONE_ERRORS:
                log.info("call %d already answered (%s)", item.call_id, reverted.revert.name)
                item.resolve(Outcome.ALREADY_DONE)
            else:
                log.error("result for call %d refused: %s", item.call_id, reverted.revert)
                item.resolve(Outcome.FAILED)
            return
        except ChainError as error:
            log.warning("result for call %d not sent: %s", item.call_id, error)
            item.resolve(Outcome.UNSENT)
            return
        self.transactions += 1
        log.info("result for call %d submitted in %s", item.call_id, sent.tx_hash)
        item.resolve(Outcome.SUBMITTED, sent)
