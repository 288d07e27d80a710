"""The contract every client keeps, checked against the simulator of its server's dialect.

Parametrized over the client types this project was generated with; the
OpenAI-compatible client is always among them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from contextlib import aclosing
from typing import Any

import pytest

import sim.helpers
from {{ cookiecutter.package_name }}.backends.base import HttpClient
from {{ cookiecutter.package_name }}.llm.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    NotSupportedError,
    OverloadedError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from {{ cookiecutter.package_name }}.llm.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    EmbeddingRequest,
    FunctionCall,
    TextCompletionRequest,
    ToolCall,
)
from {{ cookiecutter.package_name }}.sim import SimHandle

from .conftest import PRESENT, ClientFactory, client_for

PROMPT = "tell me about the quiet sea"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]
# Servers that publish load gauges (the others are measured by in-flight counts alone).
GAUGED = {"vllm", "llamacpp", "tgi"}
# Servers that tell a model's context length.
CONTEXT_TOLD = {"ollama", "vllm", "llamacpp", "tgi"}
# TGI and llama-server serve one model and ignore `model`, so no name is unknown to them.
NAMES_MODELS = [name for name in PRESENT if name not in ("tgi", "llamacpp")]
# Ollama loads models per request: there is no loading state to see.
HAS_LOADING = [name for name in PRESENT if name != "ollama"]
TRANSPORTS = ["aiohttp", "httpx"]

each_type = pytest.mark.parametrize("node_type", PRESENT)


def model_of(server: SimHandle) -> str:
    return server.sim.config.model_names()[0]


def chat(model: str, text: str = PROMPT, **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model=model, messages=[ChatMessage(role="user", content=text)], **fields
    )


async def collect(client: HttpClient, request: ChatCompletionRequest) -> list[ChatCompletionChunk]:
    return [chunk async for chunk in client.stream_chat_completion(request)]


def streamed_text(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# --- answers -------------------------------------------------------------------------


@each_type
async def test_chat_answer_and_usage_are_the_servers(
    make_client: ClientFactory, node_type: str
) -> None:
    client, server = await make_client(node_type, output_tokens=6)
    answer = await client.chat_completion(chat(model_of(server)))
    choice = answer.choices[0]
    assert len(choice.message.text().split()) == 6
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (6, 6)
    assert answer.usage.total_tokens == 12


@each_type
async def test_token_limit_cuts_the_answer(make_client: ClientFactory, node_type: str) -> None:
    client, server = await make_client(node_type, output_tokens=10)
    answer = await client.chat_completion(chat(model_of(server), max_tokens=3))
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    assert len(answer.choices[0].message.text().split()) == 3


@each_type
async def test_text_completion(make_client: ClientFactory, node_type: str) -> None:
    client, server = await make_client(node_type, output_tokens=10)
    request = TextCompletionRequest(model=model_of(server), prompt="once upon a time", max_tokens=5)
    answer = await client.text_completion(request)
    assert len(answer.choices[0].text.split()) == 5
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (4, 5)


@each_type
async def test_streamed_chat_matches_the_whole_answer(
    make_client: ClientFactory, node_type: str
) -> None:
    client, server = await make_client(node_type, output_tokens=12)
    request = chat(model_of(server), seed=7)
    whole = await client.chat_completion(request)
    chunks = await collect(client, request)
    assert streamed_text(chunks) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({chunk.id for chunk in chunks}) == 1
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    # The last chunk carries the server's usage and no choices; no other chunk has usage.
    assert chunks[-1].choices == []
    assert chunks[-1].usage == whole.usage
    assert all(chunk.usage is None for chunk in chunks[:-1])


@each_type
async def test_streamed_text_matches_the_whole_answer(
    make_client: ClientFactory, node_type: str
) -> None:
    client, server = await make_client(node_type, output_tokens=12)
    request = TextCompletionRequest(model=model_of(server), prompt="once upon a time", max_tokens=8)
    whole = await client.text_completion(request)
    chunks = [chunk async for chunk in client.stream_text_completion(request)]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


@each_type
async def test_tool_call(make_client: ClientFactory, node_type: str) -> None:
    client, server = await make_client(node_type)
    answer = await client.chat_completion(chat(model_of(server), tools=TOOLS))
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "get_weather"
    # OpenAI's arguments are a JSON string, whatever the server sent.
    assert json.loads(calls[0].function.arguments) == {"city": "sim", "days": 1}
    assert calls[0].id


@each_type
async def test_streamed_tool_call(make_client: ClientFactory, node_type: str) -> None:
    client, server = await make_client(node_type)
    chunks = await collect(client, chat(model_of(server), tools=TOOLS))
    names, arguments, ids = "", "", set()
    for chunk in chunks:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            assert call.index == 0
            ids.add(call.id) if call.id else None
            if call.function is not None:
                names += call.function.name or ""
                arguments += call.function.arguments or ""
    assert names == "get_weather"
    assert json.loads(arguments) == {"city": "sim", "days": 1}
    assert len(ids) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


@each_type
async def test_tool_result_turn(make_client: ClientFactory, node_type: str) -> None:
    """An assistant tool call and its result go back to the server in its own shape."""
    client, server = await make_client(node_type, output_tokens=4)
    call = ToolCall(
        id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Oslo"}')
    )
    request = ChatCompletionRequest(
        model=model_of(server),
        tools=TOOLS,
        messages=[
            ChatMessage(role="user", content="weather in Oslo?"),
            ChatMessage(role="assistant", content=None, tool_calls=[call]),
            ChatMessage(role="tool", tool_call_id="call_1", content="sunny"),
        ],
    )
    answer = await client.chat_completion(request)
    assert answer.choices[0].finish_reason == "stop"
    assert len(answer.choices[0].message.text().split()) == 4


@each_type
async def test_embeddings(make_client: ClientFactory, node_type: str) -> None:
    client, server = await make_client(node_type, embedding_dim=5)
    request = EmbeddingRequest(model=model_of(server), input=["one two", "three"])
    if node_type == "tgi":
        with pytest.raises(NotSupportedError):
            await client.embeddings(request)
        return
    floats = await client.embeddings(request)
    assert [item.index for item in floats.data] == [0, 1]
    assert all(
        isinstance(item.embedding, list) and len(item.embedding) == 5 for item in floats.data
    )
    assert floats.usage.prompt_tokens == 3
    encoded = await client.embeddings(request.model_copy(update={"encoding_format": "base64"}))
    first = encoded.data[0].embedding
    assert isinstance(first, str)
    assert list(struct.unpack("<5f", base64.b64decode(first))) == pytest.approx(
        floats.data[0].embedding
    )


# --- discovery, health and load --------------------------------------------------------


@each_type
async def test_model_and_context_discovery(make_client: ClientFactory, node_type: str) -> None:
    client, server = await make_client(node_type, context_length=2048)
    found = await client.discover_models()
    by_id = {model.id: model for model in found}
    assert model_of(server) in by_id
    expected = 2048 if node_type in CONTEXT_TOLD else None
    assert by_id[model_of(server)].context_length == expected
    # Configured models are listed with what discovery learned.
    assert client.get_supported_models()[0].context_length == expected


@each_type
async def test_health_and_load_gauges(make_client: ClientFactory, node_type: str) -> None:
    client, server = await make_client(node_type, tokens_per_s=20, output_tokens=100)
    await client.check_health()
    streams = [
        client.stream_chat_completion(chat(model_of(server), text=f"story {i}")) for i in range(2)
    ]
    async with aclosing(streams[0]), aclosing(streams[1]):
        for stream in streams:
            await anext(stream)
        await client.check_health()
        metrics = client.get_metrics()
        if node_type in GAUGED:
            assert metrics.server_running == 2
            assert metrics.server_signals_age_s is not None
        else:
            assert metrics.server_running is None and metrics.server_signals_age_s is None
        if node_type == "vllm":
            assert (
                metrics.server_kv_cache_usage is not None and 0 < metrics.server_kv_cache_usage <= 1
            )


@pytest.mark.parametrize("node_type", HAS_LOADING)
async def test_health_fails_while_the_model_loads(
    make_client: ClientFactory, node_type: str
) -> None:
    client, _ = await make_client(node_type, loading_s=60)
    with pytest.raises(UpstreamUnavailableError):
        await client.check_health()


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("node_type", NAMES_MODELS)
async def test_unknown_model(make_client: ClientFactory, node_type: str) -> None:
    client, _ = await make_client(node_type)
    with pytest.raises(ModelNotFoundError) as caught:
        await client.chat_completion(chat("no-such-model"))
    assert not caught.value.retryable
    assert "no-such-model" in caught.value.message  # the server's own words


@each_type
async def test_context_overflow(make_client: ClientFactory, node_type: str) -> None:
    client, server = await make_client(node_type, context_length=32)
    with pytest.raises(ContextLengthExceededError) as caught:
        await client.chat_completion(chat(model_of(server), text="word " * 64))
    assert not caught.value.retryable
    assert caught.value.status_code == 400


@each_type
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the malformed stop, on purpose
async def test_invalid_request(make_client: ClientFactory, node_type: str) -> None:
    """A request the server refuses as malformed is the caller's error and not retried."""
    client, server = await make_client(node_type)
    request = ChatCompletionRequest.model_construct(
        model=model_of(server), messages=[ChatMessage(role="user", content="hi")], stop=[5]
    )
    with pytest.raises(InvalidRequestError) as caught:
        await client.chat_completion(request)
    assert not caught.value.retryable and caught.value.status_code == 400


