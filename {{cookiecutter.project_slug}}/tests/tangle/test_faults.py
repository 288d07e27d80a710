"""The runner on a hostile chain: reorgs, fee spikes, dropped and stuck transactions, a hung RPC.

Faults are staged with anvil's own methods on the real tnt-core contracts;
each test puts the chain back as it found it (`isolated_chain`).  The runner
runs in this process (`serve_jobs`) where the test needs its state, and as
`run` in a subprocess where it is killed or signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import decode, encode
from eth_account import Account
from prometheus_client import generate_latest
from pydantic import SecretStr

from {{ cookiecutter.package_name }}.tangle.abi import (
    GET_JOB_CALL,
    JOB_RESULT_SUBMITTED,
    SUBMIT_HEARTBEAT_DIRECT,
    SUBMIT_RESULT,
    SUBMIT_RESULTS,
)
from {{ cookiecutter.package_name }}.tangle.chain import Chain
from {{ cookiecutter.package_name }}.tangle.cli import submit_job, wait_for_result
from {{ cookiecutter.package_name }}.tangle.fees import GWEI
from {{ cookiecutter.package_name }}.tangle.runner import JobRunner, serve_jobs

from .conftest import (
    MODEL,
    OPERATOR,
    OPERATOR_KEY,
    OperatorFactory,
    SimFactory,
    anvil,
    fleet_settings,
    local_tangle,
)

CHAT = encode(
    ["string"],
    [
        json.dumps(
            {
                "type": "chat.completion",
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3,
            }
        )
    ],
)


async def submit(customer: Chain, count: int, inputs: bytes = CHAT) -> list[int]:
    return [(await submit_job(customer, 0, 0, inputs))[0] for _ in range(count)]


async def completed(chain: Chain, call_id: int) -> bool:
    ((_index, _caller, _created, _count, done, _rfq, _payment),) = await chain.call(
        chain.tangle, GET_JOB_CALL, 0, call_id
    )
    return bool(done)


async def results(chain: Chain, from_block: int) -> dict[int, list[dict[str, Any]]]:
    """Every JobResultSubmitted of service 0 on the canonical chain since `from_block`, by call."""
    topics = ["0x" + JOB_RESULT_SUBMITTED.hex(), "0x" + encode(["uint64"], [0]).hex()]
    found: dict[int, list[dict[str, Any]]] = {}
    for entry in await chain.get_logs(from_block, await chain.block_number(), topics):
        call_id = int.from_bytes(bytes(entry["topics"][2]), "big")
        found.setdefault(call_id, []).append(dict(entry))
    return found


async def operator_receipts(chain: Chain, from_block: int) -> list[dict[str, Any]]:
    """Receipts of every transaction operator #1 has in blocks since `from_block`."""
    receipts = []
    for number in range(from_block, await chain.block_number() + 1):
        block = await chain.w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if not isinstance(tx, (bytes, str)) and tx["from"] == OPERATOR:
                receipts.append(dict(await chain.w3.eth.get_transaction_receipt(tx["hash"])))
    return receipts


async def pool(chain: Chain, sender: str = OPERATOR) -> dict[int, dict[str, Any]]:
    """`sender`'s (by default operator #1's) transactions in anvil's mempool, by nonce."""
    content = await anvil(chain, "txpool_content")
    mine: dict[str, dict[str, Any]] = {}
    for section in ("pending", "queued"):
        for account, txs in content.get(section, {}).items():
            if account.lower() == sender.lower():
                mine.update(txs)
    return {int(nonce): tx for nonce, tx in mine.items()}


async def heartbeat_in_pool(chain: Chain) -> bool:
    selector = "0x" + SUBMIT_HEARTBEAT_DIRECT.selector.hex()
    return any(tx["input"][:10] == selector for tx in (await pool(chain)).values())


