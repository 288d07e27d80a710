"""Nonces for results sent concurrently: consecutive, no gaps after failures, resync."""

from __future__ import annotations

import asyncio

import pytest

from {{ cookiecutter.package_name }}.tangle.chain import NonceManager


class PendingCount:
    """The node's pending transaction count, as eth_getTransactionCount reports it."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.reads = 0

    async def __call__(self) -> int:
        self.reads += 1
        await asyncio.sleep(0)
        return self.value


async def test_concurrent_senders_get_consecutive_nonces() -> None:
    count = PendingCount(5)
    nonces = NonceManager(count)
    taken: list[int] = []

    async def send() -> None:
        async with nonces.reserve() as nonce:
            await asyncio.sleep(0)  # signing and sending yield to the loop
            taken.append(nonce)

    await asyncio.gather(*(send() for _ in range(20)))
    assert sorted(taken) == list(range(5, 25))
    assert count.reads == 1


async def test_a_failed_send_leaves_no_gap() -> None:
    nonces = NonceManager(PendingCount(0))
    async with nonces.reserve() as first:
        pass
    with pytest.raises(RuntimeError):
        async with nonces.reserve() as lost:
            assert lost == 1
            raise RuntimeError("rejected before broadcast")
    async with nonces.reserve() as reused:
        pass
    assert (first, reused) == (0, 1)


async def test_resync_reads_the_chain_again() -> None:
    count = PendingCount(3)
    nonces = NonceManager(count)
    async with nonces.reserve() as nonce:
        assert nonce == 3
    count.value = 10  # another process used the account
    await nonces.resync()
    async with nonces.reserve() as nonce:
        assert nonce == 10
