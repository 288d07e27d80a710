"""The job table through the real balancer: typed ABI round trips, and an answer for every call."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from eth_abi.abi import decode, encode

from {{ cookiecutter.package_name }}.config import ApiSettings
from {{ cookiecutter.package_name }}.context import Context
from {{ cookiecutter.package_name }}.jobs import (
    JOBS,
    JobEnv,
    LlmRequest,
    LlmResponse,
    ProcessLlmRequest,
    run_job,
)
from {{ cookiecutter.package_name }}.llm.errors import OverloadedError
from {{ cookiecutter.package_name }}.llm.models import ChatCompletionRequest

from .conftest import MODEL, SimFactory, fleet_settings


class Heartbeats:
    def __init__(self) -> None:
        self.sent = 0

    async def __call__(self) -> str:
        self.sent += 1
        return "0x" + "ab" * 32


def env(context: Context, heartbeat: Heartbeats | None = None) -> JobEnv:
    return JobEnv(
        context=context,
        service_id=0,
        call_id=1,
        caller="0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        heartbeat=heartbeat or Heartbeats(),
    )


def job_input(body: Any) -> bytes:
    return encode(["string"], [body if isinstance(body, str) else json.dumps(body)])


def result_json(output: bytes) -> dict[str, Any]:
    (text,) = decode(["string"], output)
    value: dict[str, Any] = json.loads(text)
    return value


async def answer(context: Context, body: Any, *, timeout_s: float = 10.0) -> dict[str, Any]:
    return result_json(await run_job(env(context), 0, job_input(body), timeout_s=timeout_s))


CHAT = {"type": "chat.completion", "model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


async def test_chat_completion_round_trip(context: Context) -> None:
    result = await answer(context, {**CHAT, "max_tokens": 3})
    assert result["type"] == "chat.completion"
    assert result["object"] == "chat.completion"
    assert result["model"] == MODEL
    assert result["choices"][0]["message"]["role"] == "assistant"
    assert result["choices"][0]["message"]["content"]
    assert result["usage"]["completion_tokens"] == 3


async def test_text_completion_round_trip(context: Context) -> None:
    result = await answer(context, {"type": "text.completion", "model": MODEL, "prompt": "Once"})
    assert result["type"] == "text.completion"
    assert result["object"] == "text_completion"
    assert result["choices"][0]["text"]


async def test_embedding_round_trip(context: Context) -> None:
    body = {"type": "embedding", "model": MODEL, "input": ["a", "b"]}
    result = await answer(context, body)
    assert result["type"] == "embedding"
    assert result["object"] == "list"
    assert [item["index"] for item in result["data"]] == [0, 1]
    assert all(isinstance(x, float) for x in result["data"][0]["embedding"])


async def test_a_streamed_request_is_answered_whole(context: Context) -> None:
    result = await answer(
        context, {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert result["type"] == "chat.completion"
    assert result["choices"][0]["message"]["content"]


def test_decode_is_typed() -> None:
    request = ProcessLlmRequest().decode(
        job_input({**CHAT, "temperature": 0.5, "seed": 7}), limits=ApiSettings()
    )
    assert isinstance(request, ChatCompletionRequest)
    assert (request.temperature, request.seed) == (0.5, 7)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "request is not JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"model": MODEL, "prompt": "x"}, "request type must be one of"),
        ({"type": "image", "model": MODEL}, "got 'image'"),
        ({"type": "chat.completion", "model": MODEL}, "invalid chat.completion request: messages"),
        ({**CHAT, "temperature": 9}, "temperature"),
    ],
)
async def test_bad_requests_get_an_error_result(context: Context, body: Any, message: str) -> None:
    result = await answer(context, body)
    assert result["type"] == "error"
    assert result["error"]["type"] == "invalid_request_error"
    assert message in result["error"]["message"]


# Nested deep enough to overflow the C stack in json.loads once web3 is imported.
DEEP = '{"type": "chat.completion", "messages": ' + "[" * 100_000 + "]" * 100_000 + "}"


async def test_deeply_nested_input_is_an_error_result(context: Context) -> None:
    import web3  # noqa: F401  (py_ecc, which web3 imports, raises the recursion limit)

    result = await answer(context, DEEP)
    assert result["type"] == "error"
    assert result["error"]["type"] == "invalid_request_error"
    assert "recursion limit" in result["error"]["message"]
    assert (await answer(context, CHAT))["type"] == "chat.completion"


async def test_input_over_the_body_limit_is_refused_before_parsing(sim_server: SimFactory) -> None:
    sim = await sim_server(dialect="openai", models=[MODEL])
    settings = fleet_settings(sim.url)
    settings.api.max_body_bytes = 4096
    body = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    async with Context.open(settings) as context:
        result = await answer(context, body)
        assert result["error"]["code"] == "payload_too_large"
        assert "4096 bytes" in result["error"]["message"]
        assert (await answer(context, CHAT))["type"] == "chat.completion"


@pytest.mark.parametrize(
    ("setting", "body"),
    [
        # Many small messages: validation of each costs the event loop the API shares.
        ("max_json_keys", {**CHAT, "messages": [{"role": "user", "content": "x"}] * 600}),
        ("max_json_items", {**CHAT, "stop": [""] * 1200}),
    ],
)
async def test_input_with_too_many_json_values_is_refused_before_parsing(
    sim_server: SimFactory, setting: str, body: dict[str, Any]
) -> None:
    """Job input is held to the HTTP API's JSON-count caps, not only its byte limit."""
    sim = await sim_server(dialect="openai", models=[MODEL])
    settings = fleet_settings(sim.url)
    settings.api.max_json_keys, settings.api.max_json_items = 1000, 1000
    async with Context.open(settings) as context:
        result = await answer(context, body)
        assert result["error"]["code"] == "payload_too_large", result
        assert f"api.{setting}" in result["error"]["message"]
        assert (await answer(context, CHAT))["type"] == "chat.completion"