async def results_in_pool(chain: Chain) -> set[str]:
    """Hashes of operator #1's submitResult(s) transactions in the mempool."""
    selectors = {"0x" + SUBMIT_RESULT.selector.hex(), "0x" + SUBMIT_RESULTS.selector.hex()}
    return {tx["hash"] for tx in (await pool(chain)).values() if tx["input"][:10] in selectors}


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30
) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting until {what}")


@dataclass
class InProcess:
    runner: JobRunner
    task: asyncio.Task[int]

    async def stop(self) -> int:
        self.runner.stopping.set()
        return await asyncio.wait_for(self.task, timeout=30)

    async def answered(self, count: int, timeout_s: float = 30) -> None:
        async def enough() -> bool:
            return self.runner.answered >= count

        await eventually(enough, f"{count} calls were answered", timeout_s)


RunnerFactory = Callable[..., Awaitable[InProcess]]


@pytest.fixture
async def start_runner(
    rpc_url: str, sim_server: SimFactory, tmp_path: Path
) -> AsyncIterator[RunnerFactory]:
    """`serve_jobs` in this process as operator #1, over one simulated node."""
    sim = await sim_server(dialect="openai", models=[MODEL], output_tokens=3)
    running: list[InProcess] = []

    async def start(*, rpc: str | None = None, **tangle: Any) -> InProcess:
        settings = fleet_settings(sim.url)
        settings.api.port = 0
        settings.api.auth_enabled = False
        settings.tangle = local_tangle(
            rpc or rpc_url,
            operator_private_key=SecretStr(OPERATOR_KEY),
            data_dir=str(tmp_path / "data"),
            poll_interval_s=0.2,
            heartbeat_interval_s=0,
            lookback_blocks=20,
            **tangle,
        )
        ready: asyncio.Future[JobRunner] = asyncio.get_running_loop().create_future()

        async def started(runner: JobRunner) -> None:
            ready.set_result(runner)

        task = asyncio.create_task(
            serve_jobs(settings, dry_run=False, install_signals=False, ready=started)
        )
        done, _ = await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
        assert ready in done, f"the runner stopped at start (exit {task.result()})"
        process = InProcess(ready.result(), task)
        running.append(process)
        return process

    yield start
    for process in running:
        if not process.task.done():
            process.runner.stopping.set()
            process.runner.abandon()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.task, timeout=30)


# --- reorgs ---------------------------------------------------------------------------


