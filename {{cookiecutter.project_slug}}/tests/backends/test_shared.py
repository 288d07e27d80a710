"""The shared pieces: choosing a client, reading errors and streams, the load tracker."""

from __future__ import annotations

import json
import sys

import httpx
import pytest

from {{ cookiecutter.package_name }}.backends import create_client
from {{ cookiecutter.package_name }}.backends.errors import error_for_status, error_in_stream, server_message
from {{ cookiecutter.package_name }}.backends.streams import ndjson_objects, sse_events
from {{ cookiecutter.package_name }}.config import ConfigError, LoadBalancerSettings, NodeSettings
from {{ cookiecutter.package_name }}.llm.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    NotSupportedError,
    OverloadedError,
    UpstreamCredentialsError,
    UpstreamError,
    UpstreamUnavailableError,
)
from {{ cookiecutter.package_name }}.llm.models import ChatCompletionRequest, ChatMessage, NodeMetrics

from .conftest import PRESENT, canned


@pytest.mark.parametrize("node_type", PRESENT)
async def test_each_generated_type_gets_its_client(node_type: str) -> None:
    node = NodeSettings(name="n", url="http://127.0.0.1:9", type=node_type)
    client = create_client(node, LoadBalancerSettings())
    try:
        assert type(client).__module__.endswith(f".backends.{node_type}")
    finally:
        await client.aclose()


def test_a_type_generated_without_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # The post-gen hook deletes unselected modules; a None entry makes importing fail alike.
    monkeypatch.setitem(sys.modules, f"{create_client.__module__}.vllm", None)
    node = NodeSettings(name="gpu-box", url="http://127.0.0.1:9", type="vllm")
    with pytest.raises(ConfigError) as caught:
        create_client(node, LoadBalancerSettings())
    message = str(caught.value)
    assert "'gpu-box'" in message and "'vllm'" in message and "generated without" in message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": {"message": "bad field", "type": "invalid_request_error"}}', "bad field"),
        (b'{"error": "flat words", "error_type": "validation"}', "flat words"),
        (b'{"object": "error", "message": "old vllm", "code": 400}', "old vllm"),
        (b'{"detail": [{"msg": "field required"}]}', '[{"msg": "field required"}]'),
        (b"plain text reason", "plain text reason"),
        (b"<html><body>502</body></html>", "the server answered HTTP 400"),
        (b"", "the server answered HTTP 400"),
    ],
)
def test_server_message_from_each_error_shape(body: bytes, message: str) -> None:
    assert server_message(body, 400) == message


def test_long_messages_are_cut() -> None:
    assert len(server_message(b"x" * 5000, 500)) == 1003


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable"),
    [
        (400, b'{"error": "max_tokens must be positive"}', InvalidRequestError, False),
        (422, b'{"error": "Input validation error: bad"}', InvalidRequestError, False),
        (
            400,
            b'{"error": "maximum context length is 4096 tokens"}',
            ContextLengthExceededError,
            False,
        ),
        (404, b'{"error": "model \\"x\\" not found"}', ModelNotFoundError, False),
        (429, b'{"error": "Model is overloaded"}', OverloadedError, True),
        (503, b'{"error": "server busy, please try again."}', OverloadedError, True),
        (503, b'{"error": {"message": "Loading model"}}', UpstreamUnavailableError, True),
        (500, b'{"error": "boom"}', UpstreamError, True),
        (424, b'{"error": "generation failed"}', UpstreamError, True),
        (401, b'{"error": "Unauthorized"}', UpstreamCredentialsError, True),
        (
            503,
            b'{"error": {"message": "The engine is currently busy and cannot accept new '
            b'requests. Please try again later or on a different instance.", '
            b'"type": "Service Unavailable", "param": null, "code": 503}}',
            OverloadedError,
            True,
        ),
        (
            503,
            b'{"error": {"message": "The engine has reached its prefill token backlog limit. '
            b'Please try again later or on a different instance."}}',
            OverloadedError,
            True,
        ),
        (
            400,
            b'{"error": {"message": "max_tokens=513 cannot be greater than max_model_len=512. '
            b'Please request fewer output tokens."}}',
            ContextLengthExceededError,
            False,
        ),
        (
            400,
            b'{"error": {"message": "This model\'s maximum context length is 512 tokens. '
            b"However, your prompt contains 100050 characters (more than 6144 characters, "
            b'which is the upper bound for 512 input tokens)."}}',
            ContextLengthExceededError,
            False,
        ),
        (404, b'{"detail": "Not Found"}', NotSupportedError, False),
        (
            501,
            b'{"error": {"code": 501, "message": "This server does not support embeddings. '
            b'Start it with `--embeddings`", "type": "not_supported_error"}}',
            NotSupportedError,
            False,
        ),
    ],
)
def test_status_and_words_choose_the_class(
    status: int, body: bytes, kind: type, retryable: bool
) -> None:
    error = error_for_status(status, body, {"retry-after": "3"})
    assert type(error) is kind
    assert error.retryable is retryable


