"""`bench chaos --seed N --minutes M`: the runner pair, Redis, a node and the chain, under faults.

It starts Redis (no persistence), one simulated vLLM node and two `run` replicas
for operator anvil #1 (each also serves the HTTP API), against a chain with
tnt-core's local testnet (`--rpc`, an anvil: reorgs and fee spikes use its own
methods).  The customer (anvil #0) submits chat jobs and a client sends HTTP
requests, streams and abandoned streams, while faults drawn from the seed hit
the parts: SIGKILL, SIGSTOP/SIGCONT of the leader and the standby, SIGSTOP of
the node, Redis killed and restarted empty, hung, or flushed, reorgs of depth
1-3 and fee spikes above the runners' cap.  Then the faults stop, everything
is resumed, and the invariants are checked:

- every call the chain still has is completed with exactly one result;
- no transaction of the operator reverted;
- the node never had a request waiting (the provider sends at most max_concurrency);
- every HTTP answer is well formed (JSON, an OpenAI error body, or a full stream);
- nothing is left open once the faults stopped (`--settle` seconds);
- no secret (operator key, API key) in any process's output.

Prints the schedule, the takeover times and a table of breaches; exit 1 on any.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_abi.abi import decode, encode
from eth_account import Account
from redis.asyncio import Redis
from web3.exceptions import BlockNotFound

from {{ cookiecutter.package_name }}.config import TangleSettings
from {{ cookiecutter.package_name }}.tangle.abi import GET_JOB_CALL, JOB_RESULT_SUBMITTED
from {{ cookiecutter.package_name }}.tangle.chain import Chain, ChainError
from {{ cookiecutter.package_name }}.tangle.cli import submit_job

PACKAGE = "{{ cookiecutter.package_name }}"
MODEL = "chaos-model"
NODE_LIMIT = 3
# tnt-core's LocalTestnet on anvil; anvil's public dev keys (a local chain only).
TANGLE = "0x0165878a594ca255338adfa4d48449f69242eb8f"
STAKING = "0xdc64a140aa3e981100a9beca4e685f962f0cf6c9"
STATUS_REGISTRY = "0x2bdcc0de6be1f7d2ee689a0342d76f52e8efaba3"
CUSTOMER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
OPERATOR_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
OPERATOR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
API_KEY = "chaos-api-key-" + "5e" * 12
LEASE_S = 3.0
MAX_FEE_GWEI = 5
FAULTS = (
    "kill_leader",
    "stop_leader",
    "stop_standby",
    "stop_node",
    "redis_restart_empty",
    "redis_hang",
    "redis_flushdb",
    "reorg",
    "fee_spike",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Fault:
    at_s: float
    kind: str
    seconds: float  # how long it lasts (or the reorg depth)

    def describe(self) -> str:
        if self.kind == "reorg":
            return f"{self.at_s:6.1f} s  reorg depth {int(self.seconds)}"
        return f"{self.at_s:6.1f} s  {self.kind} for {self.seconds:.1f} s"


def schedule(seed: int, seconds: float) -> list[Fault]:
    """The faults, from the seed alone: one every 4-9 s, each over before the next."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    at = rng.uniform(3.0, 6.0)
    while at < seconds:
        kind = rng.choice(FAULTS)
        if kind == "reorg":
            length = float(rng.randint(1, 3))
        elif kind == "stop_leader":
            length = LEASE_S + rng.uniform(0.5, 3.0)  # past its lease: a standby takes over
        else:
            length = rng.uniform(1.0, 4.0)
        faults.append(Fault(at, kind, length))
        at += (0 if kind == "reorg" else length) + rng.uniform(4.0, 9.0)
    return faults


@dataclass
class Tally:
    breaches: dict[str, list[str]] = field(default_factory=dict)
    http: dict[str, int] = field(default_factory=dict)
    takeovers: list[float] = field(default_factory=list)
    node_samples: int = 0

    def breach(self, invariant: str, detail: str) -> None:
        self.breaches.setdefault(invariant, []).append(detail)

    def count(self, what: str) -> None:
        self.http[what] = self.http.get(what, 0) + 1


