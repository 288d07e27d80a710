"""vLLM and generic OpenAI dialects: the shapes clients parse, checked field by field."""

from __future__ import annotations

import asyncio
import base64
import json
import struct

import httpx
import pytest

from .helpers import eventually, sse_events, sse_json

MODEL = "meta-llama/Llama-3.2-3B-Instruct"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "say something nice"}]}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                },
            },
        },
    }
]


async def test_chat_body_has_vllm_fields(sim_server) -> None:
    server = await sim_server(dialect="vllm", output_tokens=6)
    async with httpx.AsyncClient(base_url=server.url) as client:
        body = (await client.post("/v1/chat/completions", json=CHAT)).json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["stop_reason"] is None
    assert choice["message"]["role"] == "assistant"
    assert "tool_calls" not in choice["message"]  # as vLLM 0.32 when no tool was called
    assert len(choice["message"]["content"].split()) == 6
    assert body["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 6,
        "total_tokens": 9,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    assert body["system_fingerprint"].startswith("vllm-0.32.0-")


async def test_max_tokens_and_stop_sequences(sim_server) -> None:
    server = await sim_server(dialect="vllm", output_tokens=10)
    async with httpx.AsyncClient(base_url=server.url) as client:
        cut = (await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4})).json()
        assert cut["choices"][0]["finish_reason"] == "length"
        assert cut["usage"]["completion_tokens"] == 4
        words = cut["choices"][0]["message"]["content"].split()
        stop_word = words[2]
        stopped = (
            await client.post("/v1/chat/completions", json={**CHAT, "stop": [f" {stop_word}"]})
        ).json()
    choice = stopped["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["stop_reason"] == f" {stop_word}"
    assert stop_word not in choice["message"]["content"].split()[2:3]
    assert choice["message"]["content"] == " ".join(words[:2])


async def test_stream_framing_and_usage_chunk(sim_server) -> None:
    server = await sim_server(dialect="vllm", output_tokens=5)
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/v1/chat/completions", json=request)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("data: ")
    assert sse_events(response)[-1] == "[DONE]"
    chunks = sse_json(response)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert len(text.split()) == 5
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 5


async def test_stream_without_usage_has_no_usage_chunk(sim_server) -> None:
    server = await sim_server(dialect="openai")
    async with httpx.AsyncClient(base_url=server.url) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        response = await client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": CHAT["messages"], "stream": True},
        )
    assert all(chunk["choices"] for chunk in sse_json(response))


async def test_tool_call_non_streamed_has_json_string_arguments(sim_server) -> None:
    server = await sim_server(dialect="vllm")
    async with httpx.AsyncClient(base_url=server.url) as client:
        body = (await client.post("/v1/chat/completions", json={**CHAT, "tools": TOOLS})).json()
        after_result = {
            **CHAT,
            "tools": TOOLS,
            "messages": [
                *CHAT["messages"],
                {"role": "assistant", "tool_calls": body["choices"][0]["message"]["tool_calls"]},
                {"role": "tool", "tool_call_id": "x", "content": "sunny"},
            ],
        }
        follow_up = (await client.post("/v1/chat/completions", json=after_result)).json()
        declined = (
            await client.post(
                "/v1/chat/completions", json={**CHAT, "tools": TOOLS, "tool_choice": "none"}
            )
        ).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function"
    assert call["id"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "sim", "days": 1, "unit": "c"}
    assert follow_up["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in declined["choices"][0]["message"]


async def test_tool_call_streamed_in_openai_chunk_form(sim_server) -> None:
    server = await sim_server(dialect="vllm")
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post(
            "/v1/chat/completions", json={**CHAT, "tools": TOOLS, "stream": True}
        )
    deltas = [c["choices"][0]["delta"] for c in sse_json(response) if c["choices"]]
    calls = [call for delta in deltas for call in delta.get("tool_calls", [])]
    assert all(call["index"] == 0 for call in calls)
    assert calls[0]["id"] and calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert json.loads(arguments)["city"] == "sim"
    assert sse_json(response)[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_reasoning_when_asked(sim_server) -> None:
    server = await sim_server(dialect="vllm", reasoning_tokens=3, output_tokens=4)
    async with httpx.AsyncClient(base_url=server.url) as client:
        plain = (await client.post("/v1/chat/completions", json=CHAT)).json()
        asked = {**CHAT, "chat_template_kwargs": {"enable_thinking": True}}
        thought = (await client.post("/v1/chat/completions", json=asked)).json()
        streamed = await client.post("/v1/chat/completions", json={**asked, "stream": True})
    assert plain["choices"][0]["message"]["reasoning"] is None
    assert len(thought["choices"][0]["message"]["reasoning"].split()) == 3
    assert thought["usage"]["completion_tokens"] == 7
    reasoning = [
        c["choices"][0]["delta"]["reasoning"]
        for c in sse_json(streamed)
        if c["choices"] and "reasoning" in c["choices"][0]["delta"]
    ]
    assert len(reasoning) == 3


async def test_context_length_is_enforced_with_vllms_error(sim_server) -> None:
    server = await sim_server(dialect="vllm", context_length=32, output_tokens=100)
    long_prompt = {**CHAT, "messages": [{"role": "user", "content": "word " * 40}]}
    async with httpx.AsyncClient(base_url=server.url) as client:
        too_long = await client.post("/v1/chat/completions", json=long_prompt)
        too_many = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 33})
        overrun = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 32})
        unknown = await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
        malformed = await client.post("/v1/chat/completions", json={**CHAT, "stop": [5]})
    assert too_long.status_code == 400
    error = too_long.json()["error"]
    assert (error["type"], error["param"]) == ("BadRequestError", "input_tokens")
    assert error["message"].startswith(
        "This model's maximum context length is 32 tokens. However, your prompt contains at "
        "least 33 input tokens"
    )
    assert too_many.status_code == 400
    assert too_many.json()["error"]["message"].startswith(
        "max_tokens=33 cannot be greater than max_model_len=32."
    )
    # 0.32 serves a max_tokens that overruns the room left, and cuts the answer there.
    assert overrun.status_code == 200
    assert overrun.json()["choices"][0]["finish_reason"] == "length"
    assert overrun.json()["usage"]["total_tokens"] == 32
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == 404
    assert unknown.json()["error"]["message"] == (
        f"The model `nope` does not exist. Valid aliases: {MODEL}."
    )
    invalid = malformed.json()["error"]
    assert (malformed.status_code, invalid["type"], invalid["param"]) == (
        400,
        "Bad Request",
        "body.stop",
    )