@each_type
async def test_overload_is_retryable(make_client: ClientFactory, node_type: str) -> None:
    client, server = await make_client(
        node_type, max_concurrency=1, max_queue=0, tokens_per_s=20, output_tokens=100
    )
    async with aclosing(client.stream_chat_completion(chat(model_of(server)))) as busy:
        await anext(busy)
        with pytest.raises(OverloadedError) as caught:
            await client.chat_completion(chat(model_of(server)))
    assert caught.value.retryable and caught.value.status_code == 429


@each_type
async def test_server_error_is_retryable(make_client: ClientFactory, node_type: str) -> None:
    client, server = await make_client(node_type, error_rate=1.0)
    with pytest.raises(UpstreamError) as caught:
        await client.chat_completion(chat(model_of(server)))
    assert caught.value.retryable
    with pytest.raises(UpstreamError):
        await collect(client, chat(model_of(server)))


@each_type
async def test_api_key(make_client: ClientFactory, node_type: str) -> None:
    client, server = await make_client(node_type, api_key="right", node_api_key="right")
    assert (await client.chat_completion(chat(model_of(server)))).usage is not None
    wrong, server = await make_client(node_type, api_key="right", node_api_key="wrong")
    # The node refusing our key is the operator's problem, not the caller's: retry elsewhere.
    with pytest.raises(UpstreamError, match="credentials") as caught:
        await wrong.chat_completion(chat(model_of(server)))
    assert caught.value.retryable


