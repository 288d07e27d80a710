"""Producer, consumer and heartbeat against the real tnt-core contracts on anvil."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from eth_abi.abi import encode

from {{ cookiecutter.package_name }}.context import Context
from {{ cookiecutter.package_name }}.tangle.abi import GET_JOB_CALL, IS_ONLINE
from {{ cookiecutter.package_name }}.tangle.chain import Chain
from {{ cookiecutter.package_name }}.tangle.checkpoint import Checkpoint
from {{ cookiecutter.package_name }}.tangle.cli import submit_job
from {{ cookiecutter.package_name }}.tangle.consumer import Consumer, Outcome
from {{ cookiecutter.package_name }}.tangle.producer import Producer
from {{ cookiecutter.package_name }}.tangle.runner import JobRunner

from .conftest import MODEL, OPERATOR, SimFactory, fleet_settings, local_tangle

REQUEST = encode(
    ["string"],
    [
        json.dumps(
            {
                "type": "chat.completion",
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
            }
        )
    ],
)


async def completed(chain: Chain, call_id: int) -> bool:
    ((_index, _caller, _created, _count, done, _rfq, _payment),) = await chain.call(
        chain.tangle, GET_JOB_CALL, 0, call_id
    )
    return bool(done)


async def test_results_already_on_chain_count_as_done(customer: Chain, operator: Chain) -> None:
    calls = [(await submit_job(customer, 0, 0, REQUEST))[0] for _ in range(3)]
    consumer = Consumer(operator, 0, batch_max=16)
    sender = asyncio.create_task(consumer.run())
    try:
        assert await consumer.submit(calls[0], b"first") is Outcome.SUBMITTED
        # All three are queued before the sender wakes: one submitResults for them,
        # refused because of calls[0], then sent again without it.
        outcomes = await asyncio.gather(*(consumer.submit(call, b"again") for call in calls))
    finally:
        sender.cancel()
    assert outcomes == [Outcome.ALREADY_DONE, Outcome.SUBMITTED, Outcome.SUBMITTED]
    assert consumer.transactions == 2
    assert all([await completed(operator, call) for call in calls])


async def test_producer_reads_calls_in_order_and_skips_answered(
    customer: Chain, operator: Chain, tmp_path: Path
) -> None:
    start = await customer.block_number() + 1
    first, _ = await submit_job(customer, 0, 0, REQUEST)
    second, _ = await submit_job(customer, 0, 1, b"")
    settings = local_tangle(
        operator.settings.http_rpc_url, start_block=start, data_dir=str(tmp_path)
    )
    producer = Producer(operator, settings, Checkpoint.for_service(settings, 31337))
    calls, to_block, at_head = await producer.poll()
    assert [(call.call_id, call.job_index) for call in calls] == [(first, 0), (second, 1)]
    assert calls[0].inputs == REQUEST
    assert at_head and to_block == await customer.block_number()

    assert await producer.needs_answer(calls[0])
    consumer = Consumer(operator, 0)
    sender = asyncio.create_task(consumer.run())
    try:
        await consumer.submit(first, b"done")
    finally:
        sender.cancel()
    assert not await producer.needs_answer(calls[0])
    assert await producer.needs_answer(calls[1])


async def test_heartbeat_puts_the_operator_online(
    sim_server: SimFactory, operator: Chain, tmp_path: Path
) -> None:
    sim = await sim_server(dialect="openai", models=[MODEL])
    tangle = local_tangle(operator.settings.http_rpc_url, data_dir=str(tmp_path))
    settings = fleet_settings(sim.url).model_copy(update={"tangle": tangle})
    async with Context.open(settings) as context:
        runner = JobRunner(context, operator, chain_id=await operator.chain_id())
        tx = await runner.heartbeat()
    assert tx is not None and tx.startswith("0x")
    (online,) = await operator.call(operator.status_registry, IS_ONLINE, 0, OPERATOR)
    assert online
