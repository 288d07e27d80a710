"""The admission queue: first in, first out; one waiter woken per freed slot; a slot handed
to a waiter that leaves is passed on, never lost."""

from __future__ import annotations

import asyncio
import random

import pytest

from {{ cookiecutter.package_name }}.balancer import Balancer
from {{ cookiecutter.package_name }}.balancer.admission import patience
from {{ cookiecutter.package_name }}.balancer.node import Node
from {{ cookiecutter.package_name }}.llm.errors import OverloadedError

from .fakes import FakeClient, chat, node_settings, settings


class SlowClient(FakeClient):
    """Answers after a turn of the event loop, as a real node does, once the gate opens."""

    async def _begin(self, model: str) -> None:
        await super()._begin(model)
        await asyncio.sleep(0)


def one_slot(**lb: object) -> tuple[Balancer, FakeClient]:
    lb.setdefault("selection_timeout_s", 30)
    lb.setdefault("max_queue", 256)  # the queue is an operator's opt-in
    instance = Balancer(settings(**lb), rng=random.Random(3))
    client = SlowClient("a", gate=asyncio.Event())
    instance.add_node(node_settings("a", max_concurrency=1), client)
    return instance, client


async def test_waiters_are_served_in_arrival_order_and_newcomers_queue_behind() -> None:
    instance, client = one_slot()
    order: list[str] = []

    async def request(tag: str) -> None:
        await instance.chat_completion(chat())
        order.append(tag)

    tasks = [asyncio.create_task(request("holder"))]
    for index in range(5):
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(request(f"w{index}")))
    await asyncio.sleep(0.01)
    assert instance.queued == 5
    client.gate.set()  # the holder finishes; a newcomer arrives in the same instant
    tasks.append(asyncio.create_task(request("newcomer")))
    await asyncio.gather(*tasks)
    assert order == ["holder", "w0", "w1", "w2", "w3", "w4", "newcomer"]
    assert instance.queued == 0


async def test_a_freed_slot_wakes_one_waiter_not_all(monkeypatch: pytest.MonkeyPatch) -> None:
    instance, client = one_slot()
    checks = 0
    saturated = Node.saturated

    def counted(node: Node) -> bool:
        nonlocal checks
        checks += 1
        return saturated(node)

    monkeypatch.setattr(Node, "saturated", counted)
    waiters = 100
    tasks = [asyncio.create_task(instance.chat_completion(chat())) for _ in range(waiters + 1)]
    await asyncio.sleep(0.01)
    client.gate.set()
    await asyncio.gather(*tasks)
    # About two room checks per request (on arrival, at hand-over); waking every waiter
    # on every completion would take about waiters^2 / 2 (5,000 here).
    assert checks <= 4 * waiters


async def test_a_slot_handed_to_a_waiter_that_leaves_goes_to_the_next() -> None:
    instance, client = one_slot()
    holder = asyncio.create_task(instance.chat_completion(chat()))
    await asyncio.sleep(0)
    first = asyncio.create_task(instance.chat_completion(chat()))
    await asyncio.sleep(0)
    second = asyncio.create_task(instance.chat_completion(chat()))
    await asyncio.sleep(0.01)
    client.gate.set()
    await asyncio.sleep(0)  # the holder finishes and hands its slot to `first`...
    first.cancel()  # ...which leaves before it runs
    await holder
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (await second).choices[0].message.content == "a"
    node = next(iter(instance.nodes()))
    assert node.in_flight == 0 and node.reserved == 0 and instance.queued == 0


async def test_a_waiter_that_times_out_leaves_the_queue() -> None:
    instance, client = one_slot(selection_timeout_s=0.05)
    holder = asyncio.create_task(instance.chat_completion(chat()))
    await asyncio.sleep(0)
    with pytest.raises(Exception, match="busy"):
        await instance.chat_completion(chat())
    assert instance.queued == 0
    client.gate.set()
    await holder
    assert (await instance.chat_completion(chat())).choices[0].message.content == "a"


async def test_a_node_added_while_requests_wait_takes_them() -> None:
    instance, client = one_slot()
    holder = asyncio.create_task(instance.chat_completion(chat()))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(instance.chat_completion(chat())) for _ in range(3)]
    await asyncio.sleep(0.01)
    instance.add_node(node_settings("b"), FakeClient("b"))
    answers = await asyncio.gather(*waiting)
    assert {answer.choices[0].message.content for answer in answers} == {"b"}
    client.gate.set()
    await holder


async def test_by_default_a_full_fleet_is_refused_at_once_while_the_slot_is_still_held() -> None:
    instance = Balancer(settings(), rng=random.Random(3))  # every queue setting at its default
    client = SlowClient("a", gate=asyncio.Event())
    instance.add_node(node_settings("a", max_concurrency=1), client)
    holder = asyncio.create_task(instance.chat_completion(chat()))
    await asyncio.sleep(0)
    assert client.tracker.active == 1  # the holder is at the node, behind the gate
    second = asyncio.create_task(instance.chat_completion(chat()))
    await asyncio.sleep(0)
    assert second.done() and instance.queued == 0  # refused on its first turn, never queued
    with pytest.raises(OverloadedError) as refused:
        await second
    assert refused.value.retry_after is not None and refused.value.retry_after >= 1
    assert not holder.done()  # and before the node freed
    assert client.gate is not None and not client.gate.is_set()
    client.gate.set()
    await holder


async def test_a_job_waits_its_turn_past_the_api_bound() -> None:
    instance = Balancer(settings(), rng=random.Random(3))  # max_queue 0: the API refuses
    client = SlowClient("a", gate=asyncio.Event())
    instance.add_node(node_settings("a", max_concurrency=1), client)
    holder = asyncio.create_task(instance.chat_completion(chat()))
    await asyncio.sleep(0)
    assert client.tracker.active == 1  # the holder is at the node, behind the gate

    async def job() -> str | None:
        with patience(30):
            answer = await instance.chat_completion(chat())
        return answer.choices[0].message.content

    waiting = asyncio.create_task(job())
    await asyncio.sleep(0)
    assert instance.queued == 1
    with pytest.raises(OverloadedError):
        await instance.chat_completion(chat())  # the API request beside it: 429 at once
    client.gate.set()
    await holder
    assert await waiting == "a"
