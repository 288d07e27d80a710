"""Job calls from the chain: polled eth_getLogs in bounded windows, behind a confirmation depth.

Like the SDK's TangleProducer, it reads JobSubmitted and JobSubmittedFromQuote
for one service, in block order.  It starts one past the checkpoint (or a few
blocks back from the head on a first run).  `needs_answer` tells calls already
completed, or already answered by this operator, from those still to answer.

The logs are an optimisation; the contract is the record.  Call ids are
sequential, so at every start (a takeover too), and whenever the chain moved
back, `recover` walks the ids down from the newest and answers every call still
open, however short a lost checkpoint made the log window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..backoff import backoff_s, pause
from ..config import TangleSettings
from .abi import (
    DONE_ERRORS,
    GET_JOB_CALL,
    JOB_SUBMITTED,
    JOB_SUBMITTED_FROM_QUOTE,
    SUBMIT_RESULT,
    uint_topic,
)
from .chain import BlockTag, Chain, ChainError, Reverted, RpcRefused, Unreachable
from .checkpoint import Checkpoint
from .events import JobCall, LogDecodeError, decode_job_log

log = logging.getLogger(__name__)

# Short enough that a chain back from an outage is noticed within seconds.
_MAX_RETRY_S = 5.0


class Producer:
    def __init__(self, chain: Chain, settings: TangleSettings, checkpoint: Checkpoint) -> None:
        if settings.service_id is None:
            raise ChainError("tangle.service_id (SERVICE_ID) is required to take jobs")
        self.chain = chain
        self.settings = settings
        self.service_id = settings.service_id
        self.checkpoint = checkpoint
        self.next_block: int | None = None
        self.window = settings.max_block_range
        self._recovered = False
        self._topics: list[object] = [
            ["0x" + JOB_SUBMITTED.hex(), "0x" + JOB_SUBMITTED_FROM_QUOTE.hex()],
            uint_topic(self.service_id),
        ]

    async def begin(self) -> int:
        """Fix the first block to scan and save it at once.

        One past the checkpoint; else `start_block`, else a few blocks behind the
        head.  A fresh start is saved before anything is scanned, so a process
        stopped before its first poll resumes here, not at a later head.
        """
        saved = self.checkpoint.load()
        if saved is not None:
            start = saved + 1
        else:
            if self.settings.start_block is not None:
                start = self.settings.start_block
            else:
                head = await self.chain.block_number()
                start = max(head - self.settings.lookback_blocks, 0)
            self.checkpoint.scanned(start - 1)
            self.checkpoint.save()
        self.next_block = start
        log.info("scanning for jobs of service %d from block %d", self.service_id, start)
        return start

    async def poll(self) -> tuple[list[JobCall], int, bool]:
        """The calls of the next window, its last block, and whether it reached the head.

        The position only moves on in `advance`, once every call of the window
        has been started, so a failure half-way through re-reads the window.
        """
        start = self.next_block if self.next_block is not None else await self.begin()
        head = await self.chain.block_number() - self.settings.confirmation_depth
        if head < start:
            return [], start - 1, True
        to_block = min(head, start + self.window - 1)
        try:
            logs = await self.chain.get_logs(start, to_block, self._topics)
        except RpcRefused:
            # Public endpoints cap eth_getLogs ranges and results: ask for fewer blocks.
            self.window = max(self.window // 2, 1)
            raise
        calls = []
        for entry in logs:
            try:
                call = decode_job_log(entry)
            except LogDecodeError as error:
                log.warning("skipping a job event in block %s: %s", entry.get("blockNumber"), error)
                continue
            if call.service_id == self.service_id:
                calls.append(call)
        return sorted(calls), to_block, to_block == head

    def advance(self, to_block: int) -> None:
        self.next_block = to_block + 1
        self.checkpoint.scanned(to_block)
        self.checkpoint.save()

    async def _job_call(self, call_id: int, block: BlockTag = "latest") -> tuple[Any, ...]:
        """(jobIndex, caller, createdAt, resultCount, completed, isRFQ, payment)."""
        (job,) = await self.chain.call(
            self.chain.tangle, GET_JOB_CALL, self.service_id, call_id, block=block
        )
        return tuple(job)

    async def _call_count(self) -> int:
        """How many calls the service has: ids are sequential, an unused id reads as zeros."""
        low, high = -1, 0  # call `low` exists (or is -1); then call `high` does not
        while (await self._job_call(high))[2]:
            low, high = high, 2 * high + 1
        while high - low > 1:
            middle = (low + high) // 2
            if (await self._job_call(middle))[2]:
                low = middle
            else:
                high = middle
        return low + 1

    async def open_calls(self) -> list[JobCall]:
        """Every call still to answer, from the contract: the ids down from the newest until
        `2 x max_concurrent_jobs` in a row need nothing (a leader has at most that many in
        flight: older open calls are ones the contract refused), then their events."""
        wanted: dict[int, int] = {}  # call id -> createdAt
        done_in_a_row = 0
        call_id = await self._call_count() - 1
        while call_id >= 0 and done_in_a_row < 2 * self.settings.max_concurrent_jobs:
            if self.checkpoint.holds(call_id):
                done_in_a_row = 0
            elif await self.needs_answer(call_id):
                wanted[call_id] = (await self._job_call(call_id))[2]
                done_in_a_row = 0
            else:
                done_in_a_row += 1
            call_id -= 1
        return await self._find(wanted)

    async def current(self, call_id: int) -> JobCall | None:
        """The call that holds `call_id` now: after a reorg, none, or another call."""
        created_at = (await self._job_call(call_id))[2]
        found = await self._find({call_id: created_at}) if created_at else []
        return found[0] if found else None

    async def _find(self, wanted: dict[int, int]) -> list[JobCall]:
        """The events of these calls: windows back from the head, to their creation time."""
        found: list[JobCall] = []
        topics = [*self._topics, [uint_topic(call_id) for call_id in wanted]]
        to_block = await self.chain.block_number()
        floor = self.settings.start_block or 0
        oldest = min(wanted.values(), default=0)
        while wanted and to_block >= floor:
            from_block = max(to_block - self.window + 1, floor)
            for entry in await self.chain.get_logs(from_block, to_block, topics):
                with contextlib.suppress(LogDecodeError):
                    call = decode_job_log(entry)
                    if wanted.pop(call.call_id, None) is not None:
                        found.append(call)
            if await self.chain.block_time(from_block) < oldest:
                break
            to_block = from_block - 1
        return sorted(found)

    async def recover(self, dispatch: Callable[[JobCall], Awaitable[None]]) -> None:
        """Start every open call not in flight here (see `open_calls`)."""
        calls = await self.open_calls()
        if calls:
            log.warning("%d calls found open on chain; answering them", len(calls))
        for call in calls:
            if not self.checkpoint.holds(call.call_id):  # the poll loop may have started it
                self.checkpoint.started(call.call_id, call.block_number)
                await dispatch(call)

    async def needs_answer(self, call: JobCall | int, block: BlockTag = "pending") -> bool:
        """False when the call is completed or already carries this operator's result.

        By default as of the pending state: a result of ours still in the mempool
        (sent before a restart, or sent again after a reorg) counts as given.
        """
        call_id = call if isinstance(call, int) else call.call_id
        result_count, completed = (await self._job_call(call_id, block))[3:5]
        if completed:
            return False
        if result_count == 0 or self.chain.account is None:
            return True
        # Someone answered; ask the contract whether it was us (it has no view for that).
        try:
            await self.chain.call(
                self.chain.tangle,
                SUBMIT_RESULT,
                self.service_id,
                call_id,
                b"",
                sender=self.chain.address,
                block=block,
            )
        except Reverted as reverted:
            return reverted.revert.name not in DONE_ERRORS
        return True

    async def run(
        self, dispatch: Callable[[JobCall], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        """Poll until `stop` is set; `dispatch` starts each call (it may wait for capacity)."""
        failures = 0
        while True:
            try:
                if self.next_block is None:
                    # Even when already stopping: the start position must be saved.
                    await self.begin()
                if stop.is_set():
                    return
                if not self._recovered:
                    await self.recover(dispatch)
                    self._recovered = True
                calls, to_block, at_head = await self.poll()
            except ChainError as error:
                failures += 1
                delay = backoff_s(failures, base_s=0.5, cap_s=_MAX_RETRY_S)
                # An unreachable endpoint is logged once per outage by the chain itself.
                level = logging.DEBUG if isinstance(error, Unreachable) else logging.WARNING
                log.log(level, "polling the chain failed (%s); retrying in %.1f s", error, delay)
                if stop.is_set():
                    return
                await pause(stop, delay)
                continue
            failures = 0
            for call in calls:
                if stop.is_set():
                    return
                if self.checkpoint.holds(call.call_id):
                    continue  # started by `recover`
                self.checkpoint.started(call.call_id, call.block_number)
                await dispatch(call)
            if stop.is_set():
                return
            self.advance(to_block)
            if at_head:
                await pause(stop, self.settings.poll_interval_s)