async def test_input_that_is_not_abi_string(context: Context) -> None:
    result = result_json(await run_job(env(context), 0, b"\x01\x02", timeout_s=5))
    assert result["type"] == "error"
    assert "ABI-encoded (string)" in result["error"]["message"]


async def test_unknown_model(context: Context) -> None:
    result = await answer(context, {**CHAT, "model": "no-such-model"})
    assert result["type"] == "error"
    assert result["error"]["code"] == "model_not_found"


async def test_unknown_job_index(context: Context) -> None:
    result = result_json(await run_job(env(context), 9, b"", timeout_s=5))
    assert result["error"]["code"] == "unknown_job"
    assert "[0, 1]" in result["error"]["message"]


async def test_a_job_on_a_full_fleet_waits_its_turn_where_the_api_is_refused(
    sim_server: SimFactory,
) -> None:
    sim = await sim_server(dialect="openai", models=[MODEL], ttft_s=1.0)
    settings = fleet_settings(sim.url, selection_timeout_s=0, max_queue=0)
    settings.nodes[0].max_concurrency = 1
    async with Context.open(settings) as context:
        first = asyncio.create_task(answer(context, CHAT))
        await asyncio.sleep(0.2)
        with pytest.raises(OverloadedError):  # an API request: 429 at once
            request = {key: value for key, value in CHAT.items() if key != "type"}
            await context.balancer.chat_completion(ChatCompletionRequest.model_validate(request))
        second = await answer(context, CHAT)  # a paid job: served once the slot frees
        assert second["type"] == "chat.completion"
        assert (await first)["type"] == "chat.completion"


async def test_a_slow_fleet_times_out_into_an_error(sim_server: SimFactory) -> None:
    sim = await sim_server(dialect="openai", models=[MODEL], ttft_s=2.0)
    async with Context.open(fleet_settings(sim.url)) as context:
        result = await answer(context, CHAT, timeout_s=0.2)
    assert result["error"]["code"] == "upstream_timeout"


async def test_report_metrics_sends_a_heartbeat(context: Context) -> None:
    await answer(context, CHAT)
    heartbeats = Heartbeats()
    output = await run_job(env(context, heartbeats), 1, b"", timeout_s=5)
    result = result_json(output)
    assert heartbeats.sent == 1
    assert result["type"] == "metrics"
    assert result["heartbeat_tx"] == "0x" + "ab" * 32
    assert result["metrics"]["nodes_total"] == 1
    assert result["metrics"]["nodes_healthy"] == 1
    assert result["metrics"]["requests_total"] >= 1


def test_the_table_is_indexed_by_job_index() -> None:
    assert {index: job.name for index, job in JOBS.items()} == {
        0: "process_llm_request",
        1: "report_metrics",
    }
    assert all(job.index == index for index, job in JOBS.items())


class Broken(ProcessLlmRequest):
    """A job with a bug: its failure must reach the customer as a plain internal error."""

    async def handle(self, env: JobEnv, request: LlmRequest) -> LlmResponse:
        raise RuntimeError("connect to http://10.1.2.3:9000 failed")


async def test_a_bug_is_an_internal_error_without_details(
    context: Context, caplog: pytest.LogCaptureFixture
) -> None:
    output = await Broken().run(env(context), job_input(CHAT), timeout_s=5)
    result = result_json(output)
    assert result["error"]["type"] == "server_error"
    assert result["error"]["message"] == "internal error while running the job"
    assert "10.1.2.3" not in caplog.text
    assert "RuntimeError" in caplog.text