class Process:
    """A child process whose output goes to a file; can be killed, paused and restarted."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.process: asyncio.subprocess.Process | None = None
        self.paused = False

    async def start(self) -> None:
        with self.log.open("a") as out:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, stdout=out, stderr=out
            )

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)
            self.paused = sig is signal.SIGSTOP

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.signal(signal.SIGCONT)
            self.process.kill()
            await self.process.wait()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Harness:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.tally = Tally()
        self.calls: list[int] = []
        self.node_fault_until = 0.0
        self.redis_port = _free_port()
        self.node_port = _free_port()
        self.api_ports = [_free_port(), _free_port()]
        self.customer_lock = asyncio.Lock()
        self._watchers: set[asyncio.Task[None]] = set()
        settings = TangleSettings(
            http_rpc_url=args.rpc,
            tangle_contract=TANGLE,
            staking_contract=STAKING,
            status_registry_contract=STATUS_REGISTRY,
            service_id=0,
            max_fee_gwei=10_000,
        )
        self.customer = Chain(settings, Account.from_key(CUSTOMER_KEY))
        redis_binary = shutil.which("redis-server")
        if redis_binary is None:
            raise RuntimeError("redis-server is not installed")
        self.redis = Process(
            "redis",
            [
                redis_binary,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(work),
            ],
            dict(os.environ),
            work / "redis.log",
        )
        python = [sys.executable, "-m", PACKAGE]
        self.node = Process(
            "node",
            [
                *python,
                "sim",
                "--dialect",
                "vllm",
                "--model",
                MODEL,
                "--port",
                str(self.node_port),
                "--max-concurrency",
                str(NODE_LIMIT),
                "--ttft",
                "0.05",
                "--tps",
                "200",
                "--output-tokens",
                "12",
            ],
            dict(os.environ),
            work / "node.log",
        )
        self.runners = [
            Process(f"runner-{i}", [*python, "run"], self._runner_env(i), work / f"r{i}.log")
            for i in range(2)
        ]

    def _runner_env(self, index: int) -> dict[str, str]:
        config = self.work / f"runner-{index}.toml"
        config.write_text(
            "\n".join(
                [
                    "[api]",
                    f"port = {self.api_ports[index]}",
                    "",
                    "[[nodes]]",
                    'name = "node"',
                    f'url = "http://127.0.0.1:{self.node_port}"',
                    'type = "openai_compatible"',
                    f'models = ["{MODEL}"]',
                    f"max_concurrency = {NODE_LIMIT}",
                    "",
                    "[[models]]",
                    f'id = "{MODEL}"',
                    "",
                    "[tangle]",
                    "poll_interval_s = 0.5",
                    "heartbeat_interval_s = 0",
                    "replace_after_s = 5",
                    "shutdown_grace_s = 5",
                    f"max_fee_gwei = {MAX_FEE_GWEI}",
                    "",
                    "[cluster]",
                    f"leader_lease_s = {LEASE_S}",
                    "lease_ttl_s = 2.0",
                    "redis_timeout_s = 0.25",
                    "",
                ]
            )
        )
        data = self.work / f"data-{index}"
        data.mkdir(exist_ok=True)
        return {
            **os.environ,
            "OPENROUTER_CONFIG": str(config),
            "OPENROUTER_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "OPENROUTER_API_KEY": API_KEY,
            "OPERATOR_PRIVATE_KEY": OPERATOR_KEY,
            "HTTP_RPC_URL": self.args.rpc,
            "DATA_DIR": str(data),
            "CHAIN": "local_testnet",
            "PROTOCOL": "tangle",
            "BLUEPRINT_ID": "0",
            "SERVICE_ID": "0",
            "TANGLE_CONTRACT": TANGLE,
            "STAKING_CONTRACT": STAKING,
            "STATUS_REGISTRY_CONTRACT": STATUS_REGISTRY,
        }

    # --- the parts ---------------------------------------------------------------------

    async def anvil(self, method: str, *params: Any) -> Any:
        response = await self.customer.w3.provider.make_request(method, list(params))
        if "error" in response:
            raise ChainError(f"{method}: {response['error']}")
        return response.get("result")

    async def leader(self) -> Process | None:
        """The runner whose pid holds the lease in Redis now."""
        redis = Redis(
            port=self.redis_port,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            decode_responses=True,
        )
        try:
            for key in await redis.keys("openrouter:leader:*"):
                if str(key).endswith(":checkpoint"):
                    continue
                value = str(await redis.get(key) or "")
                for runner in self.runners:
                    if f":{runner.pid}:" in value:
                        return runner
        except (OSError, Exception):
            return None
        finally:
            await redis.aclose()
        return None

    async def _wait_port(self, port: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"nothing listens on port {port} after {timeout_s:g} s")

    async def start(self) -> None:
        await self.redis.start()
        await self._wait_port(self.redis_port)
        await self.node.start()
        await self._wait_port(self.node_port)
        for runner, port in zip(self.runners, self.api_ports, strict=True):
            await runner.start()
            await self._wait_port(port)

    async def stop(self) -> None:
        for part in [*self.runners, self.node, self.redis]:
            await part.kill()
        await self.customer.aclose()

    # --- load ----------------------------------------------------------------------------

    async def submit_jobs(self, stop: asyncio.Event) -> None:
        request = {
            "type": "chat.completion",
            "model": MODEL,
            "messages": [{"role": "user", "content": "chaos"}],
            "max_tokens": 6,
        }
        inputs = encode(["string"], [json.dumps(request)])
        while not stop.is_set():
            async with self.customer_lock:
                with contextlib.suppress(ChainError):
                    call_id, _block = await asyncio.wait_for(
                        submit_job(self.customer, 0, 0, inputs), timeout=20
                    )
                    self.calls.append(call_id)
            await asyncio.sleep(self.args.job_interval)

    async def http_load(self, stop: asyncio.Event, rng: random.Random) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(timeout=30.0, headers=headers) as client:
            while not stop.is_set():
                port = rng.choice(self.api_ports)
                kind = rng.choice(("plain", "stream", "abandoned"))
                await self._one_request(client, port, kind)
                await asyncio.sleep(rng.uniform(0.05, 0.3))

    async def _one_request(self, client: httpx.AsyncClient, port: int, kind: str) -> None:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hello"}],
            "stream": kind != "plain",
        }
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        try:
            async with client.stream("POST", url, json=body) as response:
                if kind == "abandoned" and response.status_code == 200:
                    async for _ in response.aiter_lines():
                        break  # the client goes away mid-stream
                    self.tally.count("abandoned")
                    return
                text = (await response.aread()).decode(errors="replace")
        except (httpx.TransportError, OSError):
            self.tally.count("unreachable (a runner down)")
            return
        status = response.status_code
        self.tally.count(f"{status}")
        if not _well_formed(status, text, kind != "plain"):
            self.tally.breach("HTTP answer well formed", f"{status} {kind}: {text[:120]!r}")
        if status >= 500 and time.monotonic() > self.node_fault_until + 5:
            detail = f"{status} {kind}: {text[:120]!r}"
            self.tally.breach("no 5xx while the node is healthy", detail)

    async def watch_node(self, stop: asyncio.Event) -> None:
        """The node queues what is beyond its max_concurrency: a waiting request is a breach."""
        async with httpx.AsyncClient(timeout=2.0) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    text = (await client.get(f"http://127.0.0.1:{self.node_port}/metrics")).text
                    match = re.search(r"^vllm:num_requests_waiting\S* (\S+)$", text, re.M)
                    self.tally.node_samples += 1 if match else 0
                    if match and float(match.group(1)) > 0:
                        self.tally.breach(
                            "node at most max_concurrency",
                            f"{match.group(1)} waiting at {time.strftime('%H:%M:%S')}",
                        )
                await asyncio.sleep(0.05)

    # --- faults ---------------------------------------------------------------------------

    async def inject(self, fault: Fault) -> None:
        kind, seconds = fault.kind, fault.seconds
        if kind in ("kill_leader", "stop_leader", "stop_standby"):
            leader = await self.leader()
            if leader is None:
                return
            target = leader if kind != "stop_standby" else self._other(leader)
            if kind == "kill_leader":
                await target.kill()
                await self._time_takeover(self._other(target))
                await asyncio.sleep(max(seconds - 0.0, 0))
                await target.start()
            else:
                target.signal(signal.SIGSTOP)
                if kind == "stop_leader":
                    await self._time_takeover(self._other(target), until_s=seconds)
                await asyncio.sleep(seconds)
                target.signal(signal.SIGCONT)
        elif kind == "stop_node":
            self.node_fault_until = time.monotonic() + seconds
            self.node.signal(signal.SIGSTOP)
            await asyncio.sleep(seconds)
            self.node.signal(signal.SIGCONT)
        elif kind == "redis_restart_empty":
            await self.redis.kill()
            await asyncio.sleep(seconds)
            await self.redis.start()
        elif kind == "redis_hang":
            self.redis.signal(signal.SIGSTOP)
            await asyncio.sleep(seconds)
            self.redis.signal(signal.SIGCONT)
        elif kind == "redis_flushdb":
            redis = Redis(port=self.redis_port, socket_timeout=1)
            with contextlib.suppress(Exception):
                await redis.flushdb()
            await redis.aclose()
        elif kind == "reorg":
            async with self.customer_lock:
                with contextlib.suppress(ChainError):
                    await self.anvil("anvil_reorg", int(seconds), [])
                await self.customer.nonces.resync()  # the customer's own sends went too
        elif kind == "fee_spike":
            spike = 4 * MAX_FEE_GWEI * 10**9
            await self.anvil("anvil_setNextBlockBaseFeePerGas", hex(spike))
            await self.anvil("evm_mine")
            await asyncio.sleep(seconds)
            await self.anvil("anvil_setNextBlockBaseFeePerGas", hex(10**8))
            await self.anvil("evm_mine")

    def _other(self, runner: Process) -> Process:
        return self.runners[1] if runner is self.runners[0] else self.runners[0]

    async def _time_takeover(self, standby: Process, until_s: float = 30.0) -> None:
        """Record how long the standby took to lead (it logs `leader for`)."""
        before = standby.output().count("leader for")
        started = time.monotonic()

        async def watch() -> None:
            while time.monotonic() - started < max(until_s, 15.0):
                if standby.output().count("leader for") > before:
                    self.tally.takeovers.append(time.monotonic() - started)
                    return
                await asyncio.sleep(0.05)

        task = asyncio.create_task(watch())
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def faults(self, plan: list[Fault]) -> None:
        started = time.monotonic()
        for fault in plan:
            await asyncio.sleep(max(fault.at_s - (time.monotonic() - started), 0))
            print(f"fault: {fault.describe()}", flush=True)
            try:
                await self.inject(fault)
            except ChainError as error:
                print(f"fault {fault.kind} could not be injected: {error}", flush=True)

    # --- the check -------------------------------------------------------------------------

    async def settle(self) -> None:
        """Every part resumed and running; then wait for every call to be answered."""
        for part in [self.redis, self.node, *self.runners]:
            part.signal(signal.SIGCONT)
        if self.redis.process is None or self.redis.process.returncode is not None:
            await self.redis.start()
        for runner in self.runners:
            if runner.process is None or runner.process.returncode is not None:
                await runner.start()
        await self.anvil("anvil_setNextBlockBaseFeePerGas", hex(10**8))
        await self.anvil("evm_mine")
        deadline = time.monotonic() + self.args.settle
        while time.monotonic() < deadline:
            if not await self._open_calls():
                return
            await asyncio.sleep(1.0)

    async def _job(self, call_id: int) -> tuple[Any, ...]:
        (job,) = await self.customer.call(self.customer.tangle, GET_JOB_CALL, 0, call_id)
        return tuple(job)

    async def _open_calls(self) -> list[int]:
        open_calls = []
        for call_id in self.calls:
            _index, _caller, created, _count, completed, _rfq, _pay = await self._job(call_id)
            if created and not completed:
                open_calls.append(call_id)
        return open_calls

    async def check(self, first_block: int) -> dict[str, int]:
        figures = {"calls submitted": len(self.calls), "calls gone with a reorg": 0}
        for call_id in self.calls:
            _index, _caller, created, count, completed, _rfq, _pay = await self._job(call_id)
            if not created:
                figures["calls gone with a reorg"] += 1
            elif not completed:
                self.tally.breach("nothing stuck after the faults", f"call {call_id} open")
            elif count != 1:
                self.tally.breach("each call exactly one result", f"call {call_id}: {count}")
        transactions = reverted = 0
        number = first_block
        while number <= await self.customer.block_number():
            try:
                block = await self.customer.w3.eth.get_block(number, full_transactions=True)
            except BlockNotFound:
                if number <= await self.customer.block_number():
                    raise
                break  # the head just read went (a 20-minute run crashed here)
            for tx in block["transactions"]:
                if not isinstance(tx, (bytes, str)) and tx["from"] == OPERATOR:
                    transactions += 1
                    receipt = await self.customer.w3.eth.get_transaction_receipt(tx["hash"])
                    if receipt["status"] != 1:
                        reverted += 1
                        what = f"{bytes(tx['hash']).hex()} (nonce {tx['nonce']}, block {number}, "
                        self.tally.breach(
                            "no reverted transaction of ours",
                            what + f"selector {bytes(tx['input'][:4]).hex()})",
                        )
            number += 1
        figures["operator transactions"] = transactions
        # What the answers say: an error result is a result, but a takeover should not cause them.
        topics = ["0x" + JOB_RESULT_SUBMITTED.hex(), "0x" + encode(["uint64"], [0]).hex()]
        head = await self.customer.block_number()
        for entry in await self.customer.get_logs(first_block, head, topics):
            ((output,),) = [decode(["bytes"], bytes(entry["data"]))]
            with contextlib.suppress(Exception):  # a result that is not this blueprint's JSON
                answer = json.loads(decode(["string"], bytes(output))[0])
                if answer.get("type") == "error":
                    name = f"job results with error {answer['error'].get('code')}"
                    figures[name] = figures.get(name, 0) + 1
        # Evidence that the faults reached the paths they are meant for.
        logs = "".join(runner.output() for runner in self.runners)
        for marker in MARKERS:
            figures[f"runner log lines '{marker}'"] = logs.count(marker)
        secrets = (OPERATOR_KEY[2:].lower(), API_KEY)
        for part in [*self.runners, self.node, self.redis]:
            text = part.output().lower()
            for secret in secrets:
                if secret.lower() in text:
                    self.tally.breach("no secret in any output", f"{part.name}'s output")
            if "traceback" in text:
                self.tally.breach("no traceback in any output", part.name)
        return figures


def _well_formed(status: int, text: str, stream: bool) -> bool:
    if status == 200 and stream:
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        if not events or events[-1] != "[DONE]":
            return False
        try:
            return all(isinstance(json.loads(event), dict) for event in events[:-1])
        except ValueError:
            return False
    try:
        body = json.loads(text)
    except ValueError:
        return False
    if status == 200:
        return isinstance(body, dict) and bool(body.get("choices"))
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and isinstance(error.get("message"), str)


async def _run(args: argparse.Namespace) -> int:
    plan = schedule(args.seed, args.minutes * 60)
    print(f"chaos: seed {args.seed}, {args.minutes:g} min of faults, {len(plan)} faults")
    for fault in plan:
        print(f"  {fault.describe()}")
    with tempfile.TemporaryDirectory(prefix="chaos-") as directory:
        harness = Harness(args, Path(directory))
        snapshot = await harness.anvil("evm_snapshot")
        first_block = await harness.customer.block_number() + 1
        stop = asyncio.Event()
        try:
            await harness.start()
            rng = random.Random(args.seed + 1)
            load = [
                asyncio.create_task(harness.submit_jobs(stop)),
                asyncio.create_task(harness.http_load(stop, rng)),
                asyncio.create_task(harness.watch_node(stop)),
            ]
            await harness.faults(plan)
            await asyncio.sleep(max(args.minutes * 60 - (plan[-1].at_s if plan else 0), 0))
            stop.set()
            await asyncio.gather(*load, return_exceptions=True)
            await harness.settle()
            figures = await harness.check(first_block)
        finally:
            await harness.stop()
            if args.logs:  # the processes' output, for a breach to be looked into
                shutil.copytree(directory, args.logs, dirs_exist_ok=True)
            with contextlib.suppress(Exception):
                await harness.anvil("evm_revert", snapshot)
    tally = harness.tally
    print()
    for name, value in figures.items():
        print(f"- {name}: {value}")
    print(f"- node load samples (its waiting gauge): {tally.node_samples}")
    print("- HTTP answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(tally.http.items())))
    takeovers = ", ".join(f"{seconds:.1f}" for seconds in tally.takeovers) or "none"
    print(f"- takeovers (s from the leader's kill or stop to the standby leading): {takeovers}")
    print()
    print("| invariant | breaches | first |")
    print("|---|---|---|")
    for invariant in INVARIANTS:
        found = tally.breaches.get(invariant, [])
        print(f"| {invariant} | {len(found)} | {found[0] if found else ''} |")
    return 1 if tally.breaches else 0


MARKERS = (
    "leader for",
    "leadership lost",
    "the chain moved back",
    "are missing below ours",
    "calls found open on chain",
    "waits: the base fee is above",
    "Redis unreachable",
)
INVARIANTS = (
    "each call exactly one result",
    "no reverted transaction of ours",
    "node at most max_concurrency",
    "HTTP answer well formed",
    "no 5xx while the node is healthy",
    "nothing stuck after the faults",
    "no secret in any output",
    "no traceback in any output",
)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=2.0, help="how long faults are injected")
    parser.add_argument(
        "--rpc",
        default=os.environ.get("TANGLE_E2E_RPC_URL", "http://127.0.0.1:8545"),
        help="an anvil with tnt-core's local testnet replayed (README: Tangle)",
    )
    parser.add_argument("--job-interval", type=float, default=0.5, help="seconds between jobs")
    parser.add_argument("--settle", type=float, default=90.0, help="seconds to finish after")
    parser.add_argument("--logs", default=None, help="copy every process's output here")
    return asyncio.run(_run(parser.parse_args(argv)))
