"""Fixtures for the client tests: a client of a given type wired to a simulator of its dialect."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.util import find_spec
from typing import Any

import httpx
import pytest

from {{ cookiecutter.package_name }}.backends import create_client
from {{ cookiecutter.package_name }}.backends.base import HttpClient
from {{ cookiecutter.package_name }}.config import LoadBalancerSettings, NodeModel, NodeSettings
from {{ cookiecutter.package_name }}.sim import SimHandle

# Client type -> the simulator dialect that imitates its server.
DIALECTS = {
    "openai_compatible": "openai",
    "ollama": "ollama",
    "vllm": "vllm",
    "llamacpp": "llamacpp",
    "tgi": "tgi",
}
# The types this project was generated with (the post-gen hook deletes the others).
PRESENT = [name for name in DIALECTS if find_spec(f"{{ cookiecutter.package_name }}.backends.{name}")]

ClientFactory = Callable[..., Awaitable[tuple[HttpClient, SimHandle]]]


def client_for(
    node_type: str,
    url: str,
    models: list[str],
    *,
    api_key: str | None = None,
    **lb: Any,
) -> HttpClient:
    node = NodeSettings(
        name="node-under-test",
        url=url,
        type=node_type,  # type: ignore[arg-type]
        models=[NodeModel(id=name) for name in models],
        max_concurrency=8,
        api_key=api_key,
    )
    client = create_client(node, LoadBalancerSettings(**lb))
    assert isinstance(client, HttpClient)
    return client


async def canned(node_type: str, answer: Callable[[httpx.Request], httpx.Response]) -> HttpClient:
    """A client whose server is `answer`, for shapes the simulator does not produce
    (older server versions, llama.cpp's in-stream error field)."""
    client = client_for(node_type, "http://canned.test", ["m"])
    await client.transport.aclose()
    client.transport = httpx.MockTransport(answer)
    return client


@pytest.fixture
async def make_client(sim_server: Any) -> AsyncIterator[ClientFactory]:
    """`client, server = await make_client("vllm", output_tokens=8, ...)`: sim options
    go to the simulator; `lb` (LoadBalancerSettings fields) and `node_api_key` to the client."""
    clients: list[HttpClient] = []

    async def make(
        node_type: str,
        *,
        lb: dict[str, Any] | None = None,
        node_api_key: str | None = None,
        **sim_options: Any,
    ) -> tuple[HttpClient, SimHandle]:
        server = await sim_server(dialect=DIALECTS[node_type], **sim_options)
        client = client_for(
            node_type,
            server.url,
            server.sim.config.model_names(),
            api_key=node_api_key,
            **(lb or {}),
        )
        clients.append(client)
        return client, server

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
