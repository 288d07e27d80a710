"""vLLM: Prometheus gauges (both KV-cache names) and reasoning."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from {{ cookiecutter.package_name }}.backends.base import HttpClient
from {{ cookiecutter.package_name }}.backends.vllm import VllmClient
from {{ cookiecutter.package_name }}.llm.models import ChatCompletionRequest, ChatMessage

from .conftest import ClientFactory, canned, client_for

# vLLM before 0.9.2: the KV-cache gauge had its older name; two engines, two models.
OLD_METRICS = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:gpu_cache_usage_perc{engine="1",model_name="m"} 0.75
"""


def old_vllm(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/health":
        return httpx.Response(200)
    return httpx.Response(200, text=OLD_METRICS)


async def test_old_kv_cache_gauge_and_engines_are_combined() -> None:
    client = await canned("vllm", old_vllm)
    try:
        await client.check_health()
        metrics = client.get_metrics()
        # Queues add up across engines; the fullest cache is where a request may land.
        assert (metrics.server_running, metrics.server_waiting) == (5.0, 4.0)
        assert metrics.server_kv_cache_usage == 0.75
    finally:
        await client.aclose()


async def test_healthy_without_readable_metrics() -> None:
    def no_metrics(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="" if request.url.path == "/health" else "<html>")

    client = await canned("vllm", no_metrics)
    try:
        await client.check_health()  # serving, only unmeasured
        assert client.get_metrics().server_signals_age_s is None
    finally:
        await client.aclose()


async def test_reasoning_effort_reaches_the_server(make_client: ClientFactory) -> None:
    client, server = await make_client("vllm", reasoning_tokens=3, output_tokens=2)
    request = ChatCompletionRequest(
        model=server.sim.config.model_names()[0],
        messages=[ChatMessage(role="user", content="think first")],
        reasoning={"effort": "low"},
    )
    answer = await client.chat_completion(request)
    assert answer.choices[0].message.reasoning is not None
    assert len(answer.choices[0].message.reasoning.split()) == 3


async def test_metrics_scrape_against_the_simulator(make_client: ClientFactory) -> None:
    client: HttpClient
    client, _ = await make_client("vllm")
    await client.check_health()
    metrics = client.get_metrics()
    assert (metrics.server_running, metrics.server_waiting, metrics.server_kv_cache_usage) == (
        0.0,
        0.0,
        0.0,
    )


@pytest.mark.parametrize(
    ("fields", "kwargs", "effort"),
    [
        ({"reasoning": {"effort": "high"}}, {"enable_thinking": True}, "high"),
        ({"reasoning": {"enabled": False}}, {"enable_thinking": False}, None),
        ({"reasoning": {"effort": "none"}}, {"enable_thinking": False}, None),
        (
            {"reasoning": {"enabled": False}, "chat_template_kwargs": {"enable_thinking": True}},
            {"enable_thinking": True},  # the caller's own setting wins (the node allows it)
            None,
        ),
        ({}, None, None),
    ],
)
async def test_reasoning_switch_goes_to_the_chat_template(
    fields: dict[str, Any], kwargs: dict[str, bool] | None, effort: str | None
) -> None:
    client = client_for("vllm", "http://127.0.0.1:9", ["m"])
    client.node.extra_fields.append("chat_template_kwargs")
    try:
        request = ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
        )
        assert isinstance(client, VllmClient)
        body = client.chat_body(request, stream=False)
        assert body.get("chat_template_kwargs") == kwargs
        assert body.get("reasoning_effort") == effort
    finally:
        await client.aclose()


async def test_thinking_turned_off_reaches_the_server(make_client: ClientFactory) -> None:
    client, server = await make_client("vllm", reasoning_tokens=3, output_tokens=2)
    request = ChatCompletionRequest(
        model=server.sim.config.model_names()[0],
        messages=[ChatMessage(role="user", content="no thinking")],
        reasoning={"enabled": False},
    )
    answer = await client.chat_completion(request)
    assert answer.choices[0].message.reasoning is None
    assert answer.usage is not None and answer.usage.completion_tokens == 2
