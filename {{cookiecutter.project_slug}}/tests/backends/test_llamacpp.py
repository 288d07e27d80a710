"""llama.cpp: reasoning_content, slots, and a server started without --metrics."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import httpx
import pytest

from {{ cookiecutter.package_name }}.backends.llamacpp import LlamaCppClient
from {{ cookiecutter.package_name }}.llm.errors import ContextLengthExceededError
from {{ cookiecutter.package_name }}.llm.models import ChatCompletionRequest, ChatMessage

import sim.helpers
from .conftest import ClientFactory, canned


def thinking_request(model: str) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model=model,
        messages=[ChatMessage(role="user", content="think first")],
        reasoning={"effort": "medium"},
    )


async def test_reasoning_content_becomes_reasoning(make_client: ClientFactory) -> None:
    client, server = await make_client("llamacpp", reasoning_tokens=3, output_tokens=2)
    request = thinking_request(server.sim.config.model_names()[0])
    answer = await client.chat_completion(request)
    message = answer.choices[0].message
    assert message.reasoning is not None and len(message.reasoning.split()) == 3
    assert "reasoning_content" not in message.wire()
    chunks = [chunk async for chunk in client.stream_chat_completion(request)]
    streamed = "".join(c.choices[0].delta.reasoning or "" for c in chunks if c.choices)
    assert streamed == message.reasoning
    deltas = [chunk.wire()["choices"][0]["delta"] for chunk in chunks if chunk.choices]
    assert all("reasoning_content" not in delta for delta in deltas)


async def test_slots_give_load_without_metrics(make_client: ClientFactory) -> None:
    client, server = await make_client(
        "llamacpp", metrics_enabled=False, max_concurrency=3, tokens_per_s=20, output_tokens=100
    )
    assert isinstance(client, LlamaCppClient)
    await client.discover_models()
    assert client.total_slots == 3
    request = thinking_request(server.sim.config.model_names()[0])
    async with aclosing(client.stream_chat_completion(request)) as stream:
        await anext(stream)
        await client.check_health()
    metrics = client.get_metrics()
    assert (metrics.server_running, metrics.server_waiting, metrics.server_capacity) == (
        1.0,
        None,
        3,
    )


async def test_metrics_give_the_deferred_queue(make_client: ClientFactory) -> None:
    client, server = await make_client(
        "llamacpp", max_concurrency=1, tokens_per_s=20, output_tokens=100
    )
    request = thinking_request(server.sim.config.model_names()[0])
    async with aclosing(client.stream_chat_completion(request)) as first:
        await anext(first)
        queued = asyncio.create_task(client.chat_completion(request))
        await sim.helpers.eventually(lambda: server.sim.waiting == 1, "a deferred request")
        await client.check_health()
        queued.cancel()
    metrics = client.get_metrics()
    assert (metrics.server_running, metrics.server_waiting) == (1.0, 1.0)


async def test_error_event_inside_a_200_stream() -> None:
    """llama-server reports some failures after the 200 as an `error:` SSE field."""

    def refusing(request: httpx.Request) -> httpx.Response:
        body = (
            b'error: {"code": 400, "message": "the request exceeds the available context size,'
            b' try increasing it", "type": "exceed_context_size_error"}\n\n'
        )
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    client = await canned("llamacpp", refusing)
    request = ChatCompletionRequest(model="m", messages=[ChatMessage(role="user", content="hi")])
    try:
        with pytest.raises(ContextLengthExceededError, match="available context size") as caught:
            [chunk async for chunk in client.stream_chat_completion(request)]
        assert not caught.value.retryable  # the caller's request: never held against the node
    finally:
        await client.aclose()


@pytest.mark.parametrize("slots_open", [True, False])
async def test_running_comes_from_slots_over_the_metric(slots_open: bool) -> None:
    """A real llama-server's `llamacpp:requests_processing` read 0 in 3 of 8 reads while
    /slots showed both slots processing: /slots wins, the metric only stands in for it
    (--no-slots); the queue comes from the metric either way."""
    slots = [{"id": index, "is_processing": True} for index in range(2)]
    metrics = "llamacpp:requests_processing 0\nllamacpp:requests_deferred 1\n"

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/slots":
            return httpx.Response(200, json=slots) if slots_open else httpx.Response(501)
        if request.url.path == "/metrics":
            return httpx.Response(200, text=metrics)
        return httpx.Response(200, json={"status": "ok"})

    client = await canned("llamacpp", server)
    try:
        await client.check_health()
        gauges = client.get_metrics()
        assert (gauges.server_running, gauges.server_waiting) == (2.0 if slots_open else 0.0, 1.0)
    finally:
        await client.aclose()
