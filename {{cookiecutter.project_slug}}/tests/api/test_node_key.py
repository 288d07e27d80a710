"""A node that refuses the provider's key for it is failing everywhere the operator looks.

vLLM and llama.cpp leave /health open when they have an API key, so a health
check that read only it would call such a node healthy while every request
fails; the clients' checks read a route that needs the key (checked against the
real servers too, in tests/backends/test_contract.py::test_api_key).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from {{ cookiecutter.package_name }}.api.app import create_app

import backends.conftest
from .conftest import KEY, MODEL, UPSTREAM, fleet, running

AUTH = {"authorization": f"Bearer {KEY}"}


# Clients whose servers are reached with the node's key (and have simulators that check it).
KEYED = ("vllm", "llamacpp", "openai_compatible")


@pytest.mark.parametrize("node_type", [t for t in backends.conftest.PRESENT if t in KEYED])
async def test_a_node_refusing_our_key_is_not_ready_and_not_healthy(
    sim_server: Any, node_type: str
) -> None:
    dialect = backends.conftest.DIALECTS[node_type]
    node = await sim_server(dialect=dialect, models=[UPSTREAM], api_key="right-key")
    settings = fleet(node.url, load_balancer={"health_check_interval_s": 0.2})
    wrong = settings.nodes[0].model_copy(
        update={"type": node_type, "api_key": SecretStr("a-wrong-key")}
    )
    settings = settings.model_copy(update={"nodes": [wrong]})
    async with running(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as http:
        ready = None

        async def not_ready() -> bool:
            nonlocal ready
            ready = await http.get("/ready")
            return ready.status_code == 503

        for _ in range(100):
            if await not_ready():
                break
            await asyncio.sleep(0.05)
        assert ready is not None and ready.status_code == 503
        assert MODEL in ready.json()["models_without_healthy_node"]
        metrics = (await http.get("/metrics", headers=AUTH)).text
        healthy = [line for line in metrics.splitlines() if line.startswith("llm_node_up")]
        assert healthy and all(line.endswith(" 0.0") for line in healthy), healthy
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        answer = await http.post("/v1/chat/completions", json=chat, headers=AUTH)
        assert answer.status_code >= 500
        assert "a-wrong-key" not in answer.text and "right-key" not in answer.text