@each_type
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_connection_refused(node_type: str, transport: str, closed_port: int) -> None:
    client = client_for(
        node_type, f"http://127.0.0.1:{closed_port}", ["m"], http_transport=transport
    )
    try:
        with pytest.raises(UpstreamUnavailableError) as caught:
            await client.chat_completion(chat("m"))
        assert caught.value.retryable
        assert "127.0.0.1" not in caught.value.message  # no internal address goes out
        with pytest.raises(UpstreamUnavailableError):
            await collect(client, chat("m"))
        with pytest.raises(UpstreamUnavailableError):
            await client.check_health()
    finally:
        await client.aclose()


@each_type
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_timeout_before_first_byte(
    make_client: ClientFactory, node_type: str, transport: str
) -> None:
    client, server = await make_client(
        node_type, hang_rate=1.0, lb={"read_timeout_s": 0.2, "http_transport": transport}
    )
    with pytest.raises(UpstreamTimeoutError) as caught:
        await client.chat_completion(chat(model_of(server)))
    assert caught.value.retryable
    with pytest.raises(UpstreamTimeoutError):
        await collect(client, chat(model_of(server)))


@each_type
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_connection_dropped_mid_stream(
    make_client: ClientFactory, node_type: str, transport: str
) -> None:
    client, server = await make_client(
        node_type, drop_rate=1.0, output_tokens=20, lb={"http_transport": transport}
    )
    received: list[ChatCompletionChunk] = []
    with pytest.raises(UpstreamError) as caught:
        async for chunk in client.stream_chat_completion(chat(model_of(server))):
            received.append(chunk)
    assert caught.value.retryable
    assert received  # it failed after the first chunk, from the iterator
    with pytest.raises(UpstreamError) as caught:
        await client.chat_completion(chat(model_of(server)))
    assert caught.value.retryable


# --- cancellation and bytes ----------------------------------------------------------------


@each_type
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_closing_a_stream_stops_the_server(
    make_client: ClientFactory, node_type: str, transport: str
) -> None:
    client, server = await make_client(
        node_type, tokens_per_s=50, output_tokens=500, lb={"http_transport": transport}
    )
    async with aclosing(client.stream_chat_completion(chat(model_of(server)))) as stream:
        await anext(stream)
        await anext(stream)
    await sim.helpers.eventually(
        lambda: server.sim.cancelled_total == 1, "the server to see the cancel"
    )
    await sim.helpers.eventually(lambda: server.sim.running == 0, "the server to free the slot")


@each_type
async def test_cancelled_task_stops_the_server(make_client: ClientFactory, node_type: str) -> None:
    client, server = await make_client(node_type, tokens_per_s=50, output_tokens=500)

    async def consume() -> None:
        await collect(client, chat(model_of(server)))

    task = asyncio.create_task(consume())
    await sim.helpers.eventually(lambda: server.sim.generation_tokens_total >= 2, "tokens to flow")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sim.helpers.eventually(
        lambda: server.sim.cancelled_total == 1, "the server to see the cancel"
    )


@each_type
async def test_cancelled_whole_request_stops_the_server(
    make_client: ClientFactory, node_type: str
) -> None:
    client, server = await make_client(node_type, tokens_per_s=50, output_tokens=500)
    task = asyncio.create_task(client.chat_completion(chat(model_of(server))))
    await sim.helpers.eventually(lambda: server.sim.running == 1, "the request to start")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sim.helpers.eventually(
        lambda: server.sim.cancelled_total == 1, "the server to see the cancel"
    )


@each_type
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_split_utf8_survives_streaming(
    make_client: ClientFactory, node_type: str, transport: str
) -> None:
    client, server = await make_client(
        node_type, split_utf8=True, output_tokens=40, lb={"http_transport": transport}
    )
    request = chat(model_of(server), seed=3)
    whole = await client.chat_completion(request)
    text = streamed_text(await collect(client, request))
    assert text == whole.choices[0].message.content
    assert any(ord(char) > 127 for char in text)
    assert "\ufffd" not in text
