"""End to end with the official openai client: app -> real balancer -> real client -> sim node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest

from {{ cookiecutter.package_name }}.api.app import create_app
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}_sim import SimHandle

from .conftest import KEY, running

MODEL = "acme/llama-3.2-3b"
UPSTREAM = "llama-3.2-3b-instruct"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]


def fleet_settings(urls: list[str], **sections: Any) -> Settings:
    lb = {"max_retries": 0, "selection_timeout_s": 0, "health_check_interval_s": 30}
    return Settings.model_validate(
        {
            "api": {"api_keys": [KEY], **sections.get("api", {})},
            "load_balancer": {**lb, **sections.get("load_balancer", {})},
            "nodes": [
                {
                    "name": f"node-{index}",
                    "url": url,
                    "type": "openai_compatible",
                    "max_concurrency": sections.get("max_concurrency", 8),
                    "models": [{"id": MODEL, "backend_model": UPSTREAM}],
                }
                for index, url in enumerate(urls)
            ],
            "models": [{"id": MODEL, "max_output_length": 64}],
        }
    )


@pytest.fixture
async def provider(sim_server: Callable[..., Any]) -> Callable[..., Any]:
    """`async with provider(sim_options, **settings) as (client, sim)`."""

    @asynccontextmanager
    async def start(
        sim: dict[str, Any] | None = None, **sections: Any
    ) -> AsyncIterator[tuple[openai.AsyncOpenAI, SimHandle]]:
        handle: SimHandle = await sim_server(
            dialect="openai", models=[UPSTREAM], embedding_dim=4, **(sim or {})
        )
        app = create_app(fleet_settings([handle.url], **sections))
        async with running(app) as url:
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
            async with client:
                yield client, handle

    return start


async def test_chat_models_and_embeddings(provider: Any) -> None:
    async with provider() as (client, _):
        answer = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        models = await client.models.list()
        vectors = await client.embeddings.create(model=MODEL, input=["a b", "c"])
    assert answer.model == MODEL
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    assert [model.id for model in models.data] == [MODEL]
    assert [item.index for item in vectors.data] == [0, 1]
    assert len(vectors.data[0].embedding) == 4


async def test_streaming_with_usage(provider: Any) -> None:
    async with provider() as (client, _):
        stream = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert {chunk.model for chunk in chunks} == {MODEL}


async def test_text_completion_stream(provider: Any) -> None:
    async with provider() as (client, _):
        stream = await client.completions.create(model=MODEL, prompt="Once", stream=True)
        texts = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert "".join(texts)


async def test_client_errors(provider: Any) -> None:
    async with provider() as (client, _):
        with pytest.raises(openai.BadRequestError, match="temperature"):
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=7)
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="acme/none", messages=MESSAGES)
        wrong = client.with_options(api_key="sk-wrong")
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model=MODEL, messages=MESSAGES)


async def test_busy_fleet_is_429_with_retry_after(provider: Any) -> None:
    async with provider({"ttft_s": 1.0}, max_concurrency=1) as (client, _):
        first = asyncio.create_task(client.chat.completions.create(model=MODEL, messages=MESSAGES))
        await asyncio.sleep(0.2)
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        await first
    assert int(caught.value.response.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("sim", "api", "status"),
    [
        ({"error_rate": 1.0}, {}, 502),  # the node answers 500
        ({"hang_rate": 1.0}, {"request_timeout_s": 0.5}, 504),  # our deadline passes
    ],
)
async def test_upstream_failures(provider: Any, sim: Any, api: Any, status: int) -> None:
    async with provider(sim, api=api) as (client, _):
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.status_code == status
    assert "127.0.0.1" not in caught.value.response.text


async def test_node_gone_is_503(provider: Any) -> None:
    async with provider() as (client, handle):
        await handle.stop()
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.status_code == 503
    assert "127.0.0.1" not in caught.value.response.text


async def test_leaving_a_stream_cancels_the_node_request(provider: Any) -> None:
    async with provider({"tokens_per_s": 50, "output_tokens": 400}) as (client, handle):
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        async for _ in stream:
            break
        await stream.close()
        for _ in range(100):
            if handle.sim.stats()["running"] == 0:
                break
            await asyncio.sleep(0.05)
        stats = handle.sim.stats()
    assert stats["running"] == 0
    assert stats["completed_total"] == 0
