"""The contract every client keeps, checked against the simulator of its server's dialect
and, where the test can run on one, against the real server.

Parametrized over the client types this project was generated with; the
OpenAI-compatible client is always among them.  Tests taking `served` run on the
simulator and on a real vLLM and llama-server when the template's CI starts them
(tests/backends/conftest.py): the simulator is not evidence that a real server
works, so the assertions there hold for both.  Tests taking `make_client` need
the simulator's controls (faults, pacing, exact lengths).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
from collections.abc import Callable
from contextlib import aclosing
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from {{ cookiecutter.package_name }}.backends.base import HttpClient
from {{ cookiecutter.package_name }}.llm.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    NotSupportedError,
    OverloadedError,
    UpstreamCredentialsError,
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
from {{ cookiecutter.package_name }}_sim import SimHandle

import sim.helpers
from .conftest import (
    PRESENT,
    REAL_CONTEXT,
    SERVED,
    ClientFactory,
    ServedFactory,
    client_for,
)

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
# A tool whose arguments a random model, held to the schema, writes in a few tokens.
BOUNDED_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "enum": ["Oslo", "Lima"]},
                    "days": {"type": "integer", "enum": [1, 2]},
                },
                "required": ["city", "days"],
                "additionalProperties": False,
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

# vLLM and llama.cpp say when they serve no embeddings (no pooling runner, no --embeddings).
EMBEDS_ON_REQUEST = {"vllm", "llamacpp"}
# Real servers that force a named tool call on any model.  llama-server offers tool
# calls only for chat templates it recognises, which the test model's is not.
FORCES_TOOLS = {"vllm"}
# Servers whose tool calling hangs on the chat template (the `served` simulator copies the
# real test model's, which has none).
TEMPLATE_TOOLS = {"llamacpp"}
# Servers that serve a max_tokens overrunning the context and cut the answer there
# (OpenAI, and servers copying it, refuse it).
CUT_AT_CONTEXT = {"vllm", "llamacpp"}
# Clients whose health check reads a route that needs the node's key.
CHECKS_KEY = {"vllm", "llamacpp", "openai_compatible"}
# Long enough that an answer run to the end takes seconds on the real servers.
LONG = REAL_CONTEXT - 50
# Servers that stop a non-streamed request when its client leaves (llama-server does not).
STOPS_WHOLE_ANSWERS = [name for name in PRESENT if name != "llamacpp"]
# The servers' own count of generated tokens.
GENERATED = {"vllm": "vllm:generation_tokens_total", "llamacpp": "llamacpp:tokens_predicted_total"}

Test = TypeVar("Test", bound=Callable[..., Any])
each_type = pytest.mark.parametrize("node_type", PRESENT)


def served_on(pairs: list[tuple[str, str]]) -> Callable[[Test], Test | None]:
    """Run on these (node type, "sim" or "real") servers.

    A bake that has none of their clients has no such test, rather than a skipped one:
    the template's CI counts every skip as a test that did not run.
    """
    if not pairs:
        return lambda test: None
    return pytest.mark.parametrize(
        "served", pairs, indirect=True, ids=[f"{name}-{where}" for name, where in pairs]
    )


each_served = served_on(SERVED)


def model_of(server: SimHandle) -> str:
    return server.sim.config.model_names()[0]


def chat(model: str, text: str = PROMPT, **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model=model, messages=[ChatMessage(role="user", content=text)], **fields
    )


async def collect(client: HttpClient, request: ChatCompletionRequest) -> list[ChatCompletionChunk]:
    return [chunk async for chunk in client.stream_chat_completion(request)]


async def generated_tokens(client: HttpClient) -> float:
    """The server's total of generated tokens (a counter), from its /metrics."""
    name = GENERATED[client.node.type]
    text = (await client.probe("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


async def settled(client: HttpClient, *, running: float = 0, waiting: float = 0) -> None:
    """Wait until the server's gauges read `running` and `waiting` (a real server is
    shared by the tests: an earlier test's aborted requests may still be leaving)."""
    for _ in range(250):
        await client.check_health()
        metrics = client.get_metrics()
        if (metrics.server_running, metrics.server_waiting or 0) == (running, waiting):
            return
        await asyncio.sleep(0.02)
    metrics = client.get_metrics()
    raise AssertionError(
        f"the server shows {metrics.server_running} running and {metrics.server_waiting} "
        f"waiting, not {running} and {waiting}"
    )


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


@each_served
async def test_token_limit_cuts_the_answer(served: ServedFactory) -> None:
    client, server = await served()
    answer = await client.chat_completion(chat(server.model, max_tokens=3, temperature=0))
    choice = answer.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.role == "assistant" and choice.message.text()
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 3


@each_served
async def test_text_completion(served: ServedFactory) -> None:
    client, server = await served()
    request = TextCompletionRequest(
        model=server.model, prompt="once upon a time", max_tokens=5, temperature=0
    )
    answer = await client.text_completion(request)
    assert answer.choices[0].text
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 5
    assert answer.usage.prompt_tokens > 0


@each_served
async def test_streamed_chat_matches_the_whole_answer(served: ServedFactory) -> None:
    client, server = await served()
    request = chat(server.model, seed=7, temperature=0, max_tokens=12)
    whole = await client.chat_completion(request)
    chunks = await collect(client, request)
    assert streamed_text(chunks) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({chunk.id for chunk in chunks}) == 1
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["length"]
    # vLLM sends the finish on the last content chunk, the others on a chunk after it.
    closing = next(c.choices[0] for c in chunks if c.choices and c.choices[0].finish_reason)
    assert bool(closing.delta.content) == (server.node_type == "vllm")
    # The last chunk carries the server's usage and no choices; no other chunk has usage.
    assert chunks[-1].choices == []
    assert chunks[-1].usage == whole.usage
    assert all(chunk.usage is None for chunk in chunks[:-1])


@each_served
async def test_streamed_text_matches_the_whole_answer(served: ServedFactory) -> None:
    client, server = await served()
    request = TextCompletionRequest(
        model=server.model, prompt="once upon a time", max_tokens=8, temperature=0
    )
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


@served_on([p for p in SERVED if p[0] in FORCES_TOOLS or p[0] not in TEMPLATE_TOOLS])
async def test_forced_tool_call(served: ServedFactory) -> None:
    """A named tool_choice: the server constrains the answer to the tool's arguments
    schema, so even a model never taught tools calls it, whole and streamed."""
    client, server = await served()
    request = chat(
        server.model,
        tools=BOUNDED_TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=64,
        temperature=0,
    )
    answer = await client.chat_completion(request)
    choice = answer.choices[0]
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1 and calls[0].id
    assert calls[0].function.name == "get_weather"
    arguments = json.loads(calls[0].function.arguments)
    assert arguments["city"] in ("Oslo", "Lima") and arguments["days"] in (1, 2)
    assert choice.finish_reason == "tool_calls"
    chunks = await collect(client, request)
    streamed = "".join(
        call.function.arguments or ""
        for chunk in chunks
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or []
        if call.function is not None
    )
    assert json.loads(streamed) == arguments


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


@each_served
async def test_embeddings(served: ServedFactory) -> None:
    client, server = await served(embeddings=True)
    request = EmbeddingRequest(model=server.model, input=["one two", "three"])
    if server.node_type == "tgi":
        with pytest.raises(NotSupportedError):
            await client.embeddings(request)
        return
    floats = await client.embeddings(request)
    assert [item.index for item in floats.data] == [0, 1]
    vectors = [item.embedding for item in floats.data]
    assert all(isinstance(vector, list) and vector for vector in vectors)
    assert len({len(vector) for vector in vectors}) == 1  # one dimension for the model
    assert floats.usage.prompt_tokens > 0
    encoded = await client.embeddings(request.model_copy(update={"encoding_format": "base64"}))
    first, floated = encoded.data[0].embedding, vectors[0]
    assert isinstance(first, str) and isinstance(floated, list)
    unpacked = struct.unpack(f"<{len(floated)}f", base64.b64decode(first))
    assert list(unpacked) == pytest.approx(floated, rel=1e-4, abs=1e-6)


@served_on([pair for pair in SERVED if pair[0] in EMBEDS_ON_REQUEST])
async def test_no_embeddings_is_the_callers_error(served: ServedFactory) -> None:
    """vLLM without a pooling runner and llama-server without --embeddings serve none:
    a clear invalid_request_error, learned from the server and remembered."""
    client, server = await served()
    await client.discover_models()
    request = EmbeddingRequest(model=server.model, input="one two")
    with pytest.raises(NotSupportedError, match="does not serve embeddings") as caught:
        await client.embeddings(request)
    assert caught.value.status_code == 400
    assert caught.value.error_type == "invalid_request_error"
    assert not caught.value.retryable
    assert client.supports_embeddings is False


# --- discovery, health and load --------------------------------------------------------


@each_served
async def test_model_and_context_discovery(served: ServedFactory) -> None:
    client, server = await served()
    found = await client.discover_models()
    by_id = {model.id: model for model in found}
    assert server.model in by_id
    expected = REAL_CONTEXT if server.node_type in CONTEXT_TOLD else None
    assert by_id[server.model].context_length == expected
    # Configured models are listed with what discovery learned.
    assert client.get_supported_models()[0].context_length == expected


@each_served
async def test_health_and_load_gauges(served: ServedFactory) -> None:
    client, server = await served()
    await client.check_health()
    if server.node_type in GAUGED:
        await settled(client)
    streams = [
        client.stream_chat_completion(chat(server.model, text=f"story {i}", max_tokens=LONG))
        for i in range(2)
    ]
    async with aclosing(streams[0]), aclosing(streams[1]):
        for stream in streams:
            await anext(stream)
        await client.check_health()
        metrics = client.get_metrics()
        if server.node_type in GAUGED:
            assert metrics.server_running == 2
            assert metrics.server_signals_age_s is not None
        else:
            assert metrics.server_running is None and metrics.server_signals_age_s is None
        if server.node_type == "vllm":
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


@served_on([p for p in SERVED if p[0] in NAMES_MODELS])
async def test_unknown_model(served: ServedFactory) -> None:
    client, _ = await served()
    with pytest.raises(ModelNotFoundError) as caught:
        await client.chat_completion(chat("no-such-model"))
    assert not caught.value.retryable
    assert "no-such-model" in caught.value.message  # the server's own words


@each_served
async def test_context_overflow(served: ServedFactory) -> None:
    """Only a prompt that fills the context alone is refused, in words client libraries
    read as a context-window error; a max_tokens that overruns it is served and cut."""
    client, server = await served()
    with pytest.raises(ContextLengthExceededError) as caught:
        await client.chat_completion(chat(server.model, text="word " * (REAL_CONTEXT + 50)))
    assert not caught.value.retryable
    assert caught.value.status_code == 400
    assert "maximum context length" in caught.value.message or server.node_type != "vllm"
    if server.node_type not in CUT_AT_CONTEXT:
        return
    # A prompt filling most of the context, measured by the server's own tokenizer.
    request = TextCompletionRequest(
        model=server.model, prompt="once " * (REAL_CONTEXT // 4), max_tokens=1, temperature=0
    )
    probe = await client.text_completion(request)
    assert probe.usage is not None
    room = REAL_CONTEXT - probe.usage.prompt_tokens
    assert room > 0
    answer = await client.text_completion(request.model_copy(update={"max_tokens": room + 50}))
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert 0 < answer.usage.completion_tokens <= room


@served_on([p for p in SERVED if p[0] == "vllm"])
async def test_max_tokens_over_the_context_in_openai_words(served: ServedFactory) -> None:
    """vLLM refuses a max_tokens above max_model_len, in its own words; the client says it
    as OpenAI does, so client libraries' context-window fallbacks fire."""
    client, server = await served()
    with pytest.raises(ContextLengthExceededError) as caught:
        await client.chat_completion(chat(server.model, max_tokens=REAL_CONTEXT + 1))
    assert caught.value.message.startswith(
        f"This model's maximum context length is {REAL_CONTEXT} tokens."
    )


@each_served
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the malformed stop, on purpose
async def test_invalid_request(served: ServedFactory) -> None:
    """A request the server refuses as malformed is the caller's error and not retried."""
    client, server = await served()
    request = ChatCompletionRequest.model_construct(
        model=server.model, messages=[ChatMessage(role="user", content="hi")], stop=[5]
    )
    with pytest.raises(InvalidRequestError) as caught:
        await client.chat_completion(request)
    assert not caught.value.retryable and caught.value.status_code == 400


@served_on([p for p in SERVED if p[0] in ("vllm", "llamacpp", "openai_compatible")])
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the string, on purpose
async def test_a_sampling_number_that_is_not_one_is_refused(served: ServedFactory) -> None:
    """`temperature: "hot"` is a 400 from both real servers and OpenAI's (the API refuses it
    before it gets there; a node sent one must not answer 200).  Not measured on Ollama
    and TGI, whose simulators do not check it."""
    client, server = await served()
    request = chat(server.model, max_tokens=2).model_copy(update={"temperature": "hot"})
    with pytest.raises(InvalidRequestError) as caught:
        await client.chat_completion(request)
    assert caught.value.status_code == 400 and not caught.value.retryable
    assert "temperature" in caught.value.message or server.node_type == "openai_compatible"


@served_on([p for p in SERVED if p[0] in ("vllm", "llamacpp")])
async def test_a_very_long_prompt_is_a_context_error(served: ServedFactory) -> None:
    """vLLM bounds a long prompt by its characters before tokenizing it, and says so in
    the words client libraries read as a context-window error."""
    client, server = await served()
    with pytest.raises(ContextLengthExceededError) as caught:
        await client.chat_completion(chat(server.model, text="y " * (REAL_CONTEXT * 40)))
    if server.node_type == "vllm":
        assert "characters" in caught.value.message
        assert caught.value.message.startswith("This model's maximum context length is")


@served_on([p for p in SERVED if p[0] in FORCES_TOOLS or p[1] == "sim"])
async def test_tool_choice_auto_or_required_and_a_cut_call(served: ServedFactory) -> None:
    """`auto` or `required` may yield no call from a model never taught tools (a text
    answer, well formed); a call cut by max_tokens finishes with `length`."""
    client, server = await served()
    for choice in ("auto", "required"):
        request = chat(server.model, tools=BOUNDED_TOOLS, tool_choice=choice, max_tokens=24)
        answer = (await client.chat_completion(request)).choices[0]
        if answer.message.tool_calls:
            assert answer.finish_reason in ("tool_calls", "length")
        else:
            assert answer.finish_reason in ("stop", "length")
    named = {"type": "function", "function": {"name": "get_weather"}}
    # Ollama has no tool_choice, and its calls come whole; llama-server's test model none.
    if server.node_type == "ollama" or (
        server.node_type in TEMPLATE_TOOLS and server.where == "real"
    ):
        return
    cut = chat(server.model, tools=BOUNDED_TOOLS, tool_choice=named, max_tokens=2)
    answer = (await client.chat_completion(cut)).choices[0]
    assert answer.finish_reason == "length"


@served_on([p for p in SERVED if p[0] == "llamacpp"])
async def test_llama_server_shapes(served: ServedFactory) -> None:
    """llama-server: ignores tools its chat template cannot call (and /props says so),
    serves any model name as its own, answers an unknown route with a JSON 404, and
    keeps chatting when started with --embeddings."""
    client, server = await served()
    (model,) = await client.discover_models()
    assert model.capabilities.get("tools") is False
    answer = await client.chat_completion(chat(server.model, tools=TOOLS, max_tokens=3))
    assert not answer.choices[0].message.tool_calls
    assert answer.choices[0].finish_reason == "length"
    other = await client.chat_completion(chat("no-such-model", max_tokens=2))
    assert other.choices[0].message.text()
    with pytest.raises(ModelNotFoundError, match="File Not Found"):
        await client.probe("/no-such-route")
    embedder, _ = await served(embeddings=True)
    assert (await embedder.chat_completion(chat(server.model, max_tokens=2))).choices


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


@served_on([p for p in SERVED if p[0] == "vllm"])
async def test_full_queue_is_overload_with_a_retry_after(served: ServedFactory) -> None:
    """vLLM with --max-num-queued-reqs answers 503 "The engine is currently busy ..." with
    no Retry-After: overloaded, which the balancer tries elsewhere without counting a
    failure (tests/balancer)."""
    client, server = await served()
    streams = [
        client.stream_chat_completion(chat(server.model, text=f"story {i}", max_tokens=LONG))
        for i in range(3)
    ]
    await settled(client)
    try:
        for stream in streams[:2]:  # both sequences the server runs at once
            await anext(stream)
        queued = asyncio.create_task(anext(streams[2]))  # the one request it queues
        await settled(client, running=2, waiting=1)
        with pytest.raises(OverloadedError, match="busy") as caught:
            await client.chat_completion(chat(server.model, max_tokens=1))
        queued.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await queued
    finally:
        for stream in streams:
            await stream.aclose()
    assert caught.value.retryable and caught.value.status_code == 429
    assert caught.value.retry_after is None  # vLLM gives none; the balancer derives one


@each_served
async def test_api_key(served: ServedFactory) -> None:
    client, server = await served()
    assert (await client.chat_completion(chat(server.model, max_tokens=2))).usage is not None
    wrong = server.client(api_key="wrong")
    try:
        # The node refusing our key is the operator's problem, not the caller's: retry
        # elsewhere, and the health check fails too (health routes may be open).
        with pytest.raises(UpstreamError, match="credentials") as caught:
            await wrong.chat_completion(chat(server.model, max_tokens=2))
        assert caught.value.retryable
        if server.node_type in CHECKS_KEY:
            with pytest.raises(UpstreamCredentialsError):
                await wrong.check_health()
    finally:
        await wrong.aclose()


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


@served_on([p for p in SERVED if p[0] in GENERATED])
async def test_closing_a_stream_frees_the_server(served: ServedFactory) -> None:
    """The server's own gauges show the generation stopped long before max_tokens."""
    client, server = await served()
    await settled(client)
    before = await generated_tokens(client)
    async with aclosing(
        client.stream_chat_completion(chat(server.model, max_tokens=LONG))
    ) as stream:
        await anext(stream)
        await anext(stream)
    await settled(client)
    assert await generated_tokens(client) - before < LONG
    if server.handle is not None:
        assert server.handle.sim.cancelled_total == 1


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


@served_on([p for p in SERVED if p[0] in GENERATED])
async def test_a_whole_answer_whose_caller_left(served: ServedFactory) -> None:
    """vLLM stops a non-streamed request whose client left; llama-server generates it to
    the end (only its streams stop), as measured against both real servers."""
    client, server = await served()
    await settled(client)
    before = await generated_tokens(client)
    task = asyncio.create_task(client.chat_completion(chat(server.model, max_tokens=LONG)))
    await settled(client, running=1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(600):  # up to a minute: the real llama-server runs to max_tokens
        await client.check_health()
        if client.get_metrics().server_running == 0:
            break
        await asyncio.sleep(0.1)
    generated = await generated_tokens(client) - before
    if server.node_type == "llamacpp":
        assert generated > LONG // 2
    else:
        assert generated < LONG // 2


@pytest.mark.parametrize("node_type", STOPS_WHOLE_ANSWERS)
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
