"""The HTTP surface over a fake balancer: framing, auth, limits, errors, listing, health."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from {{ cookiecutter.package_name }}.llm.errors import OverloadedError, UpstreamError

from .conftest import KEY, MODEL, FakeBalancer

AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def sse_events(text: str) -> list[str]:
    """The raw SSE records (data and comment lines), in order."""
    return [record for record in text.split("\n\n") if record]


async def test_stream_framing_usage_and_done(fake_api: Any) -> None:
    async with fake_api() as url, httpx.AsyncClient(base_url=url) as http:
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        response = await http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    records = sse_events(response.text)
    assert all(record.startswith("data: ") for record in records)
    assert records[-1] == "data: [DONE]"
    chunks = [json.loads(record[6:]) for record in records[:-1]]
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "Hello there!"
    )
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    usage_chunks = [c for c in chunks if c.get("usage")]
    assert usage_chunks == [chunks[-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


@pytest.mark.parametrize(("always", "asked", "expected"), [(False, False, 0), (True, False, 1)])
async def test_usage_chunk_only_when_asked_or_configured(
    fake_api: Any, always: bool, asked: bool, expected: int
) -> None:
    async with (
        fake_api(always_include_usage=always) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": asked}}
        response = await http.post("/v1/chat/completions", json=body, headers=AUTH)
    chunks = [json.loads(r[6:]) for r in sse_events(response.text)[:-1]]
    assert sum(1 for c in chunks if c.get("usage")) == expected


async def test_keepalive_comments_while_the_node_is_silent(
    fake_api: Any, fake: FakeBalancer
) -> None:
    fake.first_delay_s = 0.35  # longer than the wait before headers, several intervals
    no_wait = {"selection_timeout_s": 0}  # headers wait for placement plus one interval
    async with (
        fake_api(keepalive_interval_s=0.1, load_balancer=no_wait) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        response = await http.post(
            "/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH
        )
    records = sse_events(response.text)
    keepalives = [i for i, record in enumerate(records) if record == ": keep-alive"]
    assert len(keepalives) >= 1
    first_data = next(i for i, record in enumerate(records) if record.startswith("data: "))
    assert max(keepalives) < first_data  # only while silent, before the first token
    assert records[-1] == "data: [DONE]"


async def test_headers_and_a_comment_leave_before_the_first_token(
    fake_api: Any, fake: FakeBalancer
) -> None:
    fake.first_gate = asyncio.Event()  # the node holds its first token until released
    async with (
        fake_api() as url,  # every timing setting at its default
        httpx.AsyncClient(base_url=url) as http,
        http.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()
        assert await anext(lines) == ": keep-alive"
        assert not fake.first_gate.is_set()  # that comment came before the first token
        fake.first_gate.set()
        rest = [line async for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    # The words, the finish chunk and the usage chunk.
    assert sum(line.startswith("data: {") for line in rest) == len(fake.words) + 2


async def test_client_going_away_closes_the_upstream_stream(
    fake_api: Any, fake: FakeBalancer
) -> None:
    fake.words = ["w"] * 1000
    fake.delay_s = 0.01
    async with fake_api() as url, httpx.AsyncClient(base_url=url) as http:
        async with http.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    break
        await asyncio.wait_for(fake.closed.wait(), timeout=5)
    assert fake.closed.is_set()


async def test_failure_mid_stream_ends_with_an_error_event(
    fake_api: Any, fake: FakeBalancer
) -> None:
    fake.fail_with = UpstreamError("node http://10.9.8.7:8000/v1 exploded")
    fake.fail_after = 2
    async with fake_api() as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post(
            "/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH
        )
    records = sse_events(response.text)
    assert records[-1] == "data: [DONE]"
    error = json.loads(records[-2][6:])["error"]
    assert error["code"] == "upstream_error"
    assert "10.9.8.7" not in response.text and "http://" not in response.text


async def test_stream_past_the_deadline_ends_with_a_timeout_event(
    fake_api: Any, fake: FakeBalancer
) -> None:
    fake.words = ["w"] * 50
    fake.delay_s = 0.1
    async with (
        fake_api(request_timeout_s=0.5, keepalive_interval_s=0.2) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        response = await http.post(
            "/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH
        )
        await asyncio.wait_for(fake.closed.wait(), timeout=5)
    records = sse_events(response.text)
    assert records[-1] == "data: [DONE]"
    assert json.loads(records[-2][6:])["error"]["code"] == "upstream_timeout"
    assert 0 < len(records) - 2 < 50  # some chunks went out, not all of them


async def test_failure_before_the_first_chunk_keeps_its_status(
    fake_api: Any, fake: FakeBalancer
) -> None:
    fake.fail_with = OverloadedError("all nodes busy", retry_after=3)
    async with fake_api() as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post(
            "/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH
        )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["type"] == "rate_limit_error"


async def test_auth_accepts_each_key_and_leaves_health_open(fake_api: Any) -> None:
    async with (
        fake_api(api_keys=[KEY, "sk-second"]) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        for key in (KEY, "sk-second"):
            ok = await http.get("/v1/models", headers={"authorization": f"Bearer {key}"})
            assert ok.status_code == 200
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {KEY}"}):
            denied = await http.get("/v1/models", headers=headers)
            assert denied.status_code == 401
            assert denied.json()["error"]["type"] == "authentication_error"
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/ready")).status_code == 200


async def test_metrics_can_have_their_own_key(fake_api: Any) -> None:
    async with fake_api(metrics_key="scrape-me") as url, httpx.AsyncClient(base_url=url) as http:
        await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers=AUTH)).status_code == 401
        scraped = await http.get("/metrics", headers={"authorization": "Bearer scrape-me"})
    assert scraped.status_code == 200
    assert 'api_requests_total{route="/v1/chat/completions",status="200"} 1.0' in scraped.text


async def test_body_over_the_limit_is_413_also_when_chunked(fake_api: Any) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    payload = json.dumps(big).encode()

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 512):
            yield payload[start : start + 512]

    async with fake_api(max_body_bytes=4096) as url, httpx.AsyncClient(base_url=url) as http:
        declared = await http.post("/v1/chat/completions", content=payload, headers=AUTH)
        streamed = await http.post("/v1/chat/completions", content=chunked(), headers=AUTH)
        small = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert "content-length" not in streamed.request.headers
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
    assert small.status_code == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"model": MODEL}).encode(), "'messages'"),
        (json.dumps({**CHAT, "temperature": 9}).encode(), "'temperature'"),
        (json.dumps({**CHAT, "max_tokens": 100000}).encode(), "max_tokens"),
    ],
)
async def test_bad_requests_are_400_naming_the_problem(
    fake_api: Any, body: bytes, needle: str
) -> None:
    async with fake_api() as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post(
            "/v1/chat/completions",
            content=body,
            headers={**AUTH, "content-type": "application/json"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert needle in error["message"]
    assert "Traceback" not in response.text


async def test_max_tokens_cap_applied_and_unknown_fields_kept_out_of_the_wire(
    fake_api: Any, fake: FakeBalancer
) -> None:
    async with fake_api() as url, httpx.AsyncClient(base_url=url) as http:
        body = {**CHAT, "chat_template_kwargs": {"enable_thinking": False}, "verbosity": "low"}
        response = await http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200
    sent = fake.requests[-1]
    assert sent.max_tokens == 512
    assert "chat_template_kwargs" not in sent.wire()
    assert sent.wire()["verbosity"] == "low"  # OpenRouter's own parameter
    allowed = sent.wire(["chat_template_kwargs"])
    assert allowed["chat_template_kwargs"] == {"enable_thinking": False}


async def test_unexpected_errors_hide_addresses_and_secrets(
    fake_api: Any, fake: FakeBalancer
) -> None:
    fake.fail_with = RuntimeError(f"connect to http://10.9.8.7:8000 with key {KEY} failed")
    async with fake_api() as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert response.status_code == 500
    for secret in ("10.9.8.7", KEY, "Traceback", "RuntimeError"):
        assert secret not in response.text


async def test_unknown_route_and_model_use_the_openai_error_shape(fake_api: Any) -> None:
    async with fake_api() as url, httpx.AsyncClient(base_url=url) as http:
        route = await http.get("/v1/nothing", headers=AUTH)
        model = await http.post(
            "/v1/chat/completions", json={**CHAT, "model": "nope/none"}, headers=AUTH
        )
        one = await http.get(f"/v1/models/{MODEL}", headers=AUTH)
        missing = await http.get("/v1/models/nope/none", headers=AUTH)
    assert route.status_code == 404 and "error" in route.json()
    assert model.status_code == 404 and model.json()["error"]["code"] == "model_not_found"
    assert one.status_code == 200 and one.json()["id"] == MODEL
    assert missing.status_code == 404


async def test_flat_listing(fake_api: Any) -> None:
    async with fake_api(listing_format="flat") as url, httpx.AsyncClient(base_url=url) as http:
        listing = (await http.get("/v1/models", headers=AUTH)).json()
    (model,) = listing["data"]
    assert model["id"] == MODEL
    assert model["context_length"] == 2048  # the node's smaller window wins over the config's 4096
    assert model["max_output_length"] == 512
    assert model["pricing"] == {"prompt": "0", "completion": "0", "image": "0", "request": "0"}
    assert {
        "input_modalities",
        "output_modalities",
        "supported_sampling_parameters",
    } <= model.keys()


async def test_v2_listing_is_served_validated(fake_api: Any) -> None:
    async with fake_api(listing_format="v2") as url, httpx.AsyncClient(base_url=url) as http:
        listing = (await http.get("/v1/models", headers=AUTH)).json()
    (model,) = listing["data"]
    assert model["schema_version"] == "2.4"
    text_in = model["input_modalities"][0]
    assert text_in["supported_inputs"]["max_context_length"] == {"value": 2048, "unit": "token"}
    text_out = model["output_modalities"][0]
    assert text_out["supported_parameters"]["max_tokens"]["max"] == 512


async def test_ready_names_models_without_a_healthy_node(fake_api: Any, fake: FakeBalancer) -> None:
    fake.healthy = False
    async with fake_api() as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/ready")
    assert response.status_code == 503
    assert response.json()["models_without_healthy_node"] == [MODEL]


async def test_openapi_documents_the_request_bodies(fake_api: Any) -> None:
    async with fake_api() as url, httpx.AsyncClient(base_url=url) as http:
        schema = (await http.get("/openapi.json", headers=AUTH)).json()
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[-1] in schema["components"]["schemas"]
