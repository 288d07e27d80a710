"""Failover: retries on another node before the first chunk, none after, never two
attempts in flight at once, and ejection of a failing node."""

from __future__ import annotations

import asyncio
import random

import pytest

from {{ cookiecutter.package_name }}.balancer import Balancer
from {{ cookiecutter.package_name }}.llm.errors import (
    InvalidRequestError,
    OverloadedError,
    UpstreamError,
    UpstreamUnavailableError,
)

from .fakes import FakeClient, Tracker, chat, node_settings, settings


def fleet(count: int, **lb: object) -> tuple[Balancer, list[FakeClient], Tracker]:
    lb.setdefault("strategy", "round_robin")
    instance = Balancer(settings(**lb), rng=random.Random(3))
    tracker = Tracker()
    clients = [FakeClient(f"n{index}", tracker=tracker) for index in range(count)]
    for client in clients:
        instance.add_node(node_settings(client.name), client)
    return instance, clients, tracker


async def test_retryable_failure_is_retried_on_another_node() -> None:
    instance, clients, tracker = fleet(3)
    clients[0].fail = [UpstreamUnavailableError("refused")]
    clients[1].fail = [UpstreamError("500")]
    response = await instance.chat_completion(chat())
    assert response.choices[0].message.content == "n2"
    assert [len(client.seen_models) for client in clients] == [1, 1, 1]
    assert tracker.most == 1  # one attempt in flight at a time


async def test_retries_stop_at_max_retries_with_the_last_error() -> None:
    instance, clients, _ = fleet(4, max_retries=2)
    for client in clients:
        client.fail = [UpstreamError(f"{client.name} broke")]
    with pytest.raises(UpstreamError) as caught:
        await instance.chat_completion(chat())
    assert sum(len(client.seen_models) for client in clients) == 3
    assert caught.value.message.endswith("broke")


async def test_a_node_is_not_retried_twice_for_one_request() -> None:
    instance, clients, _ = fleet(2, max_retries=5)
    for client in clients:
        client.fail = [UpstreamError("a"), UpstreamError("b")]
    with pytest.raises(UpstreamError):
        await instance.chat_completion(chat())
    assert [len(client.seen_models) for client in clients] == [1, 1]


async def test_client_errors_are_not_retried_nor_held_against_the_node() -> None:
    instance, clients, _ = fleet(2, eject_consecutive_failures=1)
    clients[0].fail = [InvalidRequestError("bad temperature")]
    with pytest.raises(InvalidRequestError):
        await instance.chat_completion(chat())
    assert len(clients[1].seen_models) == 0
    assert all(state.state == "healthy" for state in instance.node_states())


async def test_stream_retries_before_the_first_chunk() -> None:
    instance, clients, tracker = fleet(2)
    clients[0].fail = [OverloadedError("busy", retry_after=1)]
    chunks = [chunk async for chunk in instance.stream_chat_completion(chat())]
    assert [chunk.choices[0].delta.content for chunk in chunks] == ["n1"] * 3
    assert tracker.most == 1
    assert tracker.active == 0


async def test_stream_failure_after_the_first_chunk_is_raised_not_retried() -> None:
    instance, clients, tracker = fleet(2)
    clients[0].fail_mid_stream = UpstreamError("died mid-stream")
    received = []
    with pytest.raises(UpstreamError):
        async for chunk in instance.stream_chat_completion(chat()):
            received.append(chunk.choices[0].delta.content)
    assert received == ["n0"]
    assert clients[1].seen_models == []
    assert tracker.active == 0
    assert instance.node_states()[0].errors_total == 1


async def test_unexpected_client_exception_becomes_a_retryable_upstream_error() -> None:
    instance, clients, _ = fleet(2)
    clients[0].fail = [RuntimeError("bug")]  # type: ignore[list-item]
    response = await instance.chat_completion(chat())
    assert response.choices[0].message.content == "n1"


async def test_failing_node_is_ejected_and_the_rest_serve() -> None:
    instance, clients, _ = fleet(3, eject_consecutive_failures=2, ejection_base_s=60)
    clients[0].fail = [UpstreamError("boom")] * 100
    for _ in range(12):
        await instance.chat_completion(chat())
    states = {state.name: state for state in instance.node_states()}
    assert states["n0"].state == "ejected"
    assert states["n0"].ejected
    # Two failures ejected it; after that it got nothing more.
    assert len(clients[0].seen_models) == 2


async def test_ejected_node_is_readmitted_by_a_half_open_trial() -> None:
    instance, clients, _ = fleet(2, eject_consecutive_failures=1, ejection_base_s=0.01)
    clients[0].fail = [UpstreamError("boom")]
    await instance.chat_completion(chat())
    assert instance.node_states()[0].state == "ejected"
    await asyncio.sleep(0.02)
    assert instance.node_states()[0].state == "half_open"
    answers = {
        (await instance.chat_completion(chat())).choices[0].message.content for _ in range(4)
    }
    assert "n0" in answers
    assert instance.node_states()[0].state == "healthy"


@pytest.mark.parametrize("strategy", ["latency_based", "power_of_two"])
async def test_a_node_failing_fast_loses_its_traffic(strategy: str) -> None:
    instance, clients, _ = fleet(2, strategy=strategy, eject_consecutive_failures=100)
    now = asyncio.get_running_loop().time()
    for node, latency_ms in zip(instance.nodes(), (40.0, 50.0), strict=True):
        node.succeeded(latency_ms, now)  # n0 measured the faster
    clients[0].fail = [UpstreamUnavailableError("503 in no time")]
    await instance.chat_completion(chat())  # n0 is chosen, fails fast, n1 answers
    assert len(clients[0].seen_models) == 1
    answers = {
        (await instance.chat_completion(chat())).choices[0].message.content for _ in range(10)
    }
    assert answers == {"n1"}
    assert len(clients[0].seen_models) == 1
