"""Fixtures for the Tangle tests: a real context over a simulated node, and the local chain.

Chain tests need TANGLE_E2E_RPC_URL: an anvil with tnt-core's LocalTestnet
replayed (service 0 with operators anvil #1 and #2, owned by anvil #0).  They
skip, saying so, when it is unset.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_keys.datatypes import PrivateKey

import {{ cookiecutter.package_name }}
from {{ cookiecutter.package_name }}.config import Settings, TangleSettings
from {{ cookiecutter.package_name }}.context import Context
from {{ cookiecutter.package_name }}.tangle.chain import Chain
from {{ cookiecutter.package_name }}_sim import SimHandle

MODEL = "tangle-test-model"

# tnt-core LocalTestnet on anvil: fixed addresses, public anvil dev keys (local chain only).
TANGLE = "0x0165878a594ca255338adfa4d48449f69242eb8f"
STAKING = "0xdc64a140aa3e981100a9beca4e685f962f0cf6c9"
STATUS_REGISTRY = "0x2bdcc0de6be1f7d2ee689a0342d76f52e8efaba3"
CUSTOMER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
OPERATOR_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
OPERATOR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"

SimFactory = Callable[..., Awaitable[SimHandle]]


def fleet_settings(url: str, **lb: Any) -> Settings:
    """One openai-compatible node (always generated) serving MODEL at `url`."""
    return Settings.model_validate(
        {
            "nodes": [{"name": "sim", "url": url, "type": "openai_compatible", "models": [MODEL]}],
            "models": [{"id": MODEL}],
            "load_balancer": lb,
        }
    )


def local_tangle(rpc_url: str, **overrides: Any) -> TangleSettings:
    return TangleSettings.model_validate(
        {
            "http_rpc_url": rpc_url,
            "chain": "local_testnet",
            "blueprint_id": 0,
            "service_id": 0,
            "tangle_contract": TANGLE,
            "staking_contract": STAKING,
            "status_registry_contract": STATUS_REGISTRY,
            **overrides,
        }
    )


@pytest.fixture
async def context(sim_server: SimFactory) -> AsyncIterator[Context]:
    """The real context (balancer, client) over one fast simulated node."""
    sim = await sim_server(dialect="openai", models=[MODEL], output_tokens=4)
    async with Context.open(fleet_settings(sim.url)) as ctx:
        yield ctx


@pytest.fixture
async def customer(rpc_url: str) -> AsyncIterator[Chain]:
    """The service owner (anvil #0), the only account permitted to submit jobs."""
    chain = Chain(local_tangle(rpc_url), Account.from_key(CUSTOMER_KEY))
    yield chain
    await chain.aclose()


@pytest.fixture
async def operator(rpc_url: str) -> AsyncIterator[Chain]:
    """Operator anvil #1, signing results."""
    chain = Chain(local_tangle(rpc_url), Account.from_key(OPERATOR_KEY))
    yield chain
    await chain.aclose()


@pytest.fixture
def rpc_url() -> str:
    url = os.environ.get("TANGLE_E2E_RPC_URL")
    if not url:
        pytest.skip(
            "TANGLE_E2E_RPC_URL is unset: these tests need an anvil with tnt-core's local "
            "testnet deployed (README: Tangle, Try it on a local chain)"
        )
    return url


PACKAGE = "{{ cookiecutter.package_name }}"
# Where the package is imported from, so the subprocess runs the same code.
SOURCE = str(Path({{ cookiecutter.package_name }}.__file__).resolve().parent.parent)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Operator:
    """One `run` process; its stderr goes to a file the test can read."""

    process: asyncio.subprocess.Process

    def __init__(self, process: asyncio.subprocess.Process, log: Path, api_port: int) -> None:
        self.process = process
        self.log = log
        self.api_port = api_port

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout=30)
        except TimeoutError:
            self.process.send_signal(signal.SIGABRT)  # its stacks, to say where it hangs
            await asyncio.wait_for(self.process.wait(), timeout=10)
            pytest.fail(f"`run` did not stop within 30 s of SIGTERM:\n{self.output()[-8000:]}")

    def output(self) -> str:
        return self.log.read_text()

    async def wait_for_log(self, text: str, timeout_s: float = 30.0) -> None:
        for _ in range(int(timeout_s / 0.1)):
            if text in self.output():
                return
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.1)
        pytest.fail(f"`run` never logged {text!r}:\n{self.output()}")


