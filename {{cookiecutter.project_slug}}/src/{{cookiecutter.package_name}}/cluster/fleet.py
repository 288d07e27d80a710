"""Node state shared by the replicas of one provider through Redis.

What it guarantees is in the README ("Past one machine"); what is shared, keyed by
node name under `cluster.key_prefix`:

- in-flight slots: a sorted set of slot leases per node, scored by their expiry on
  Redis's clock.  The balancer asks without I/O; a background loop takes slots from
  Redis when requests here find none and gives back the ones it does not use.
- ejections, Retry-After cooldowns and failed health checks: a hash per node with
  the time each ends.  Ends only move later, so two replicas never undo each other's
  finding.
- the replicas alive: a sorted set of heartbeats, counted for the degraded share.

Without Redis a replica keeps `1/replicas` of each node's limit; after rejoining it
keeps that share for two rejoin rounds, while the other replicas rejoin too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import secrets
import socket
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..backoff import pause
from ..balancer.node import Breaker, Node
from ..balancer.shared import SharedState
from ..config import ClusterSettings

log = logging.getLogger(__name__)

# Errors that mean "Redis is not there": the replica degrades, it never fails a request.
REDIS_DOWN = (RedisError, OSError, TimeoutError)
# How often a degraded replica asks whether Redis is back; after rejoining it keeps its
# local share for two of these, while the other replicas rejoin too.
REJOIN_INTERVAL_S = 0.5
# A node is wanted here this long after a request last found no slot for it.
WANT_S = 1.0
# Shortest pause between two rounds of the slot loop (a burst of refusals is one round).
MIN_ROUND_S = 0.005
# A node's ejection end, cooldown end and health, as shared.
_Finding = tuple[float, float, bool]

# Lua runs atomically in Redis and reads Redis's clock, so replicas' clocks never matter.
_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
# ARGV: limit, ttl_ms, lease ids...; adds as many of the ids as there are free slots.
_TAKE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local free = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
local taken = 0
for i = 3, #ARGV do
  if taken >= free then break end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[i])
  taken = taken + 1
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return taken
"""
)
# ARGV: ttl_ms, how many of the ids requests here run in, ids.  Renews them; a lease Redis
# dropped (expired, FLUSHDB, a restart) is added again while a request runs in it, else
# returned to be forgotten: its slot may be another replica's by now.
_RENEW = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
local gone = {}
for i = 3, #ARGV do
  if i - 2 <= tonumber(ARGV[2]) or redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  else
    gone[#gone + 1] = ARGV[i]
  end
end
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return gone
"""
)
# KEYS: a sorted set of replicas (wanting a node, or alive); ARGV: replica, ttl_ms, 1 to add
# it.  Returns the replicas in the set.
_MEMBERS = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
end
return redis.call('ZCARD', KEYS[1])
"""
)
# ARGV: ejected_ms, cooldown_ms, down_ms (> 0 sets, < 0 clears), key ttl_ms.
_PUSH = (
    _NOW
    + """
local function later(field, ms)
  if ms > 0 then
    local ends = now + ms
    if ends > tonumber(redis.call('HGET', KEYS[1], field) or '0') then
      redis.call('HSET', KEYS[1], field, ends)
    end
  end
end
later('ejected', tonumber(ARGV[1]))
later('cooldown', tonumber(ARGV[2]))
local down = tonumber(ARGV[3])
if down > 0 then redis.call('HSET', KEYS[1], 'down', now + down)
elseif down < 0 then redis.call('HSET', KEYS[1], 'down', 0) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
)
# Per node key: ejected, cooldown and down as milliseconds from now (0 when over).
_PULL = (
    _NOW
    + """
local out = {}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'ejected', 'cooldown', 'down')
  for j = 1, 3 do out[#out + 1] = math.max((tonumber(v[j]) or 0) - now, 0) end
end
return out
"""
)
_SCRIPTS = {"take": _TAKE, "renew": _RENEW, "members": _MEMBERS, "push": _PUSH, "pull": _PULL}


def connect(url: str, timeout_s: float) -> Redis:
    """A client that fails fast: no retries, short timeouts, so a lost Redis degrades the
    replica within `timeout_s` instead of holding requests."""
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def replica_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Fleet(SharedState):
    """The balancer's shared state over Redis (or, with `redis=None`, a local share)."""

    def __init__(
        self,
        settings: ClusterSettings,
        *,
        redis: Redis | None,
        registry: CollectorRegistry,
        health_interval_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.replica = replica_name()
        self._health_interval_s = health_interval_s
        self._prefix = settings.key_prefix
        self._ttl_ms = int(settings.lease_ttl_s * 1000)
        self._connected = False
        self._ever_connected = False
        self._was_degraded = False
        self._settled_at = 0.0
        self._replicas_seen = 1
        self._owned: dict[str, list[str]] = {}  # slot leases held here, per node
        self._wanted: dict[str, float] = {}  # node -> until when requests here want it
        self._refused: dict[str, int] = {}  # requests that found no slot since the last round
        self._wanting: dict[str, int] = {}  # replicas wanting each node, as last seen
        self._seen: dict[str, _Finding] = {}  # what was last pushed or pulled per node
        self._dirty: set[str] = set()
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._nodes: Callable[[], Iterable[Node]] = tuple
        self._changed: Callable[[], None] = lambda: None
        self._task: asyncio.Task[None] | None = None
        self._scripts = (
            {name: redis.register_script(body) for name, body in _SCRIPTS.items()}
            if redis is not None
            else {}
        )
        self._connected_gauge = Gauge(
            "cluster_redis_connected",
            "1 when node state is shared through Redis; 0 when degraded to local state.",
            registry=registry,
        )
        self._share_gauge = Gauge(
            "cluster_limit_share",
            "Each node's max_concurrency is divided by this here (1: the fleet-wide limit holds).",
            registry=registry,
        )
        self._replicas_gauge = Gauge(
            "cluster_replicas", "Replicas alive as last seen in Redis.", registry=registry
        )
        self._errors = Counter(
            "cluster_redis_errors", "Redis calls that failed or timed out.", registry=registry
        )
        self._publish_gauges()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, nodes: Callable[[], Iterable[Node]], changed: Callable[[], None]) -> None:
        """Begin sharing; `changed` is told when slots arrive or a peer changed a node."""
        self._nodes = nodes
        self._changed = changed
        for node in nodes():
            self._seen[node.name] = _finding(node)
        if self.redis is None:
            return
        await self._try_rejoin()
        if not self._connected:
            self._lost(None)
        self._task = asyncio.create_task(self._run(), name="cluster-sync")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.redis is None:
            return
        if self._connected:
            # Leave at once rather than after the leases' expiry.
            with contextlib.suppress(*REDIS_DOWN):
                await self._forget(self._owned, leaving=True)
        with contextlib.suppress(*REDIS_DOWN):
            await self.redis.aclose()

    # --- the balancer's SharedState (no I/O) ------------------------------------------------

    def has_room(self, node: Node) -> bool:
        in_use = node.in_flight + node.reserved
        if not self._connected:
            return in_use < self.local_limit(node)
        if in_use < min(len(self._owned.get(node.name, ())), self._cap(node)):
            return True
        # Ask the loop for a slot; the balancer looks again when one arrives.
        self._refused[node.name] = self._refused.get(node.name, 0) + 1
        self._wanted[node.name] = _now() + WANT_S
        self._wake.set()
        return False

    def released(self, node: Node) -> None:
        if self._wanting.get(node.name, 0) > 1:
            self._wake.set()  # another replica waits: give the slot back soon

    def ejected(self, node: Node) -> None:
        self._wake.set()  # the next round pushes it

    # --- shares and description ---------------------------------------------------------

    def share(self) -> int:
        """What each node's limit is divided by here: 1 while Redis holds the fleet limit."""
        if self._connected and _now() >= self._settled_at:
            return 1
        return max(self.settings.replicas, self._replicas_seen)

    def local_limit(self, node: Node) -> int:
        return max(1, node.max_concurrency // self.share())

    def _cap(self, node: Node) -> int:
        """Slots this replica may hold: its fair part while others want the node too."""
        wanting = max(self._wanting.get(node.name, 0), 1)
        return min(math.ceil(node.max_concurrency / wanting), self.local_limit(node))

    def describe(self) -> dict[str, Any]:
        """For `/ready`: how this replica shares state now."""
        mode = "local" if self.redis is None else "connected" if self._connected else "degraded"
        return {
            "redis": mode,
            "replicas": self._replicas_seen if self._connected else self.share(),
            "limit_share": f"1/{self.share()}",
        }

    # --- the background loop --------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        this = asyncio.current_task()
        while True:
            if this is not None and this.cancelling():
                # redis-py's cleanup of a cancelled command can raise a RedisError in place
                # of the CancelledError, which the handlers below take for a lost Redis:
                # aclose() then waited for this task for ever (2 in 10 runs of test_fleet).
                raise asyncio.CancelledError
            if not self._connected:
                await asyncio.sleep(REJOIN_INTERVAL_S)
                await self._try_rejoin()
                renewed = loop.time()
                continue
            # Renewal is due every third of the lease, whatever the sync interval.
            renew_in = renewed + self.settings.lease_ttl_s / 3 - loop.time()
            await pause(self._wake, max(min(self._pause(), renew_in), 0))
            self._wake.clear()
            try:
                if loop.time() - renewed >= self.settings.lease_ttl_s / 3:
                    renewed = loop.time()
                    await self._renew()
                await self._round()
            except REDIS_DOWN as error:
                self._lost(error)
            except Exception:  # a bug here must not stop sharing for good
                log.exception("cluster sync failed")
                await asyncio.sleep(self.settings.sync_interval_s)
            await asyncio.sleep(MIN_ROUND_S)

    def _pause(self) -> float:
        """Quick rounds while requests here wait for slots, else every sync_interval_s."""
        now = _now()
        if any(until > now for until in self._wanted.values()):
            return min(0.02, self.settings.sync_interval_s)
        return self.settings.sync_interval_s

    async def _round(self) -> None:
        """Take and give back slots, push what changed here, heartbeat, pull peers' findings."""
        assert self.redis is not None
        nodes = list(self._nodes())
        now = _now()
        for node in nodes:
            # A new finding: an ejection or cooldown ending later, or a health change.
            ejected, cooldown, healthy = finding = _finding(node)
            seen = self._seen.setdefault(node.name, finding)
            if ejected > seen[0] + 0.001 or cooldown > seen[1] + 0.001 or healthy != seen[2]:
                self._dirty.add(node.name)
        pushed = [node for node in nodes if node.name in self._dirty]
        taking: dict[str, list[str]] = {}
        # Slots of nodes a reload removed go back at once.
        current = {node.name for node in nodes}
        removed = {
            name: self._owned.pop(name)
            for name in list(self._owned)
            if name not in current and self._owned[name]
        }
        giving: dict[str, list[str]] = {}
        health_ttl = int(self._health_interval_s * 2000)
        keep_ms = max(self._ttl_ms, health_ttl) * 4  # long enough for a replica pulling late
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, ids in removed.items():
                pipe.zrem(self._key("inflight", name), *ids)
            for node in nodes:
                owned = self._owned.setdefault(node.name, [])
                wanted = self._wanted.get(node.name, 0.0) > now
                idle = len(owned) - (node.in_flight + node.reserved)
                cap = self._cap(node)
                if wanted and len(owned) < cap:
                    count = min(max(self._refused.get(node.name, 0), 1), cap - len(owned))
                    taking[node.name] = [self._lease() for _ in range(count)]
                    await self._scripts["take"](
                        keys=[self._key("inflight", node.name)],
                        args=[node.max_concurrency, self._ttl_ms, *taking[node.name]],
                        client=pipe,
                    )
                # Unused slots go back: all of them once nothing here wants the node, the
                # ones above the fair part while other replicas want it.
                surplus = idle if not wanted else min(idle, len(owned) - cap)
                if surplus > 0:
                    giving[node.name] = [owned.pop() for _ in range(surplus)]
                    pipe.zrem(self._key("inflight", node.name), *giving[node.name])
                await self._scripts["members"](
                    keys=[self._key("want", node.name)],
                    args=[self.replica, int(WANT_S * 1000), "1" if wanted else "0"],
                    client=pipe,
                )
            for node in pushed:
                await self._scripts["push"](
                    keys=[self._key("node", node.name)],
                    args=[
                        int(max(_ejected_until(node) - now, 0) * 1000),
                        int(max(node.cooldown_until - now, 0) * 1000),
                        health_ttl if not node.healthy else -1,
                        keep_ms,
                    ],
                    client=pipe,
                )
            await self._scripts["members"](
                keys=[self._key("replicas")], args=[self.replica, self._ttl_ms, "1"], client=pipe
            )
            await self._scripts["pull"](
                keys=[self._key("node", node.name) for node in nodes], client=pipe
            )
            try:
                results = list(await pipe.execute())
            except BaseException:
                for name, ids in [*giving.items(), *removed.items()]:
                    self._owned.setdefault(name, []).extend(ids)  # not known to be given back
                raise
        self._refused.clear()
        self._dirty.difference_update(node.name for node in pushed)
        results = results[len(removed) :]
        got = False
        for node in nodes:
            if node.name in taking:
                count = int(results.pop(0))
                self._owned[node.name].extend(taking[node.name][:count])
                got = got or count > 0
            if node.name in giving:
                results.pop(0)
            self._wanting[node.name] = int(results.pop(0))
        alive = max(int(results[-2]), 1)
        # A restarted Redis knows only the replicas that rejoined so far: until the others
        # had their chance, the share stays as it was.
        settling = now < self._settled_at
        self._replicas_seen = max(alive, self._replicas_seen) if settling else alive
        if self._apply(nodes, [int(value) for value in results[-1]]) or got:
            self._changed()
        self._publish_gauges()

    def _apply(self, nodes: list[Node], remaining_ms: list[int]) -> bool:
        """Take peers' findings into the nodes here; True when any changed."""
        now = _now()
        any_changed = False
        for index, node in enumerate(nodes):
            ejected, cooldown, down = (
                value / 1000 for value in remaining_ms[3 * index : 3 * index + 3]
            )
            changed = False
            if ejected > 0 and (
                node.breaker is not Breaker.OPEN or node.ejected_until < now + ejected - 0.05
            ):
                # Another replica ejected it: out of rotation here too, until the same end.
                node.breaker = Breaker.OPEN
                node.ejected_until = now + ejected
                node.trial_in_flight = False
                changed = True
            if cooldown > 0 and node.cooldown_until < now + cooldown - 0.05:
                node.cooldown_until = now + cooldown
                changed = True
            if down > 0 and node.healthy:
                node.healthy = False
                node.last_error = "a failed health check reported by another replica"
                changed = True
            if changed:
                self._seen[node.name] = _finding(node)
                any_changed = True
        return any_changed

    async def _renew(self) -> None:
        """Extend the leases held here; forget the idle ones Redis dropped."""
        assert self.redis is not None
        used = {node.name: node.in_flight + node.reserved for node in self._nodes()}
        held = [(name, ids) for name, ids in self._owned.items() if ids]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, ids in held:
                await self._scripts["renew"](
                    keys=[self._key("inflight", name)],
                    args=[self._ttl_ms, used.get(name, 0), *ids],
                    client=pipe,
                )
            results = await pipe.execute()
        for (_name, ids), gone in zip(held, results, strict=True):
            if gone:
                ids[:] = [lease for lease in ids if lease.encode() not in gone]

    async def _forget(self, held: dict[str, list[str]], *, leaving: bool = False) -> None:
        assert self.redis is not None
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, ids in held.items():
                if ids:
                    pipe.zrem(self._key("inflight", name), *ids)
            if leaving:
                pipe.zrem(self._key("replicas"), self.replica)
            await pipe.execute()

    async def _try_rejoin(self) -> None:
        assert self.redis is not None
        stale = self._owned
        try:
            # Connections from before the loss are dead; without retries each would
            # fail one call and degrade the replica again.
            await self.redis.connection_pool.disconnect()
            await self.redis.ping()
            if any(stale.values()):
                await self._forget(stale)
            # Requests admitted while degraded hold no lease: give each one in flight (or
            # handed a slot) a lease, so the fleet counts them.  No await between counting
            # them and switching to Redis: a request admitted in between would count nowhere.
            self._owned = {
                node.name: [self._lease() for _ in range(node.in_flight + node.reserved)]
                for node in self._nodes()
            }
            if self._was_degraded:
                self._settled_at = _now() + 2 * REJOIN_INTERVAL_S
            self._connected = True
            await self._renew()
            await self._round()
        except REDIS_DOWN as error:
            self._connected = False
            self._errors.inc()
            log.debug("Redis still unreachable: %s", type(error).__name__)
            return
        if self._ever_connected:
            log.warning("Redis reachable again: node state is shared with the fleet")
        else:
            log.info("sharing node state through Redis as replica %s", self.replica)
        self._ever_connected = True
        self._publish_gauges()

    def _lost(self, error: BaseException | None) -> None:
        if error is not None:
            self._errors.inc()
        if not self._connected and (error is not None or self._ever_connected):
            return  # logged once, when it went
        self._connected = False
        self._was_degraded = True
        self._publish_gauges()
        # Slots held here may be counted by nobody now; the waiters look again.
        self._changed()
        log.warning(
            "Redis unreachable (%s): serving with local state and 1/%d of each node's "
            "max_concurrency until it returns",
            type(error).__name__ if error else "no answer at start",
            self.share(),
        )

    def _lease(self) -> str:
        return f"{self.replica}:{next(self._ids)}"

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self._prefix}:{kind}:{name}" if name else f"{self._prefix}:{kind}"

    def _publish_gauges(self) -> None:
        self._connected_gauge.set(1 if self._connected else 0)
        self._share_gauge.set(self.share())
        self._replicas_gauge.set(self._replicas_seen)


def _ejected_until(node: Node) -> float:
    return node.ejected_until if node.breaker is Breaker.OPEN else 0.0


def _finding(node: Node) -> _Finding:
    """When the node's ejection and cooldown end (in the loop's clock), and its health."""
    return _ejected_until(node), node.cooldown_until, node.healthy


def _now() -> float:
    return asyncio.get_running_loop().time()