async def test_busy_is_vllms_503(sim_server) -> None:
    server = await sim_server(
        dialect="vllm", max_concurrency=1, max_queue=0, tokens_per_s=20, output_tokens=100
    )
    busy = {**CHAT, "stream": True}
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        client.stream("POST", "/v1/chat/completions", json=busy),
    ):
        refused = await client.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 503 and "retry-after" not in refused.headers
    assert refused.json()["error"] == {
        "message": "The engine is currently busy and cannot accept new requests. "
        "Please try again later or on a different instance.",
        "type": "Service Unavailable",
        "param": None,
        "code": 503,
    }


async def test_models_and_completions_and_embeddings(sim_server) -> None:
    server = await sim_server(dialect="vllm", context_length=2048)
    pooling = await sim_server(dialect="vllm", embedding_dim=4, embeddings=True)
    async with httpx.AsyncClient(base_url=server.url) as client:
        models = (await client.get("/v1/models")).json()
        text = (await client.post("/v1/completions", json={"model": MODEL, "prompt": "a b"})).json()
        stream = await client.post(
            "/v1/completions",
            json={"model": MODEL, "prompt": "a b", "stream": True, "max_tokens": 3},
        )
        # A generate runner has no embeddings route: FastAPI's own 404, and 405 for a GET
        # on a route it has.
        no_route = await client.post("/v1/embeddings", json={"model": MODEL, "input": "a"})
        wrong_method = await client.get("/v1/chat/completions")
    async with httpx.AsyncClient(base_url=pooling.url) as client:
        floats = await client.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "b c"]})
        packed = await client.post(
            "/v1/embeddings", json={"model": MODEL, "input": "a", "encoding_format": "base64"}
        )
        no_chat = await client.post("/v1/chat/completions", json=CHAT)
    assert (no_route.status_code, no_route.json()) == (404, {"detail": "Not Found"})
    assert (wrong_method.status_code, wrong_method.json()) == (
        405,
        {"detail": "Method Not Allowed"},
    )
    assert (no_chat.status_code, no_chat.json()) == (404, {"detail": "Not Found"})
    card = models["data"][0]
    assert models["object"] == "list"
    assert (card["id"], card["object"], card["owned_by"], card["max_model_len"]) == (
        MODEL,
        "model",
        "vllm",
        2048,
    )
    assert text["object"] == "text_completion"
    assert text["choices"][0]["finish_reason"] == "stop"
    assert text["usage"]["prompt_tokens"] == 2
    chunks = sse_json(stream)
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    assert len("".join(c["choices"][0]["text"] for c in chunks).split()) == 3
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    body = floats.json()
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert len(body["data"][0]["embedding"]) == 4
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    vector = struct.unpack("<4f", base64.b64decode(packed.json()["data"][0]["embedding"]))
    assert vector == pytest.approx(body["data"][0]["embedding"], rel=1e-5)


async def test_api_key_guards_v1_only(sim_server) -> None:
    server = await sim_server(dialect="vllm", api_key="secret")
    async with httpx.AsyncClient(base_url=server.url) as client:
        refused = await client.post("/v1/chat/completions", json=CHAT)
        allowed = await client.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer secret"}
        )
        health = await client.get("/health")
    assert (refused.status_code, refused.json()) == (401, {"error": "Unauthorized"})
    assert allowed.status_code == 200
    assert health.status_code == 200


async def test_metrics_and_load_report_true_in_flight_counts(sim_server) -> None:
    server = await sim_server(dialect="vllm", max_concurrency=2, ttft_s=30)
    async with httpx.AsyncClient(base_url=server.url) as client:
        tasks = [
            asyncio.create_task(client.post("/v1/chat/completions", json=CHAT)) for _ in range(3)
        ]
        await eventually(lambda: server.sim.running + server.sim.waiting == 3, "3 in flight")
        metrics = (await client.get("/metrics")).text
        load = (await client.get("/load")).json()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    labels = "{" + f'engine="0",model_name="{MODEL}"' + "}"
    assert f"vllm:num_requests_running{labels} 2.0" in metrics
    assert f"vllm:num_requests_waiting{labels} 1.0" in metrics
    assert "vllm:kv_cache_usage_perc{" in metrics
    assert load == {"server_load": 3}
