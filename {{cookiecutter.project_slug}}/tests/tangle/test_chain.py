"""Producer, consumer and heartbeat against the real tnt-core contracts on anvil."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from eth_abi.abi import encode
from eth_account import Account

from {{ cookiecutter.package_name }}.context import Context
from {{ cookiecutter.package_name }}.tangle.abi import (
    ERC20_TRANSFER,
    GET_JOB_CALL,
    IS_ONLINE,
    IS_OPERATOR_REGISTERED,
    STAKING_IS_OPERATOR,
    STAKING_OPERATOR_BOND_TOKEN,
    SUBMIT_HEARTBEAT_DIRECT,
)
from {{ cookiecutter.package_name }}.tangle.chain import Chain
from {{ cookiecutter.package_name }}.tangle.checkpoint import Checkpoint
from {{ cookiecutter.package_name }}.tangle.cli import main, submit_job
from {{ cookiecutter.package_name }}.tangle.consumer import Consumer, Outcome
from {{ cookiecutter.package_name }}.tangle.events import JobCall
from {{ cookiecutter.package_name }}.tangle.producer import Producer
from {{ cookiecutter.package_name }}.tangle.runner import JobRunner

from .conftest import (
    CUSTOMER_KEY,
    MODEL,
    OPERATOR,
    OPERATOR_KEY,
    STAKING,
    STATUS_REGISTRY,
    TANGLE,
    SimFactory,
    fleet_settings,
    local_tangle,
)

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
        first = await consumer.submit(calls[0], b"first")
        assert first.outcome is Outcome.SUBMITTED
        assert first.block is not None and first.block_hash == await operator.block_hash(
            first.block
        )
        # All three are queued before the sender wakes: one submitResults for them,
        # refused because of calls[0], then sent again without it.
        answers = await asyncio.gather(*(consumer.submit(call, b"again") for call in calls))
    finally:
        sender.cancel()
    outcomes = [answer.outcome for answer in answers]
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


async def test_a_stop_before_the_first_poll_still_saves_where_to_resume(
    customer: Chain, operator: Chain, tmp_path: Path
) -> None:
    settings = local_tangle(operator.settings.http_rpc_url, data_dir=str(tmp_path))
    stop = asyncio.Event()
    stop.set()
    dispatched: list[JobCall] = []

    async def dispatch(call: JobCall) -> None:
        dispatched.append(call)

    head = await operator.block_number()
    await Producer(operator, settings, Checkpoint.for_service(settings, 31337)).run(dispatch, stop)
    assert dispatched == []
    assert Checkpoint.for_service(settings, 31337).load() == head - settings.lookback_blocks - 1

    # More blocks than the lookback pass before the next start; nothing is missed.
    submitted = [
        (await submit_job(customer, 0, 0, REQUEST))[0] for _ in range(settings.lookback_blocks + 2)
    ]
    restarted = Producer(operator, settings, Checkpoint.for_service(settings, 31337))
    calls, _to_block, _at_head = await restarted.poll()
    assert [call.call_id for call in calls][-len(submitted) :] == submitted


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


def test_register_stakes_with_the_bond_token_and_registers(
    rpc_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    newcomer = Account.create()

    async def fund() -> None:
        customer = Chain(local_tangle(rpc_url), Account.from_key(CUSTOMER_KEY))
        try:
            # anvil's own method: gas money for a fresh account.
            await customer.w3.provider.make_request(
                "anvil_setBalance", [newcomer.address, hex(10**20)]
            )
            (token,) = await customer.call(customer.staking, STAKING_OPERATOR_BOND_TOKEN)
            await customer.send(token, ERC20_TRANSFER, newcomer.address, 10**19)
        finally:
            await customer.aclose()

    async def registered() -> tuple[bool, bool]:
        chain = Chain(local_tangle(rpc_url))
        try:
            (staking,) = await chain.call(chain.staking, STAKING_IS_OPERATOR, newcomer.address)
            (blueprint,) = await chain.call(
                chain.tangle, IS_OPERATOR_REGISTERED, 0, newcomer.address
            )
            return bool(staking), bool(blueprint)
        finally:
            await chain.aclose()

    asyncio.run(fund())
    for name, value in {
        "HTTP_RPC_URL": rpc_url,
        "TANGLE_CONTRACT": TANGLE,
        "STAKING_CONTRACT": STAKING,
        "STATUS_REGISTRY_CONTRACT": STATUS_REGISTRY,
        "BLUEPRINT_ID": "0",
        "SERVICE_ID": "0",
        "OPERATOR_PRIVATE_KEY": newcomer.key.hex(),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OPENROUTER_CONFIG", raising=False)

    assert main(["register", "--stake", str(10**18), "--rpc-address", "https://op.example"]) == 0
    out = capsys.readouterr().out
    assert "staked 1000000000000000000 base units of TNT" in out
    assert f"registered {newcomer.address} for blueprint 0 at https://op.example" in out
    assert asyncio.run(registered()) == (True, True)

    assert main(["register"]) == 0
    assert "already registered for blueprint 0" in capsys.readouterr().out


async def test_a_nonce_used_elsewhere_is_recovered(
    operator: Chain, rpc_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = Chain(local_tangle(rpc_url), Account.from_key(OPERATOR_KEY))
    heartbeat = (0, 0, 0, b"")
    try:
        await operator.send(operator.status_registry, SUBMIT_HEARTBEAT_DIRECT, *heartbeat)
        # Another process with the same key takes the nonce `operator` expects next.
        await elsewhere.send(elsewhere.status_registry, SUBMIT_HEARTBEAT_DIRECT, *heartbeat)
        sent = await operator.send(operator.status_registry, SUBMIT_HEARTBEAT_DIRECT, *heartbeat)
    finally:
        await elsewhere.aclose()
    assert sent.receipt["status"] == "0x1"
    assert "nonce out of step" in caplog.text
    pending = await operator.w3.eth.get_transaction_count(OPERATOR, "pending")
    assert sent.receipt["from"] == OPERATOR.lower()
    async with operator.nonces.reserve() as nonce:
        assert nonce == pending
