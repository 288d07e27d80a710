"""`serve --workers 2` without Redis: two processes on one port, each with half of each limit."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from typing import Any

import httpx

from .conftest import ReplicaFactory, node_config
from .test_replicas import chat


async def test_two_workers_share_the_port_and_split_each_node_limit(
    start_replica: ReplicaFactory, counted_node: Any
) -> None:
    sim, counter = await counted_node(ttft_s=0.5, output_tokens=2, max_concurrency=64)
    replica = await start_replica(node_config([("slow", sim.url, 4)]), "--workers", "2")
    for _ in range(300):  # the first worker answers before the second has started
        if replica.output().count("Application startup complete") == 2:
            break
        await asyncio.sleep(0.05)
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        ready = await replica.ready(client)
        statuses = Counter(await asyncio.gather(*(chat(client, replica) for _ in range(16))))
    print(f"\nserve --workers 2, node limit 4: peak at node {counter.peak}, statuses {statuses}")
    assert ready["cluster"] == {"redis": "local", "replicas": 2, "limit_share": "1/2"}
    assert set(statuses) <= {200, 429}
    # Each worker allows 2: more than 2 at once means both workers served.
    assert 2 < counter.peak <= 4

    replica.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(replica.process.wait(), 20) == 0
    async with httpx.AsyncClient() as client:
        try:
            await client.get(f"{replica.url}/health")
        except httpx.ConnectError:
            pass
        else:
            raise AssertionError("a worker still answers after the parent stopped")
    assert "with 2 workers" in replica.output()
