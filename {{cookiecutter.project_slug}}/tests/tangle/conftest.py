"""Fixtures for the Tangle tests: a real context over a simulated node, and the local chain.

Chain tests need TANGLE_E2E_RPC_URL: an anvil with tnt-core's LocalTestnet
replayed (service 0 with operators anvil #1 and #2, owned by anvil #0).  They
skip, saying so, when it is unset.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from eth_account import Account

from {{ cookiecutter.package_name }}.config import Settings, TangleSettings
from {{ cookiecutter.package_name }}.context import Context
from {{ cookiecutter.package_name }}.sim import SimHandle
from {{ cookiecutter.package_name }}.tangle.chain import Chain

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
