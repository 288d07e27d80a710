"""End to end: `python -m {{ cookiecutter.package_name }} run` as operator #1 on the real contracts.

A simulated LLM node answers; the customer (anvil #0) submits chat, text,
embedding and metrics jobs and reads each result back from the chain.  Then
`run` is stopped while jobs keep arriving and started again: every call ends
with exactly one result, and no call is worked on twice.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from eth_abi.abi import decode, encode

from {{ cookiecutter.package_name }}.tangle.abi import GET_JOB_CALL, IS_ONLINE, JOB_RESULT_SUBMITTED
from {{ cookiecutter.package_name }}.tangle.chain import Chain
from {{ cookiecutter.package_name }}.tangle.cli import submit_job, wait_for_result

from .conftest import MODEL, OPERATOR, OperatorFactory


def job_input(body: dict[str, Any]) -> bytes:
    return encode(["string"], [json.dumps(body)])


async def result_of(customer: Chain, call_id: int, block: int) -> dict[str, Any]:
    operator, output = await wait_for_result(customer, 0, call_id, block, timeout_s=30)
    assert operator.lower() == OPERATOR.lower()
    (text,) = decode(["string"], output)
    value: dict[str, Any] = json.loads(text)
    return value


async def completed(chain: Chain, call_id: int) -> bool:
    ((_index, _caller, _created, _count, done, _rfq, _payment),) = await chain.call(
        chain.tangle, GET_JOB_CALL, 0, call_id
    )
    return bool(done)


async def assert_answered_once(customer: Chain, calls: list[tuple[int, int]]) -> None:
    """Each call (id, block) gets its result, and exactly one result event on chain."""
    for call_id, block in calls:
        await wait_for_result(customer, 0, call_id, block, timeout_s=30)
        assert await completed(customer, call_id)
    topics = ["0x" + JOB_RESULT_SUBMITTED.hex(), "0x" + encode(["uint64"], [0]).hex()]
    logs = await customer.get_logs(calls[0][1], await customer.block_number(), topics)
    answered = [int.from_bytes(bytes(log["topics"][2]), "big") for log in logs]
    ids = [call_id for call_id, _ in calls]
    assert sorted(call for call in answered if call in ids) == sorted(ids)


async def test_jobs_are_answered_on_chain(start_operator: OperatorFactory, customer: Chain) -> None:
    operator = await start_operator()
    chat = await submit_job(
        customer,
        0,
        0,
        job_input(
            {
                "type": "chat.completion",
                "model": MODEL,
                "messages": [{"role": "user", "content": "Say hello"}],
                "max_tokens": 4,
            }
        ),
    )
    text = await submit_job(
        customer, 0, 0, job_input({"type": "text.completion", "model": MODEL, "prompt": "Once"})
    )
    embedding = await submit_job(
        customer, 0, 0, job_input({"type": "embedding", "model": MODEL, "input": "hello"})
    )
    unknown = await submit_job(
        customer, 0, 0, job_input({"type": "chat.completion", "model": "nope", "messages": []})
    )
    metrics = await submit_job(customer, 0, 1, b"")

    answer = await result_of(customer, *chat)
    assert answer["type"] == "chat.completion"
    assert answer["object"] == "chat.completion"
    assert answer["model"] == MODEL
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert answer["choices"][0]["message"]["content"]
    assert answer["usage"]["completion_tokens"] == 4

    answer = await result_of(customer, *text)
    assert (answer["type"], answer["object"]) == ("text.completion", "text_completion")
    assert answer["choices"][0]["text"]

    answer = await result_of(customer, *embedding)
    assert (answer["type"], answer["object"]) == ("embedding", "list")
    assert all(isinstance(x, float) for x in answer["data"][0]["embedding"])

    answer = await result_of(customer, *unknown)
    assert answer["type"] == "error"
    assert answer["error"]["type"] == "invalid_request_error"

    answer = await result_of(customer, *metrics)
    assert answer["type"] == "metrics"
    assert answer["heartbeat_tx"].startswith("0x")

    for call_id, _block in (chat, text, embedding, unknown, metrics):
        assert await completed(customer, call_id)
    (online,) = await customer.call(customer.status_registry, IS_ONLINE, 0, OPERATOR)
    assert online

    # The HTTP API is served beside the job loop, on the same balancer.
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{operator.api_port}/health")
    assert health.status_code == 200

    assert await operator.stop() == 0
    assert "SIGTERM received" in operator.output()


async def test_restart_loses_nothing_and_repeats_nothing(
    start_operator: OperatorFactory, customer: Chain
) -> None:
    request = job_input(
        {"type": "chat.completion", "model": MODEL, "messages": [{"role": "user", "content": "n"}]}
    )
    calls: list[tuple[int, int]] = []

    async def customer_keeps_submitting(count: int) -> None:
        for _ in range(count):
            calls.append(await submit_job(customer, 0, 0, request))
            await asyncio.sleep(0.1)

    first = await start_operator()
    await first.wait_for_log("scanning for jobs")
    await customer_keeps_submitting(6)
    stopping = asyncio.create_task(first.stop())
    await customer_keeps_submitting(4)  # arriving while it shuts down and is gone
    assert await stopping == 0
    await customer_keeps_submitting(2)

    second = await start_operator()
    await assert_answered_once(customer, calls)
    assert await second.stop() == 0
    # Nothing was computed again only to be refused as a duplicate.
    assert "already answered (" not in first.output() + second.output()
    assert "SIGTERM received" in first.output()


async def test_dry_run_computes_answers_but_sends_nothing(
    start_operator: OperatorFactory, customer: Chain
) -> None:
    operator = await start_operator("--dry-run")
    request = {"type": "text.completion", "model": MODEL, "prompt": "dry"}
    call_id, _block = await submit_job(customer, 0, 0, job_input(request))
    await operator.wait_for_log(f"dry run: result for call {call_id} not sent")
    assert await operator.stop() == 0
    assert not await completed(customer, call_id)
    assert "dry run: heartbeat not sent" in operator.output()
