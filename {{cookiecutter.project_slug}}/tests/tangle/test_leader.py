"""Two `run` replicas for one operator on the local chain, sharing a real Redis.

One leads and answers; it is killed (SIGKILL) while jobs keep arriving; the
standby takes the lease over, finds the calls still open on chain (its own
DATA_DIR is empty, Redis keeps no checkpoint), and every call ends with exactly
one result.  Fencing: a replaced leader broadcasts nothing more, a lease that
cannot be read is not held, and the token grows across a Redis restart.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from eth_account import Account

from {{ cookiecutter.package_name }}.cluster import Leadership, LeadershipLost, connect
from {{ cookiecutter.package_name }}.tangle.abi import SUBMIT_HEARTBEAT_DIRECT
from {{ cookiecutter.package_name }}.tangle.chain import Chain, ChainError
from {{ cookiecutter.package_name }}.tangle.cli import submit_job, wait_for_result

from .conftest import MODEL, OPERATOR_KEY, Operator, OperatorFactory, anvil, free_port, local_tangle
from .test_e2e import assert_answered_once, job_input
from .test_faults import eventually, pool
from cluster.conftest import RedisServer, redis_server  # noqa: F401  (the fixture)

LEASE_S = 2.0
# Appended to the config's [tangle] table, then a table of its own.  Without a checkpoint
# a replica's log scan starts at the head: calls the standby answers from before its term
# can only come from the chain sweep.
CLUSTER = (
    f"lookback_blocks = 0\n\n[cluster]\nleader_lease_s = {LEASE_S}\n"
    "lease_ttl_s = 1.0\nredis_timeout_s = 0.25\n"
)


async def logged(operator: Operator, text: str, timeout_s: float = 30.0) -> float:
    """When (time.monotonic) `text` first showed in the operator's log, polling every 20 ms."""
    deadline = time.monotonic() + timeout_s
    while text not in operator.output():
        assert time.monotonic() < deadline, f"never logged {text!r}:\n{operator.output()}"
        await asyncio.sleep(0.02)
    return time.monotonic()


async def leader_and_standby(
    start_operator: OperatorFactory,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> tuple[Operator, Operator]:
    """Two replicas sharing `redis_server`, each with its own DATA_DIR: one leads."""

    def replica(name: str) -> dict[str, str]:
        return {
            "OPENROUTER_REDIS_URL": redis_server.url,
            "OPENROUTER_API_PORT": str(free_port()),
            "DATA_DIR": str(tmp_path / f"data-{name}"),
        }

    leader = await start_operator(tangle=CLUSTER, **replica("a"))
    await logged(leader, "leader for")
    standby = await start_operator(tangle=CLUSTER, **replica("b"))
    await logged(standby, "standby:")
    return leader, standby


async def test_a_standby_takes_over_and_answers_each_call_once(
    start_operator: OperatorFactory,
    customer: Chain,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    leader, standby = await leader_and_standby(start_operator, redis_server, tmp_path)

    request = job_input(
        {"type": "chat.completion", "model": MODEL, "messages": [{"role": "user", "content": "n"}]}
    )
    calls: list[tuple[int, int]] = []

    async def customer_keeps_submitting(count: int) -> None:
        for _ in range(count):
            calls.append(await submit_job(customer, 0, 0, request))
            await asyncio.sleep(0.1)

    await customer_keeps_submitting(4)
    await wait_for_result(customer, 0, *calls[0], timeout_s=30)
    leader.process.kill()
    killed_at = time.monotonic()
    await customer_keeps_submitting(6)  # arriving while nobody leads, then to the new leader
    # How soon is printed, not asserted: on a busy machine it is the scheduler's to say.
    took_over_at = await logged(standby, "leader for")
    print(f"\nstandby leads {took_over_at - killed_at:.2f} s after the leader was killed")

    await assert_answered_once(customer, calls)
    assert await standby.stop() == 0
    # The standby computed nothing the leader had answered (a duplicate would be refused).
    assert "already answered (" not in leader.output() + standby.output()
    assert "Traceback" not in standby.output()


def lease(url: str) -> Leadership:
    return Leadership(connect(url, 0.25), prefix="test", scope="operator", lease_s=LEASE_S)


async def test_a_replaced_leader_broadcasts_no_replacement_of_its_stuck_transaction(
    isolated_chain: Chain,
    rpc_url: str,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    chain = isolated_chain
    first = lease(redis_server.url)
    assert await first.acquire(asyncio.Event())
    holder = asyncio.create_task(first.hold())
    operator = Chain(local_tangle(rpc_url, replace_after_s=1), Account.from_key(OPERATOR_KEY))

    async def fence() -> None:
        try:
            await first.fence()
        except LeadershipLost as error:
            raise ChainError(str(error)) from None

    operator.fence = fence
    await anvil(chain, "evm_setAutomine", False)
    try:
        sending = asyncio.create_task(
            operator.send(operator.status_registry, SUBMIT_HEARTBEAT_DIRECT, 0, 0, 0, b"")
        )

        async def in_pool() -> bool:
            return bool(await pool(chain))

        await eventually(in_pool, "the transaction is in the mempool")
        before = {tx["hash"] for tx in (await pool(chain)).values()}
        # Another replica takes the lease while the transaction waits to be mined: the
        # replacement due after replace_after_s must not go out.
        await first.redis.delete("test:leader:operator")
        second = lease(redis_server.url)
        assert await second.acquire(asyncio.Event())
        with pytest.raises(ChainError):
            await asyncio.wait_for(sending, timeout=30)
        assert {tx["hash"] for tx in (await pool(chain)).values()} == before
    finally:
        holder.cancel()
        await operator.aclose()


async def test_a_lease_that_cannot_be_read_is_not_held(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    leader = lease(redis_server.url)
    assert await leader.acquire(asyncio.Event())
    await leader.fence()
    redis_server.kill()
    with pytest.raises(LeadershipLost):
        await leader.fence()


async def test_the_fencing_token_grows_across_a_redis_restart(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    first = lease(redis_server.url)
    assert await first.acquire(asyncio.Event())
    await first.resign()
    redis_server.kill()
    redis_server.start()  # empty: no persistence
    second = lease(redis_server.url)
    assert await second.acquire(asyncio.Event())
    assert first.token is not None and second.token is not None
    assert second.token > first.token


async def test_a_standby_after_redis_restarted_empty_answers_every_call_left(
    start_operator: OperatorFactory,
    customer: Chain,
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The shared checkpoint is gone and the standby never led (no file of its own, and
    `lookback_blocks` 0): only the chain can tell it which calls are still open."""

    leader, standby = await leader_and_standby(start_operator, redis_server, tmp_path)
    request = job_input(
        {"type": "chat.completion", "model": MODEL, "messages": [{"role": "user", "content": "n"}]}
    )
    calls = [await submit_job(customer, 0, 0, request) for _ in range(3)]
    await wait_for_result(customer, 0, *calls[-1], timeout_s=30)
    leader.process.kill()
    redis_server.kill()
    redis_server.start()
    calls += [await submit_job(customer, 0, 0, request) for _ in range(6)]
    await logged(standby, "leader for")
    await assert_answered_once(customer, calls)
    assert await standby.stop() == 0
    assert "Traceback" not in standby.output()