OperatorFactory = Callable[..., Awaitable[Operator]]


def operator_files(tmp_path: Path, rpc_url: str, sim_url: str) -> dict[str, str]:
    """A keystore with operator #1's key, and the blueprint manager's environment for `run`."""
    keystore = tmp_path / "keystore"
    (keystore / "Ecdsa").mkdir(parents=True, exist_ok=True)
    secret = bytes.fromhex(OPERATOR_KEY[2:])
    public = PrivateKey(secret).public_key.to_compressed_bytes()
    key_file = keystore / "Ecdsa" / public.hex()
    key_file.write_text(json.dumps([list(public), list(secret)]))
    key_file.chmod(0o600)
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("OPERATOR_PRIVATE_KEY", "OPENROUTER_CONFIG")
    }
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([SOURCE, env.get("PYTHONPATH", "")]),
            "PYTHONFAULTHANDLER": "1",  # SIGABRT prints every thread's stack (see stop)
            "OPENROUTER_CONFIG": str(tmp_path / "config.toml"),
            "HTTP_RPC_URL": rpc_url,
            "WS_RPC_URL": rpc_url.replace("http", "ws", 1),
            "KEYSTORE_URI": f"file://{keystore}",
            "DATA_DIR": str(tmp_path / "data"),
            "CHAIN": "local_testnet",
            "PROTOCOL": "tangle",
            "BLUEPRINT_ID": "0",
            "SERVICE_ID": "0",
            "TANGLE_CONTRACT": TANGLE,
            "STAKING_CONTRACT": STAKING,
            "STATUS_REGISTRY_CONTRACT": STATUS_REGISTRY,
        }
    )
    return env


def write_config(
    path: Path, sim_url: str, api_port: int, tangle: str = "", node_type: str = "openai_compatible"
) -> None:
    path.write_text(
        f"""
[api]
port = {api_port}
auth_enabled = false

[[nodes]]
name = "sim"
url = "{sim_url}"
type = "{node_type}"
models = ["{MODEL}"]

[[models]]
id = "{MODEL}"

[tangle]
poll_interval_s = 0.2
heartbeat_interval_s = 300
{tangle}
"""
    )


RUN = ("-m", PACKAGE, "run", "--pretty")


@pytest.fixture
async def start_operator(
    rpc_url: str, sim_server: SimFactory, tmp_path: Path
) -> AsyncIterator[OperatorFactory]:
    """Start `run` (again) with the blueprint manager's environment and one DATA_DIR.

    `tangle` adds lines to the config's [tangle] table; `python` replaces
    `-m <package> run --pretty` (e.g. `-c` and a script that wraps `run`).
    """
    sim = await sim_server(dialect="openai", models=[MODEL], output_tokens=6)
    env = operator_files(tmp_path, rpc_url, sim.url)
    api_port = free_port()
    operators: list[Operator] = []

    async def start(
        *options: str, tangle: str = "", python: tuple[str, ...] = RUN, **extra_env: str
    ) -> Operator:
        write_config(tmp_path / "config.toml", sim.url, api_port, tangle)
        log = tmp_path / f"run-{len(operators)}.log"
        with log.open("w") as stderr:  # the child keeps its own copy of the descriptor
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *python,
                *options,
                env={**env, **extra_env},
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        operator = Operator(process, log, api_port)
        operators.append(operator)
        return operator

    yield start
    for operator in operators:
        if operator.process.returncode is None:
            operator.process.kill()
            await operator.process.wait()


async def anvil(chain: Chain, method: str, *params: Any) -> Any:
    """One of anvil's own RPC methods (evm_mine, anvil_reorg, ...); its result."""
    response = await chain.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in response, response
    return response.get("result")


@pytest.fixture
async def isolated_chain(customer: Chain) -> AsyncIterator[Chain]:
    """The chain put back as it was after a test that reorgs, mines by hand or spikes fees.

    evm_revert restores blocks and state, but not the mining mode or the next
    block's base fee: those are reset by hand.
    """
    block = await customer.w3.eth.get_block("pending")
    base_fee = int(block["baseFeePerGas"])
    snapshot = await anvil(customer, "evm_snapshot")
    yield customer
    await anvil(customer, "evm_setIntervalMining", 0)
    await anvil(customer, "evm_setAutomine", True)
    await anvil(customer, "evm_revert", snapshot)
    await anvil(customer, "anvil_setNextBlockBaseFeePerGas", hex(base_fee))
