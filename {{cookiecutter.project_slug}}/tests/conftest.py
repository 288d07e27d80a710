"""Shared fixtures: simulated LLM servers on 127.0.0.1, stopped after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from {{ cookiecutter.package_name }}_sim import SimConfig, SimHandle

SimFactory = Callable[..., Awaitable[SimHandle]]


@pytest.fixture
async def sim_server() -> AsyncIterator[SimFactory]:
    """Start simulators: `handle = await sim_server(dialect="vllm", ...)`; `handle.url`
    is the base URL and `handle.sim` the control surface."""
    handles: list[SimHandle] = []

    async def start(**options: Any) -> SimHandle:
        handle = SimHandle(SimConfig(**options))
        await handle.start()
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        await handle.stop()


# The fast part of the suite, run when the project is generated (`pytest -m generation`,
# about 30 s): imports and config, the API and the balancer against the simulator, the
# chosen server's client, and one job's round trip on chain (which skips without
# TANGLE_E2E_RPC_URL). `make test` and CI run everything.
GENERATION = (
    "tests/test_package_shape.py",
    "tests/test_config.py",
    "tests/test_cli.py",
    "tests/test_backoff.py",
    "tests/api/test_http.py",
    "tests/api/test_listing.py",
    "tests/api/test_openai_client.py",
    "tests/balancer/test_balancer.py",
    "tests/balancer/test_strategies.py",
    "tests/backends/test_shared.py",
{% if cookiecutter.llm_backend != "openai_compatible" %}
    "tests/backends/test_{{ cookiecutter.llm_backend }}.py",
{% endif %}
    "tests/sim/test_dialects.py",
    "tests/tangle/test_e2e.py::test_jobs_are_answered_on_chain",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(GENERATION):
            item.add_marker(pytest.mark.generation)
