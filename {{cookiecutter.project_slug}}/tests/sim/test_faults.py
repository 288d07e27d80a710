"""Faults, overload, cancellation, kill/revive and split UTF-8: what clients are tested against."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from {{ cookiecutter.package_name }}_sim import SimConfig, create_app

from .helpers import eventually, sse_json

MODEL = "llama-3.2-3b-instruct"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}


async def test_error_rate_answers_500_in_the_dialects_shape(sim_server) -> None:
    server = await sim_server(dialect="openai", error_rate=1.0)
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
        server.sim.set_faults(error_rate=0.0)
        healthy = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert healthy.status_code == 200
    assert server.sim.errors_total == 1


async def test_error_rate_is_a_fraction(sim_server) -> None:
    server = await sim_server(dialect="openai", error_rate=0.5, seed=7)
    async with httpx.AsyncClient(base_url=server.url) as client:
        statuses = [
            (await client.post("/v1/chat/completions", json=CHAT)).status_code for _ in range(40)
        ]
    assert 5 < statuses.count(500) < 35
    assert statuses.count(500) + statuses.count(200) == 40


async def test_overload_once_concurrency_and_queue_are_full(sim_server) -> None:
    server = await sim_server(dialect="openai", max_concurrency=2, max_queue=1, ttft_s=30)
    async with httpx.AsyncClient(base_url=server.url) as client:
        held = [
            asyncio.create_task(client.post("/v1/chat/completions", json=CHAT)) for _ in range(3)
        ]
        await eventually(lambda: server.sim.running + server.sim.waiting == 3, "three admitted")
        assert (server.sim.running, server.sim.waiting) == (2, 1)
        refused = await client.post("/v1/chat/completions", json=CHAT)
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        await eventually(lambda: server.sim.running + server.sim.waiting == 0, "all released")
    assert refused.status_code == 429
    assert server.sim.rejected_total == 1
    assert server.sim.cancelled_total == 3


async def test_cancelled_stream_is_noticed_and_counted(sim_server) -> None:
    server = await sim_server(dialect="vllm", models=[MODEL], tokens_per_s=50, output_tokens=500)
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response,
    ):
        async for _ in response.aiter_lines():
            break
    await eventually(lambda: server.sim.cancelled_total == 1, "the cancellation")
    await eventually(lambda: server.sim.running == 0, "the slot to be freed")
    assert server.sim.generation_tokens_total < 500
    assert server.sim.completed_total == 0


async def test_drop_closes_the_stream_mid_way(sim_server) -> None:
    server = await sim_server(dialect="openai", drop_rate=1.0, output_tokens=10)
    async with httpx.AsyncClient(base_url=server.url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/v1/chat/completions", json=CHAT)
    assert server.sim.dropped_total == 2


async def test_hang_accepts_and_never_answers(sim_server) -> None:
    server = await sim_server(dialect="openai", hang_rate=1.0)
    async with httpx.AsyncClient(base_url=server.url, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v1/chat/completions", json=CHAT)
    assert server.sim.hung_total == 1
    await eventually(lambda: server.sim.cancelled_total == 1, "the client to give up")


async def test_kill_refuses_connections_and_revive_serves_on_the_same_port(sim_server) -> None:
    server = await sim_server(dialect="openai", ttft_s=30)
    port = server.port
    async with httpx.AsyncClient(base_url=server.url) as client:
        in_flight = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
        await eventually(lambda: server.sim.running == 1, "one running")
        await server.stop()
        with pytest.raises(httpx.RemoteProtocolError):
            await in_flight
        with pytest.raises(httpx.ConnectError):
            await client.get("/v1/models")
        await server.start()
        server.sim.config.ttft_s = 0
        answer = await client.post("/v1/chat/completions", json=CHAT)
    assert server.port == port
    assert answer.status_code == 200
    assert server.sim.requests_total == 2


async def test_split_utf8_splits_characters_across_chunks(sim_server) -> None:
    server = await sim_server(dialect="openai", split_utf8=True, output_tokens=40, seed=3)
    raw: list[bytes] = []
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response,
    ):
        async for chunk in response.aiter_raw():
            raw.append(chunk)
    undecodable = 0
    for chunk in raw:
        try:
            chunk.decode()
        except UnicodeDecodeError:
            undecodable += 1
    assert undecodable > 0
    text = b"".join(raw).decode()
    assert any(ord(char) > 127 for char in text)
    assert sse_json(httpx.Response(200, content=text.encode()))[-1]["choices"][0]["finish_reason"]


async def test_deterministic_output_for_the_same_prompt_and_seed(sim_server) -> None:
    server = await sim_server(dialect="openai", seed=11)
    async with httpx.AsyncClient(base_url=server.url) as client:
        first, second, other = [
            (await client.post("/v1/chat/completions", json=body)).json()
            for body in (CHAT, CHAT, {**CHAT, "seed": 5})
        ]
    text = [answer["choices"][0]["message"]["content"] for answer in (first, second, other)]
    assert text[0] == text[1] != text[2]


async def test_api_key_and_bad_input_in_openai_shape(sim_server) -> None:
    server = await sim_server(dialect="openai", api_key="k")
    headers = {"Authorization": "Bearer k"}
    async with httpx.AsyncClient(base_url=server.url) as client:
        refused = await client.get("/v1/models")
        not_json = await client.post("/v1/chat/completions", content=b"{", headers=headers)
        no_messages = await client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": []}, headers=headers
        )
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]
    assert no_messages.status_code == 400
    assert no_messages.json()["error"]["param"] == "messages"


def test_create_app_exposes_the_simulator() -> None:
    app = create_app(SimConfig(dialect="tgi"))
    assert app.state.sim.config.dialect == "tgi"
    assert app.state.sim.stats()["running"] == 0