def test_retry_after_is_kept() -> None:
    assert error_for_status(429, b"", {"retry-after": "7"}).retry_after == 7.0
    assert (
        error_for_status(429, b"", {"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}).retry_after
        is None
    )


async def test_sse_reader() -> None:
    body = (
        b": keep-alive\n\n"
        b'event: message\ndata: {"a": 1}\n\n'
        b'data:{"b": 2}\n\n'
        b'data: {"c":\ndata: 3}\n\n'
        b"data: [DONE]\n\n"
        b'data: {"after": "done"}\n\n'
    )
    response = httpx.Response(200, content=body)
    assert [event async for event in sse_events(response)] == [{"a": 1}, {"b": 2}, {"c": 3}]


async def test_sse_reader_surfaces_llamacpps_error_field() -> None:
    body = b'data: {"a": 1}\n\nerror: {"code": 400, "message": "too long"}\n\ndata: [DONE]\n\n'
    events = [event async for event in sse_events(httpx.Response(200, content=body))]
    assert events == [{"a": 1}, {"error": {"code": 400, "message": "too long"}}]


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (
            {"error": {"message": "exceeds the available context size", "code": 400}},
            ContextLengthExceededError,
        ),
        (
            {"object": "error", "message": "bad", "type": "BadRequestError", "code": 400},
            InvalidRequestError,
        ),
        ({"error": "flat", "error_type": "generation"}, UpstreamError),
        ({"error": {"message": "no code"}}, UpstreamError),
    ],
)
def test_errors_inside_streams(event: dict, kind: type) -> None:
    error = error_in_stream(event)
    assert type(error) is kind


def test_chunks_are_not_errors() -> None:
    assert error_in_stream({"object": "chat.completion.chunk", "choices": []}) is None


async def test_sse_reader_without_final_blank_line() -> None:
    response = httpx.Response(200, content=b'data: {"a": 1}\n\ndata: {"b": 2}')
    assert [event async for event in sse_events(response)] == [{"a": 1}, {"b": 2}]


async def test_ndjson_reader_rejects_garbage() -> None:
    response = httpx.Response(200, content=b'{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(UpstreamError, match="not an object"):
        [item async for item in ndjson_objects(response)]


def test_one_gauge_object_updated_in_place_with_its_age() -> None:
    metrics = NodeMetrics()
    assert metrics.server_signals_age_s is None  # never read: unknown, not idle
    metrics.set_signals(running=2, waiting=1, kv_cache_usage=1.02, capacity=4)
    assert (metrics.server_running, metrics.server_waiting, metrics.server_capacity) == (2, 1, 4)
    assert metrics.server_kv_cache_usage == 1.0  # the server's rounding, clamped
    age = metrics.server_signals_age_s
    assert age is not None and 0 <= age < 60


async def test_usage_is_moved_to_one_last_chunk() -> None:
    """Servers that put usage on the finish chunk, or on every chunk, still end with one
    usage chunk without choices, carrying the server's last figures."""

    def chunk(content: str | None, finish: str | None, completion: int) -> bytes:
        delta = {"content": content} if content is not None else {}
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        usage = {
            "prompt_tokens": 3,
            "completion_tokens": completion,
            "total_tokens": 3 + completion,
        }
        body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        return (
            b"data: " + json.dumps({**body, "choices": [choice], "usage": usage}).encode() + b"\n\n"
        )

    def server(request: httpx.Request) -> httpx.Response:
        body = (
            chunk("a", None, 1) + chunk("b", None, 2) + chunk(None, "stop", 2) + b"data: [DONE]\n\n"
        )
        return httpx.Response(200, content=body)

    client = await canned("openai_compatible", server)
    request = ChatCompletionRequest(model="m", messages=[ChatMessage(role="user", content="hi")])
    try:
        chunks = [c async for c in client.stream_chat_completion(request)]
    finally:
        await client.aclose()
    assert [c.choices[0].delta.content for c in chunks[:2]] == ["a", "b"]
    assert chunks[2].choices[0].finish_reason == "stop" and chunks[2].usage is None
    assert chunks[3].choices == [] and chunks[3].usage is not None
    assert (chunks[3].usage.prompt_tokens, chunks[3].usage.completion_tokens) == (3, 2)
    assert len(chunks) == 4


@pytest.mark.parametrize("body", [b"<html>proxy error</html>", b"[1, 2]", b'"text"'])
async def test_an_answer_that_is_not_a_json_object_is_the_nodes_fault(body: bytes) -> None:
    client = await canned("openai_compatible", lambda request: httpx.Response(200, content=body))
    request = ChatCompletionRequest(model="m", messages=[ChatMessage(role="user", content="hi")])
    try:
        with pytest.raises(UpstreamError, match="not a JSON object") as caught:
            await client.chat_completion(request)
        assert caught.value.retryable
    finally:
        await client.aclose()


async def test_a_redirect_is_reported_as_one_without_its_location() -> None:
    def redirect(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://10.0.0.9/login"}, content=b"")

    client = await canned("openai_compatible", redirect)
    request = ChatCompletionRequest(model="m", messages=[ChatMessage(role="user", content="hi")])
    try:
        # Before: "the server's answer is not a JSON object".
        with pytest.raises(UpstreamError, match="redirected the request") as caught:
            await client.chat_completion(request)
        assert "10.0.0.9" not in caught.value.message
    finally:
        await client.aclose()
