"""Several `run` replicas for one operator: one leader sends, the others stand by.

With `cluster.redis_url` set, each replica asks for the operator's lease (see
`cluster.leader`).  The leader runs the job loop; every transaction it signs is
fenced (the lease is checked just before each broadcast), and its checkpoint
is written beside the lease as well as in DATA_DIR.  When its lease is lost it
stops sending at once, abandons the calls in flight and stands by again.  A
standby that gets the lease finds the calls still open on chain (the checkpoint
only shortens the log scan): calls the old leader already answered are
recognised on chain and skipped, so none is answered twice.  The HTTP API is
served by every replica alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..cluster import Leadership, LeadershipLost, connect
from ..config import Settings
from .chain import Chain, ChainError
from .checkpoint import Checkpoint

log = logging.getLogger(__name__)


class NotLeader(ChainError):
    """The lease is gone: this replica must not send."""


class SharedCheckpoint(Checkpoint):
    """The DATA_DIR checkpoint, also written under the lease for the next leader."""

    def __init__(
        self, path: Path, *, key: dict[str, str | int], leadership: Leadership, shared: int | None
    ) -> None:
        super().__init__(path, key=key)
        self._leadership = leadership
        self._shared = shared
        self._writes: set[asyncio.Task[Any]] = set()

    def load(self) -> int | None:
        """The later of this replica's own file and the shared position."""
        own = super().load()
        if self._shared is None or (own is not None and own >= self._shared):
            return own
        self.scanned(self._shared)
        return self._shared

    def save(self) -> None:
        super().save()
        block = self.last_processed
        if block is None or block == self._shared:
            return
        self._shared = block
        task = asyncio.get_running_loop().create_task(self._leadership.save_checkpoint(block))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)


async def lead_jobs(
    settings: Settings,
    chain: Chain,
    chain_id: int,
    stopping: asyncio.Event,
    make_runner: Callable[[Checkpoint, asyncio.Event, asyncio.Event], Awaitable[None]],
) -> None:
    """Stand by until this replica leads, run the jobs while it does; until `stopping`.

    `make_runner(checkpoint, stop, lost)` runs one term of the job loop until `stop`
    is set, abandoning the calls in flight at once when `lost` is set too.
    """
    cluster = settings.cluster
    assert cluster.redis_url is not None
    redis = connect(cluster.redis_url.get_secret_value(), cluster.redis_timeout_s)
    base = Checkpoint.for_service(settings.tangle, chain_id)
    scope = ":".join(str(value) for value in base.key.values()) + f":{chain.address}"
    leadership = Leadership(
        redis, prefix=cluster.key_prefix, scope=scope, lease_s=cluster.leader_lease_s
    )

    async def fence() -> None:
        try:
            await leadership.fence()
        except LeadershipLost as error:
            raise NotLeader(f"not sent: {error}") from None

    chain.fence = fence
    try:
        while await leadership.acquire(stopping):
            checkpoint = SharedCheckpoint(
                base.path,
                key=base.key,
                leadership=leadership,
                shared=await leadership.load_checkpoint(),
            )
            term = asyncio.Event()
            holder = asyncio.create_task(leadership.hold(), name="leader-lease")
            relay = asyncio.create_task(_end_term(stopping, leadership.lost, term))
            try:
                await make_runner(checkpoint, term, leadership.lost)
            finally:
                holder.cancel()
                relay.cancel()
                await asyncio.gather(holder, relay, return_exceptions=True)
            if stopping.is_set():
                await leadership.resign()
                return
            log.warning("no longer the leader: standing by")
    finally:
        chain.fence = None
        with contextlib.suppress(Exception):
            await redis.aclose()


async def _end_term(stopping: asyncio.Event, lost: asyncio.Event, term: asyncio.Event) -> None:
    waits = [asyncio.create_task(stopping.wait()), asyncio.create_task(lost.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    term.set()
