"""Several `run` replicas for one operator: one leader sends, the others stand by.

With `cluster.redis_url` set, each replica asks for the operator's lease
(`cluster.leader`; README, "Past one machine").  A standby that gets it finds the
calls still open on chain (`Producer.recover`): Redis keeps no checkpoint, so
losing Redis loses nothing.  The HTTP API is served by every replica alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ..cluster import Leadership, LeadershipLost, connect
from ..config import Settings
from .chain import Chain, ChainError
from .checkpoint import Checkpoint

log = logging.getLogger(__name__)


async def lead_jobs(
    settings: Settings,
    chain: Chain,
    chain_id: int,
    stopping: asyncio.Event,
    make_runner: Callable[[asyncio.Event, asyncio.Event], Awaitable[None]],
) -> None:
    """Stand by until this replica leads, run the jobs while it does; until `stopping`.

    `make_runner(stop, lost)` runs one term of the job loop until `stop` is set,
    abandoning the calls in flight at once when `lost` is set too.
    """
    cluster = settings.cluster
    assert cluster.redis_url is not None
    redis = connect(cluster.redis_url.get_secret_value(), cluster.redis_timeout_s)
    key = Checkpoint.for_service(settings.tangle, chain_id).key
    scope = ":".join(str(value) for value in key.values()) + f":{chain.address}"
    leadership = Leadership(
        redis, prefix=cluster.key_prefix, scope=scope, lease_s=cluster.leader_lease_s
    )

    async def fence() -> None:
        try:
            await leadership.fence()
        except LeadershipLost as error:
            raise ChainError(f"not sent: {error}") from None  # this replica must not send

    chain.fence = fence
    try:
        while await leadership.acquire(stopping):
            term = asyncio.Event()
            holder = asyncio.create_task(leadership.hold(), name="leader-lease")
            relay = asyncio.create_task(_end_term(stopping, leadership.lost, term))
            try:
                await make_runner(term, leadership.lost)
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
