"""Fixtures for the client tests: a client of a given type wired to a simulator of its
dialect, and, for the contract both must keep, to a real server of that type."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any, Literal

import httpx
import pytest

from {{ cookiecutter.package_name }}.backends import create_client
from {{ cookiecutter.package_name }}.backends.base import HttpClient
from {{ cookiecutter.package_name }}.config import LoadBalancerSettings, NodeModel, NodeSettings
from {{ cookiecutter.package_name }}_sim import SimHandle

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

# Real servers, started by the template's CI (its tests/real_servers.py) and named here by
# URL: node type -> (generating server, embedding server).  Each serves one small random
# model, `tiny`, with a context of REAL_CONTEXT tokens, two requests at once (vLLM queues
# one more and refuses the next), tool calls (vLLM: a tool-call parser) and the API key in
# REAL_SERVER_KEY.  A type's real cases are collected only when its URL is set, so the
# project's own suite needs no server; the template's CI checks that every one ran.
REAL_URLS = {
    "vllm": ("REAL_VLLM_URL", "REAL_VLLM_EMBED_URL"),
    "llamacpp": ("REAL_LLAMACPP_URL", "REAL_LLAMACPP_EMBED_URL"),
}
REAL_KEY = "REAL_SERVER_KEY"
REAL_MODEL = "tiny"
REAL_CONTEXT = 1024
Where = Literal["sim", "real"]
SERVED = [(name, "sim") for name in PRESENT] + [
    (name, "real") for name in PRESENT if name in REAL_URLS and os.environ.get(REAL_URLS[name][0])
]


@dataclass
class Served:
    """A server the contract runs against: a simulator shaped like the real one, or it."""

    node_type: str
    where: Where
    url: str
    api_key: str | None
    handle: SimHandle | None = None
    model: str = REAL_MODEL

    def client(self, *, api_key: str | None = None, **lb: Any) -> HttpClient:
        key = api_key or self.api_key
        return client_for(self.node_type, self.url, [self.model], api_key=key, **lb)


ServedFactory = Callable[..., Awaitable[tuple[HttpClient, Served]]]


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


@pytest.fixture
async def served(request: pytest.FixtureRequest, sim_server: Any) -> AsyncIterator[ServedFactory]:
    """`client, server = await served()` (`embeddings=True`: a server that embeds), for
    tests parametrized indirectly with (node type, "sim" or "real").

    The simulator takes the real servers' shape: their model name, context, limits and
    API key, and a model that never stops on its own (as the tiny one), so the same
    assertions hold for both.
    """
    node_type, where = request.param
    clients: list[HttpClient] = []

    async def make(*, embeddings: bool = False, **lb: Any) -> tuple[HttpClient, Served]:
        if where == "real":
            variable = REAL_URLS[node_type][1 if embeddings else 0]
            url = os.environ.get(variable)
            assert url, f"the real {node_type} server is given without {variable}"
            server = Served(node_type, "real", url, os.environ.get(REAL_KEY))
        else:
            handle = await sim_server(
                dialect=DIALECTS[node_type],
                models=[REAL_MODEL],
                context_length=REAL_CONTEXT,
                max_concurrency=2,
                max_queue=1 if node_type == "vllm" else None,
                api_key="sim-key",
                embeddings=embeddings or None,
                tool_template=False,  # the real test model's chat template calls no tools
                output_tokens=100_000,
                tokens_per_s=1000,
            )
            server = Served(node_type, "sim", handle.url, "sim-key", handle)
        client = server.client(**lb)
        clients.append(client)
        return client, server

    yield make
    for client in clients:
        await client.aclose()
