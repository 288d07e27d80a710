"""One leader among the `run` replicas of an operator: a Redis lease with a fencing token.

One operator key must have exactly one sender (its nonces, its results).  Each
replica asks for the lease; the one holding it is the leader and renews it every
`lease_s / 3`.  Taking a free lease increments a counter, the fencing token
(Kleppmann, "How to do distributed locking"): a value that only grows, so a
leader that stalled and came back can tell it has been replaced.  The chain
cannot check a token, so the replica checks it before every transaction
(`fence()`), and steps down on its own once it has not renewed for `0.8 x
lease_s`, before Redis could give the lease to a standby.  The scan checkpoint
is kept beside the lease and written only under a current token, so a standby
taking over resumes where the leader stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis

from .fleet import REDIS_DOWN, replica_name

log = logging.getLogger(__name__)

# Fraction of the lease after which a leader that could not renew stops sending: the rest
# is margin for clock-rate differences and the renewal's own time in flight.
SAFE_FRACTION = 0.8

_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then
  local holder, token = string.match(current, '^(.*)|(%d+)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return token
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Write the checkpoint only under the current lease; never move it backwards.
_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local saved = tonumber(redis.call('GET', KEYS[2]) or '-1')
if tonumber(ARGV[2]) > saved then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"""


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
        self._token_key = f"{prefix}:leader:{scope}:token"
        self._checkpoint_key = f"{prefix}:leader:{scope}:checkpoint"
        self._valid_until = 0.0
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._save = redis.register_script(_SAVE)

    @property
    def _value(self) -> str:
        return f"{self.name}|{self.token}"

    @property
    def _ttl_ms(self) -> int:
        return int(self.lease_s * 1000)

    async def acquire(self, stopping: asyncio.Event) -> bool:
        """Wait as a standby until this replica leads (True) or `stopping` is set (False)."""
        loop = asyncio.get_running_loop()
        announced = False
        unreachable = False
        while not stopping.is_set():
            sent_at = loop.time()
            try:
                token = int(
                    await self._acquire(
                        keys=[self._lease_key, self._token_key], args=[self.name, self._ttl_ms]
                    )
                )
            except REDIS_DOWN as error:
                if not unreachable:
                    log.warning("leader election: Redis unreachable (%s)", type(error).__name__)
                unreachable = True
                token = 0
            else:
                unreachable = False
            if token:
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.lease_s / 4)
        return False

    async def hold(self) -> None:
        """Renew until the lease is lost (then set `lost` and return); cancel to stop."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.lease_s / 3)
            sent_at = loop.time()
            try:
                renewed = await self._renew(
                    keys=[self._lease_key], args=[self._value, self._ttl_ms]
                )
            except REDIS_DOWN as error:
                if loop.time() < self._valid_until:
                    log.warning("leader lease not renewed (%s); retrying", type(error).__name__)
                    continue
                renewed = 0
            if not renewed:
                log.error("leadership lost (token %s): stopping sending", self.token)
                self._valid_until = 0.0
                self.lost.set()
                return
            self._valid_until = sent_at + self.lease_s * SAFE_FRACTION

    def leads(self) -> bool:
        return self.token is not None and asyncio.get_running_loop().time() < self._valid_until

    async def fence(self) -> None:
        """Raise LeadershipLost unless this replica still holds the lease under its token."""
        if not self.leads():
            raise LeadershipLost(f"the lease for token {self.token} has run out")
        try:
            current = await self.redis.get(self._lease_key)
        except REDIS_DOWN:
            return  # unrenewed for less than the safe fraction: no one else can hold it
        if current is None or _text(current) != self._value:
            self._valid_until = 0.0
            self.lost.set()
            raise LeadershipLost(f"token {self.token} was replaced")

    async def save_checkpoint(self, block: int) -> bool:
        """Store the last processed block under the lease; False when not the leader."""
        try:
            saved = await self._save(
                keys=[self._lease_key, self._checkpoint_key], args=[self._value, block]
            )
        except REDIS_DOWN:
            return False
        return bool(saved)

    async def load_checkpoint(self) -> int | None:
        try:
            value = await self.redis.get(self._checkpoint_key)
        except REDIS_DOWN:
            return None
        return int(value) if value is not None else None

    async def resign(self) -> None:
        """Give the lease up now, so a standby need not wait for it to expire."""
        if self.token is None:
            return
        with contextlib.suppress(*REDIS_DOWN):
            await self._release(keys=[self._lease_key], args=[self._value])
        self._valid_until = 0.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
