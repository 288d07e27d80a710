"""One leader among the `run` replicas of an operator: a Redis lock with a fencing token.

One operator key must have exactly one sender (its nonces, its results).  Each
replica asks for the lease (redis-py's `Lock`, with a TTL of `lease_s`); the one
holding it is the leader and renews it every `lease_s / 3`.  Its fencing token
(Kleppmann, "How to do distributed locking") is Redis's clock read once the lock
is taken and checked still held, so a later leader always has a larger one, also
after Redis restarted empty.  The chain cannot check a token, so the replica
checks the lease before every broadcast (`fence()`): a failed or late read counts
as lost, and a leader that has not renewed for `0.8 x lease_s` stops on its own,
before Redis could give the lease to a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from ..backoff import pause
from .fleet import REDIS_DOWN, replica_name

log = logging.getLogger(__name__)

# Fraction of the lease after which a leader that could not renew stops sending: the rest
# is margin for clock-rate differences and the renewal's own time in flight.
SAFE_FRACTION = 0.8


class LeadershipLost(Exception):
    """This replica no longer holds the lease: it must not send."""


class Leadership:
    """The lease for one scope (chain, contract, service, operator)."""

    def __init__(self, redis: Redis, *, prefix: str, scope: str, lease_s: float) -> None:
        self.redis = redis
        self.name = replica_name()
        self.lease_s = lease_s
        self.token: int | None = None
        self.lost = asyncio.Event()
        self._lease_key = f"{prefix}:leader:{scope}"
        self._lock = Lock(redis, self._lease_key, timeout=lease_s, thread_local=False)
        self._valid_until = 0.0

    async def _take(self) -> int | None:
        """One try for the lock; the fencing token when taken."""
        value = f"{self.name}|{secrets.token_hex(8)}"
        if not await self._lock.acquire(blocking=False, token=value):
            return None
        seconds, micros = await self.redis.time()
        # Still held after the clock was read: no later leader can have an earlier token.
        if not await self._lock.owned():
            return None
        return seconds * 1_000_000 + micros

    async def acquire(self, stopping: asyncio.Event) -> bool:
        """Wait as a standby until this replica leads (True) or `stopping` is set (False)."""
        loop = asyncio.get_running_loop()
        announced = False
        unreachable = False
        while not stopping.is_set():
            sent_at = loop.time()
            try:
                token = await self._take()
            except REDIS_DOWN as error:
                if not unreachable:
                    log.warning("leader election: Redis unreachable (%s)", type(error).__name__)
                unreachable = True
                token = None
            else:
                unreachable = False
            if token is not None:
                self.token = token
                self._valid_until = sent_at + self.lease_s * SAFE_FRACTION
                self.lost.clear()
                log.info("leader for %s with fencing token %d", self._lease_key, token)
                return True
            if not announced:
                log.info(
                    "standby: another replica leads %s; waiting for its lease", self._lease_key
                )
                announced = True
            await pause(stopping, self.lease_s / 4)
        return False

    async def hold(self) -> None:
        """Renew until the lease is lost (then set `lost` and return); cancel to stop."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.lease_s / 3)
            sent_at = loop.time()
            try:
                await self._lock.reacquire()
            except LockError:
                self._step_down()
                return
            except REDIS_DOWN as error:
                if loop.time() < self._valid_until:
                    log.warning("leader lease not renewed (%s); retrying", type(error).__name__)
                    continue
                self._step_down()
                return
            self._valid_until = sent_at + self.lease_s * SAFE_FRACTION

    def _step_down(self) -> None:
        if not self.lost.is_set():
            log.error("leadership lost (token %s): stopping sending", self.token)
        self._valid_until = 0.0
        self.lost.set()

    def leads(self) -> bool:
        return self.token is not None and asyncio.get_running_loop().time() < self._valid_until

    async def fence(self) -> None:
        """Raise LeadershipLost unless this replica holds the lease now: a read that
        fails, or answers after the lease may have run out, counts as lost."""
        if not self.leads():
            raise LeadershipLost(f"the lease for token {self.token} has run out")
        try:
            held = await self._lock.owned()
        except REDIS_DOWN as error:
            raise LeadershipLost(f"the lease could not be read ({type(error).__name__})") from None
        if not held:
            self._step_down()
            raise LeadershipLost(f"token {self.token} was replaced")
        if not self.leads():
            raise LeadershipLost(f"the lease for token {self.token} ran out during the check")

    async def resign(self) -> None:
        """Give the lease up now, so a standby need not wait for it to expire."""
        if self.token is None:
            return
        with contextlib.suppress(LockError, *REDIS_DOWN):
            await self._lock.release()
        self._valid_until = 0.0