async def test_results_a_reorg_drops_are_answered_again_once(
    isolated_chain: Chain, start_runner: RunnerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    chain = isolated_chain
    first_block = await chain.block_number() + 1
    calls = await submit(chain, 6)
    # Jobs are taken, and results final, 10 blocks deep: deeper than the reorg below.
    await anvil(chain, "anvil_mine", hex(10))
    jobs_head = await chain.block_number()
    process = await start_runner(confirmations=10, start_block=first_block)
    await process.answered(6)
    depth = await chain.block_number() - jobs_head
    assert depth >= 1
    # Every block holding a result goes; the jobs stay.
    await anvil(chain, "anvil_reorg", depth, [])
    later = await submit(chain, 2)

    async def settled() -> bool:
        await anvil(chain, "evm_mine")
        done = all([await completed(chain, call) for call in calls + later])
        return done and process.runner.unconfirmed == 0

    await eventually(settled, "every call is answered and final again")
    assert await process.stop() == 0
    found = await results(chain, first_block)
    assert {call: len(found.get(call, [])) for call in calls + later} == dict.fromkeys(
        calls + later, 1
    )
    assert all(receipt["status"] == 1 for receipt in await operator_receipts(chain, first_block))
    assert "the chain moved back" in caplog.text
    assert process.runner.checkpoint.in_flight == 0


@pytest.mark.parametrize("depth", [1, 3])
async def test_a_reorg_of_final_results_leaves_no_nonce_gap_and_their_calls_are_answered(
    isolated_chain: Chain, start_runner: RunnerFactory, caplog: pytest.LogCaptureFixture, depth: int
) -> None:
    """With `confirmations` 0 a mined result is final to the runner at once: after a reorg
    the nonces it forgot are missing below its own, and those calls are open again."""
    chain = isolated_chain
    first_block = await chain.block_number() + 1
    calls = await submit(chain, 3)
    jobs_head = await chain.block_number()
    # One result per transaction (and per block), so the reorg can take `depth` of them.
    process = await start_runner(confirmations=0, batch_max=1, start_block=first_block)
    await process.answered(3)

    async def forgotten() -> bool:
        return process.runner.chain.pending_transactions == 0

    await eventually(forgotten, "the runner holds none of its transactions any more")
    assert await chain.block_number() - jobs_head >= depth
    await anvil(chain, "anvil_reorg", depth, [])
    later = await submit(chain, 2)

    async def settled() -> bool:
        return all([await completed(chain, call) for call in calls + later])

    await eventually(settled, "every call is answered again, and the later ones too")
    assert await process.stop() == 0
    found = await results(chain, first_block)
    assert {call: len(found.get(call, [])) for call in calls + later} == dict.fromkeys(
        calls + later, 1
    )
    receipts = await operator_receipts(chain, first_block)
    assert len(receipts) >= 5 and all(receipt["status"] == 1 for receipt in receipts)


async def test_a_result_whose_nonce_another_process_took_after_a_reorg_is_answered_again(
    isolated_chain: Chain, start_runner: RunnerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    chain = isolated_chain
    first_block = await chain.block_number() + 1
    (call,) = await submit(chain, 1)
    await anvil(chain, "anvil_mine", hex(5))
    process = await start_runner(confirmations=5, replace_after_s=3, start_block=first_block)
    await process.answered(1)
    await anvil(chain, "evm_setAutomine", False)
    await anvil(chain, "anvil_reorg", 1, [])  # the result's block goes, the job's stays

    async def sent_again() -> bool:
        return bool(await results_in_pool(chain))

    await eventually(sent_again, "the dropped result is sent again")
    for tx_hash in await results_in_pool(chain):
        await anvil(chain, "anvil_dropTransaction", tx_hash)
    # Another process with the same key (a standby, say) takes that nonce for a heartbeat.
    elsewhere = Chain(local_tangle(chain.settings.http_rpc_url), Account.from_key(OPERATOR_KEY))
    try:
        heartbeat = asyncio.create_task(
            elsewhere.send(elsewhere.status_registry, SUBMIT_HEARTBEAT_DIRECT, 0, 0, 0, b"")
        )
        await eventually(lambda: heartbeat_in_pool(chain), "the heartbeat is in the mempool")
        await anvil(chain, "evm_mine")
        await heartbeat
    finally:
        await elsewhere.aclose()
    await anvil(chain, "evm_setAutomine", True)

    async def answered_and_final() -> bool:
        await anvil(chain, "evm_mine")
        return await completed(chain, call) and process.runner.unconfirmed == 0

    await eventually(answered_and_final, "the call is answered again and final")
    assert await process.stop() == 0
    assert len((await results(chain, first_block))[call]) == 1
    assert f"call {call}: its result is no longer on chain" in caplog.text
    assert all(receipt["status"] == 1 for receipt in await operator_receipts(chain, first_block))


async def test_a_reorg_that_takes_the_calls_too_sends_nothing_that_reverts(
    isolated_chain: Chain, start_runner: RunnerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The reorg drops the calls with their results.  Sent again as signed, the results
    would revert (no such call); and the chain hands the same call ids to the next
    calls, which must be answered from their own inputs, not given the old results."""
    chain = isolated_chain
    first_block = await chain.block_number() + 1
    calls = await submit(chain, 3)
    process = await start_runner(confirmations=10, batch_max=1, start_block=first_block)
    await process.answered(3)
    await anvil(chain, "anvil_reorg", await chain.block_number() - first_block + 1, [])
    await chain.nonces.resync()  # the customer's own transactions went too
    one_token = json.loads(decode(["string"], CHAT)[0]) | {"max_tokens": 1}
    later = await submit(chain, 2, encode(["string"], [json.dumps(one_token)]))
    assert later == calls[:2]  # the ids are the gone calls'

    async def settled() -> bool:
        await anvil(chain, "evm_mine")
        runner = process.runner
        done = all([await completed(chain, call) for call in later])
        return done and runner.unconfirmed == 0 and runner.chain.pending_transactions == 0

    await eventually(settled, "the later calls are answered and nothing of ours is pending")
    assert await process.stop() == 0
    found = await results(chain, first_block)
    assert {call: len(found.get(call, [])) for call in calls} == {
        calls[0]: 1,
        calls[1]: 1,
        calls[2]: 0,
    }
    for call in later:
        (output,) = decode(["bytes"], bytes(found[call][0]["data"]))
        assert answer_json(output)["usage"]["completion_tokens"] == 1
    assert all(receipt["status"] == 1 for receipt in await operator_receipts(chain, first_block))


# --- fees -----------------------------------------------------------------------------


async def test_a_fee_spike_above_the_cap_waits_and_sends_once_the_fee_falls(
    isolated_chain: Chain, start_runner: RunnerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    chain = isolated_chain
    cap = 2 * GWEI
    first_block = await chain.block_number() + 1
    process = await start_runner(max_fee_gwei=2, start_block=first_block)
    fee = 4 * GWEI
    await anvil(chain, "anvil_setNextBlockBaseFeePerGas", hex(fee))
    calls = await submit(chain, 3)

    async def waiting() -> bool:
        return "waits: the base fee is above max_fee_gwei" in caplog.text

    await eventually(waiting, "the runner logs that results wait for the fee")
    # The base fee doubles every half second; nothing is sent meanwhile.
    for _ in range(4):
        fee *= 2
        await anvil(chain, "anvil_setNextBlockBaseFeePerGas", hex(fee))
        await anvil(chain, "evm_mine")
        await asyncio.sleep(0.5)
    assert not any([await completed(chain, call) for call in calls])
    assert process.runner.answered == 0
    metrics = generate_latest(process.runner.context.metrics_registry).decode()
    assert "tangle_waiting_for_fee 0.0" not in metrics
    assert "tangle_waiting_for_fee" in metrics

    await anvil(chain, "anvil_setNextBlockBaseFeePerGas", hex(GWEI // 2))
    await anvil(chain, "evm_mine")
    await process.answered(3)
    # Read while the runner leads: a replica standing by reports only tangle_leader 0.
    metrics = generate_latest(process.runner.context.metrics_registry).decode()
    assert "tangle_fees_paid_wei_total" in metrics
    assert "tangle_leader 1.0" in metrics
    assert "tangle_balance_low 0.0" in metrics
    # Issue 21: a balance under the next hour of gas (at this term's rate) warns, log and metric.
    runner, address = process.runner, process.runner.chain.address
    balance = await chain.w3.eth.get_balance(address)
    await anvil(chain, "anvil_setBalance", address, hex(1000))
    await runner.confirm()
    low = generate_latest(runner.context.metrics_registry).decode()
    assert "tangle_operator_balance_wei 1000.0" in low and "tangle_balance_low 1.0" in low
    assert "balance 1000 wei < an hour of gas" in caplog.text
    await anvil(chain, "anvil_setBalance", address, hex(balance))
    assert await process.stop() == 0
    found = await results(chain, first_block)
    assert sorted(found) == sorted(calls)
    for entries in found.values():
        tx = await chain.w3.eth.get_transaction(entries[0]["transactionHash"])
        receipt = await chain.w3.eth.get_transaction_receipt(entries[0]["transactionHash"])
        assert tx["maxFeePerGas"] <= cap
        assert receipt["effectiveGasPrice"] <= cap
    assert "the base fee is under the cap again" in caplog.text
    stopped = generate_latest(process.runner.context.metrics_registry).decode()
    assert "tangle_leader 0.0" in stopped and "tangle_fees_paid_wei" not in stopped


async def test_a_dropped_result_is_replaced_with_the_same_nonce_and_a_higher_fee(
    isolated_chain: Chain, start_runner: RunnerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    chain = isolated_chain
    first_block = await chain.block_number() + 1
    (call,) = await submit(chain, 1)
    await anvil(chain, "evm_setAutomine", False)
    process = await start_runner(replace_after_s=1, start_block=first_block)

    async def in_pool() -> bool:
        return bool(await pool(chain))

    await eventually(in_pool, "the result transaction is in the mempool")
    ((nonce, original),) = (await pool(chain)).items()
    await anvil(chain, "anvil_dropTransaction", original["hash"])
    assert await pool(chain) == {}

    async def replaced() -> bool:
        return nonce in await pool(chain)

    await eventually(replaced, "a replacement is in the mempool")
    await anvil(chain, "evm_mine")
    await process.answered(1)
    assert await process.stop() == 0
    (entry,) = (await results(chain, first_block))[call]
    mined = await chain.w3.eth.get_transaction(entry["transactionHash"])
    assert mined["nonce"] == nonce
    assert "0x" + bytes(mined["hash"]).hex() != original["hash"]
    assert mined["maxFeePerGas"] > int(original["maxFeePerGas"], 16)
    assert "replaced by" in caplog.text


# --- a hung RPC -------------------------------------------------------------------------


class Proxy:
    """A loopback TCP proxy to the RPC endpoint that can stop forwarding: a hung endpoint.

    While stopped it still accepts connections and reads requests, but passes
    nothing on and answers nothing, as a wedged load balancer does.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.forwarding = asyncio.Event()
        self.forwarding.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.port)
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self.forwarding.wait()
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()


async def test_a_hung_rpc_is_logged_once_and_the_runner_recovers(
    rpc_url: str, customer: Chain, start_runner: RunnerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = Proxy(int(rpc_url.rsplit(":", 1)[1]))
    try:
        first_block = await customer.block_number() + 1
        process = await start_runner(
            rpc=await proxy.start(), rpc_timeout_s=1, start_block=first_block
        )
        await submit(customer, 1)
        await process.answered(1)

        proxy.forwarding.clear()
        calls = await submit(customer, 2)  # straight to the chain: the customer is fine
        await asyncio.sleep(4)
        assert process.runner.answered == 1
        assert caplog.text.count("stopped answering") == 1

        proxy.forwarding.set()
        await process.answered(3)
        assert all([await completed(customer, call) for call in calls])
        assert await process.stop() == 0
    finally:
        await proxy.aclose()
    assert caplog.text.count("stopped answering") == 1
    assert "answers again after" in caplog.text


# --- kills, signals and poison ------------------------------------------------------------


async def test_a_restart_with_results_in_the_mempool_sends_nothing_again(
    isolated_chain: Chain, start_operator: OperatorFactory
) -> None:
    chain = isolated_chain
    first_block = await chain.block_number() + 1
    calls = await submit(chain, 3)
    await anvil(chain, "evm_setAutomine", False)
    first = await start_operator()

    async def all_sent() -> bool:
        return bool(await results_in_pool(chain))

    await eventually(all_sent, "results are in the mempool")
    await asyncio.sleep(1.0)  # the rest of the batch follows within a poll or two
    first.process.kill()
    await first.process.wait()
    sent = await results_in_pool(chain)
    assert sent

    second = await start_operator()
    await second.wait_for_log("transactions from an earlier run are pending")
    await asyncio.sleep(2.0)
    assert await results_in_pool(chain) == sent  # (a heartbeat may join them)

    await anvil(chain, "evm_mine")
    await anvil(chain, "evm_setAutomine", True)
    for call in calls:
        await wait_for_result(chain, 0, call, first_block, timeout_s=30)
    assert await second.stop() == 0
    found = await results(chain, first_block)
    assert {call: len(found[call]) for call in calls} == dict.fromkeys(calls, 1)
    assert all(receipt["status"] == 1 for receipt in await operator_receipts(chain, first_block))
    assert "already answered (" not in first.output() + second.output()


async def test_sigterm_with_a_stuck_transaction_exits_within_the_grace(
    isolated_chain: Chain, start_operator: OperatorFactory
) -> None:
    chain = isolated_chain
    await submit(chain, 1)
    await anvil(chain, "evm_setAutomine", False)
    operator = await start_operator(tangle="shutdown_grace_s = 1.0\nreplace_after_s = 60")

    async def stuck() -> bool:
        return bool(await pool(chain))

    await eventually(stuck, "the result transaction is in the mempool")
    operator.process.send_signal(signal.SIGTERM)
    # Nothing will mine it: only the grace ends the wait. The log line below is the evidence;
    # the wait stops well before replace_after_s (60 s), however busy the machine.
    assert await asyncio.wait_for(operator.process.wait(), timeout=45) == 0
    assert "still unmined at the end of the grace" in operator.output()


def killer_script(package: str) -> str:
    """`run`, with job 0 replaced by one whose input decoder kills the process on a word."""
    return f"""
import os, signal, sys
from {package} import jobs

class Killer(jobs.ProcessLlmRequest):
    def decode(self, inputs, *, limits):
        if b"kill the runner" in inputs:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().decode(inputs, limits=limits)

jobs.JOBS[0] = Killer()
from {package}.cli import main
sys.exit(main(["run", "--pretty"]))
"""


def answer_json(output: bytes) -> dict[str, Any]:
    (text,) = decode(["string"], output)
    value: dict[str, Any] = json.loads(text)
    return value


async def test_a_job_that_kills_the_runner_twice_is_answered_with_an_error(
    customer: Chain, start_operator: OperatorFactory
) -> None:
    first_block = await customer.block_number() + 1
    poison = encode(["string"], ['{"type": "chat.completion", "note": "kill the runner"}'])
    (bad,) = await submit(customer, 1, poison)
    (good,) = await submit(customer, 1)
    script = ("-c", killer_script("{{ cookiecutter.package_name }}"))

    runs = []
    for _ in range(2):
        operator = await start_operator(python=script)
        assert await asyncio.wait_for(operator.process.wait(), timeout=60) == -signal.SIGKILL
        runs.append(operator)
    assert f"reading the input of call {bad} (1 time)" in runs[1].output()

    third = await start_operator(python=script)
    _, output = await wait_for_result(customer, 0, bad, first_block, timeout_s=30)
    error = answer_json(output)
    assert error["type"] == "error"
    assert error["error"]["code"] == "poison_job"
    _, output = await wait_for_result(customer, 0, good, first_block, timeout_s=30)
    assert answer_json(output)["type"] == "chat.completion"
    assert third.process.returncode is None
    assert await third.stop() == 0
    assert f"reading the input of call {bad} (2 times); it will be answered" in third.output()


async def test_deeply_nested_json_gets_an_error_result_and_the_runner_lives_on(
    customer: Chain, start_operator: OperatorFactory
) -> None:
    first_block = await customer.block_number() + 1
    operator = await start_operator()
    # json.loads would overflow the C stack on this in a process that imports web3.
    deep = '{"type": "chat.completion", "messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (bad,) = await submit(customer, 1, encode(["string"], [deep]))
    (good,) = await submit(customer, 1)
    _, output = await wait_for_result(customer, 0, bad, first_block, timeout_s=30)
    error = answer_json(output)
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert "request is not JSON: recursion limit exceeded" in error["error"]["message"]
    _, output = await wait_for_result(customer, 0, good, first_block, timeout_s=30)
    assert answer_json(output)["type"] == "chat.completion"
    assert operator.process.returncode is None
    assert await operator.stop() == 0
