"""The fleet state in one process against a real Redis: slots, a reload, Redis absent."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from redis.asyncio import Redis

from {{ cookiecutter.package_name }}.balancer.node import Node
from {{ cookiecutter.package_name }}.cluster import Fleet, connect
from {{ cookiecutter.package_name }}.config import ApiSettings, ClusterSettings

from .conftest import RedisServer, free_port
from balancer.fakes import FakeClient, lb_settings, node_settings


def fleet(url: str, **settings: object) -> Fleet:
    cluster = ClusterSettings.model_validate({"redis_url": SecretStr(url), **settings})
    return Fleet(cluster, redis=connect(url, 0.5), registry=CollectorRegistry())


def node(name: str, limit: int) -> Node:
    return Node(node_settings(name, max_concurrency=limit), FakeClient(name), lb_settings())


async def take(replica: Fleet, target: Node, timeout_s: float = 2.0) -> bool:
    """Admit one request into `target` as the balancer would, waiting for a slot."""
    for _ in range(int(timeout_s / 0.01)):
        if replica.has_room(target):
            target.in_flight += 1
            return True
        await asyncio.sleep(0.01)
    return False


async def test_slots_of_a_removed_node_go_back(redis_server: RedisServer) -> None:
    here = [node("gone", 3)]
    replica = fleet(redis_server.url)
    await replica.start(lambda: here, lambda: None)
    try:
        assert all([await take(replica, here[0]) for _ in range(3)])
        assert not await take(replica, here[0], timeout_s=0.2)
        probe = Redis.from_url(redis_server.url)
        assert await probe.zcard("openrouter:inflight:gone") == 3
        here.clear()  # a reload removed the node
        for _ in range(100):
            if await probe.zcard("openrouter:inflight:gone") == 0:
                break
            await asyncio.sleep(0.02)
        assert await probe.zcard("openrouter:inflight:gone") == 0
        await probe.aclose()
    finally:
        await replica.aclose()


async def test_without_redis_at_start_it_serves_a_share_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    target = node("n", 4)
    replica = fleet(f"redis://127.0.0.1:{free_port()}/0", replicas=2)
    await replica.start(lambda: [target], lambda: None)
    try:
        await asyncio.sleep(1.2)  # two rejoin attempts fail
        assert replica.describe() == {"redis": "degraded", "replicas": 2, "limit_share": "1/2"}
        assert [await take(replica, target, timeout_s=0.05) for _ in range(3)] == [
            True,
            True,
            False,
        ]
    finally:
        await replica.aclose()
    assert caplog.text.count("Redis unreachable") == 1


async def test_a_dead_replicas_slots_free_before_a_waiting_request_gives_up(
    redis_server: RedisServer,
) -> None:
    """Default settings: a replica killed while it held a node's every slot (a leader of
    `run` with its backlog, say) leaves nothing that outlives its lease: a paid job, which
    waits its turn up to its deadline, gets the slot; it never answers `overloaded`."""
    dead, alive = fleet(redis_server.url), fleet(redis_server.url)
    here, there = node("n", 2), node("n", 2)
    await dead.start(lambda: [here], lambda: None)
    await alive.start(lambda: [there], lambda: None)
    try:
        assert all([await take(dead, here) for _ in range(2)])
        assert dead._task is not None
        dead._task.cancel()  # as SIGKILL: its leases stay in Redis, never renewed again
        lease_ttl_s = ClusterSettings().lease_ttl_s
        assert lease_ttl_s < ApiSettings().request_timeout_s / 10  # a job's deadline
        assert await take(alive, there, timeout_s=3 * lease_ttl_s)
    finally:
        await alive.aclose()
        await dead.aclose()


async def test_leases_redis_dropped_are_counted_again_while_in_use(
    redis_server: RedisServer,
) -> None:
    """After FLUSHDB the requests running here are registered again at the next renewal,
    so another replica cannot fill the node on top of them."""
    a, b = fleet(redis_server.url, lease_ttl_s=2.0), fleet(redis_server.url, lease_ttl_s=2.0)
    here, there = node("n", 2), node("n", 2)
    await a.start(lambda: [here], lambda: None)
    await b.start(lambda: [there], lambda: None)
    probe = Redis.from_url(redis_server.url)
    try:
        assert all([await take(a, here) for _ in range(2)])
        await probe.flushdb()
        for _ in range(300):
            if await probe.zcard("openrouter:inflight:n") == 2:
                break
            await asyncio.sleep(0.01)
        assert await probe.zcard("openrouter:inflight:n") == 2
        assert not await take(b, there, timeout_s=1.0)
        assert here.in_flight + there.in_flight == 2
    finally:
        await probe.aclose()
        await a.aclose()
        await b.aclose()
