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
