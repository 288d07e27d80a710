"""Ollama, llama.cpp and TGI: each server's own shapes, framing, discovery and load endpoints."""

from __future__ import annotations

import asyncio

import httpx

from .helpers import eventually, ndjson, sse_events, sse_json

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
HI = [{"role": "user", "content": "hello there"}]


async def test_ollama_chat_streams_ndjson_with_a_final_summary(sim_server) -> None:
    server = await sim_server(dialect="ollama", output_tokens=4)
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/api/chat", json={"model": "llama3.2:3b", "messages": HI})
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = ndjson(response)
    assert [line["done"] for line in lines] == [False] * 4 + [True]
    assert all(line["message"]["role"] == "assistant" for line in lines)
    assert isinstance(lines[0]["created_at"], str)
    text = "".join(line["message"]["content"] for line in lines)
    assert len(text.split()) == 4
    final = lines[-1]
    assert final["done_reason"] == "stop"
    assert (final["prompt_eval_count"], final["eval_count"]) == (2, 4)
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int)


async def test_ollama_options_thinking_and_tool_calls(sim_server) -> None:
    server = await sim_server(dialect="ollama", reasoning_tokens=2)
    base = {"model": "llama3.2:3b", "messages": HI, "stream": False}
    async with httpx.AsyncClient(base_url=server.url) as client:
        cut = (await client.post("/api/chat", json={**base, "options": {"num_predict": 3}})).json()
        thought = (await client.post("/api/chat", json={**base, "think": True})).json()
        called = (await client.post("/api/chat", json={**base, "tools": [WEATHER_TOOL]})).json()
        streamed = ndjson(
            await client.post("/api/chat", json={**base, "stream": True, "tools": [WEATHER_TOOL]})
        )
    assert (cut["done_reason"], cut["eval_count"]) == ("length", 3)
    assert len(thought["message"]["thinking"].split()) == 2
    call = called["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather"
    assert call["arguments"] == {"city": "sim"}  # an object, not a JSON string
    assert [line["message"].get("tool_calls") is not None for line in streamed] == [True, False]


async def test_ollama_discovery_and_errors(sim_server) -> None:
    server = await sim_server(dialect="ollama", context_length=8192, models=["a:1b", "b:7b"])
    async with httpx.AsyncClient(base_url=server.url) as client:
        root = await client.get("/")
        tags = (await client.get("/api/tags")).json()
        show = (await client.post("/api/show", json={"model": "b:7b"})).json()
        ps = (await client.get("/api/ps")).json()
        version = (await client.get("/api/version")).json()
        missing = await client.post("/api/chat", json={"model": "c", "messages": HI})
        embed = (
            await client.post("/api/embed", json={"model": "a:1b", "input": ["x y", "z"]})
        ).json()
        generated = ndjson(
            await client.post("/api/generate", json={"model": "a:1b", "prompt": "hi"})
        )
        openai = (
            await client.post("/v1/chat/completions", json={"model": "a:1b", "messages": HI})
        ).json()
    assert root.text == "Ollama is running"
    assert [model["name"] for model in tags["models"]] == ["a:1b", "b:7b"]
    assert tags["models"][0]["details"]["quantization_level"]
    assert show["model_info"]["llama.context_length"] == 8192
    assert ps["models"][0]["context_length"] == 8192
    assert isinstance(version["version"], str)
    assert missing.status_code == 404
    assert missing.json() == {"error": 'model "c" not found, try pulling it first'}
    assert len(embed["embeddings"]) == 2 and embed["prompt_eval_count"] == 3
    assert generated[-1]["done"] is True and isinstance(generated[-1]["context"], list)
    assert "".join(line["response"] for line in generated).strip()
    assert openai["object"] == "chat.completion"


async def test_ollama_truncates_long_chats_instead_of_refusing(sim_server) -> None:
    server = await sim_server(dialect="ollama", context_length=16)
    old = {"role": "user", "content": "word " * 30}
    body = {"model": "llama3.2:3b", "messages": [old, *HI], "stream": False}
    async with httpx.AsyncClient(base_url=server.url) as client:
        kept = (await client.post("/api/chat", json=body)).json()
        refused = await client.post("/api/chat", json={**body, "truncate": False})
    assert kept["prompt_eval_count"] == 2
    assert refused.status_code == 400


async def test_ollama_busy_answer_when_queue_is_full(sim_server) -> None:
    server = await sim_server(dialect="ollama", max_concurrency=1, max_queue=1, ttft_s=30)
    body = {"model": "llama3.2:3b", "messages": HI, "stream": False}
    async with httpx.AsyncClient(base_url=server.url) as client:
        held = [asyncio.create_task(client.post("/api/chat", json=body)) for _ in range(2)]
        await eventually(lambda: server.sim.running + server.sim.waiting == 2, "two admitted")
        busy = await client.post("/api/chat", json=body)
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
    assert busy.status_code == 503
    assert busy.json() == {
        "error": "server busy, please try again.  maximum pending requests exceeded"
    }


async def test_llamacpp_shapes_and_slots(sim_server) -> None:
    server = await sim_server(dialect="llamacpp", max_concurrency=2, ttft_s=30, reasoning_tokens=2)
    async with httpx.AsyncClient(base_url=server.url) as client:
        props = (await client.get("/props")).json()
        models = (await client.get("/v1/models")).json()
        held = asyncio.create_task(
            client.post("/v1/chat/completions", json={"model": "any", "messages": HI})
        )
        await eventually(lambda: server.sim.running == 1, "one running")
        slots = (await client.get("/slots")).json()
        metrics = (await client.get("/metrics")).text
        held.cancel()
        await asyncio.gather(held, return_exceptions=True)
        server.sim.config.ttft_s = 0
        answer = (
            await client.post(
                "/v1/chat/completions",
                json={"model": "any", "messages": HI, "reasoning_effort": "low"},
            )
        ).json()
    assert props["total_slots"] == 2
    assert props["default_generation_settings"]["n_ctx"] == 4096
    assert models["data"][0]["owned_by"] == "llamacpp"
    assert models["data"][0]["meta"]["n_ctx_train"] == 4096
    assert [slot["is_processing"] for slot in slots] == [True, False]
    assert "llamacpp:requests_processing 1.0" in metrics
    assert "llamacpp:requests_deferred 0.0" in metrics
    message = answer["choices"][0]["message"]
    assert len(message["reasoning_content"].split()) == 2
    assert answer["timings"]["predicted_n"] == answer["usage"]["completion_tokens"]
    assert answer["model"] == "any"


async def test_llamacpp_loading_context_and_metrics_flag(sim_server) -> None:
    server = await sim_server(dialect="llamacpp", loading_s=30, metrics_enabled=False)
    async with httpx.AsyncClient(base_url=server.url) as client:
        loading = await client.get("/health")
        refused = await client.post("/v1/chat/completions", json={"model": "m", "messages": HI})
        server.sim.config.loading_s = 0
        healthy = await client.get("/health")
        metrics = await client.get("/metrics")
        long = {"model": "m", "messages": [{"role": "user", "content": "w " * 5000}]}
        overflow = await client.post("/v1/chat/completions", json=long)
    assert loading.status_code == 503
    assert loading.json() == {
        "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
    }
    assert refused.status_code == 503
    assert healthy.json() == {"status": "ok"}
    assert metrics.status_code == 501
    assert overflow.status_code == 400
    error = overflow.json()["error"]
    assert (error["type"], error["n_prompt_tokens"], error["n_ctx"]) == (
        "exceed_context_size_error",
        5000,
        4096,
    )


async def test_tgi_native_generate_and_stream(sim_server) -> None:
    server = await sim_server(dialect="tgi", output_tokens=3)
    async with httpx.AsyncClient(base_url=server.url) as client:
        generated = (
            await client.post(
                "/generate", json={"inputs": "hi there", "parameters": {"details": True}}
            )
        ).json()
        stream = await client.post("/generate_stream", json={"inputs": "hi there"})
        cut = (
            await client.post(
                "/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 2}}
            )
        ).json()
    assert len(generated["generated_text"].split()) == 3
    assert generated["details"]["finish_reason"] == "eos_token"
    assert generated["details"]["generated_tokens"] == 3
    assert stream.text.startswith("data:{")  # TGI writes no space after the colon
    events = sse_json(stream)
    assert [event["generated_text"] is None for event in events] == [True, True, False]
    assert all(set(event["token"]) == {"id", "text", "logprob", "special"} for event in events)
    assert events[-1]["details"]["input_length"] == 2
    assert events[-1]["generated_text"] == "".join(event["token"]["text"] for event in events)
    assert "details" not in cut and len(cut["generated_text"].split()) == 2


async def test_tgi_chat_info_metrics_and_errors(sim_server) -> None:
    server = await sim_server(
        dialect="tgi", context_length=64, max_concurrency=1, max_queue=0, ttft_s=30
    )
    async with httpx.AsyncClient(base_url=server.url) as client:
        info = (await client.get("/info")).json()
        held = asyncio.create_task(
            client.post("/v1/chat/completions", json={"model": "tgi", "messages": HI})
        )
        await eventually(lambda: server.sim.running == 1, "one running")
        metrics = (await client.get("/metrics")).text
        overloaded = await client.post("/generate", json={"inputs": "x"})
        held.cancel()
        await asyncio.gather(held, return_exceptions=True)
        server.sim.config.ttft_s = 0
        too_long = await client.post("/generate", json={"inputs": "w " * 70})
        too_many = await client.post(
            "/generate", json={"inputs": "w", "parameters": {"max_new_tokens": 100}}
        )
        chat = await client.post(
            "/v1/chat/completions",
            json={
                "model": "tgi",
                "messages": HI,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (63, 64)
    assert info["max_concurrent_requests"] == 1
    assert "tgi_batch_current_size 1.0" in metrics and "tgi_queue_size 0.0" in metrics
    assert overloaded.status_code == 429
    assert overloaded.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
    assert too_long.status_code == 422
    assert too_long.json()["error_type"] == "validation"
    assert too_long.json()["error"].startswith(
        "Input validation error: `inputs` must have less than 63"
    )
    assert too_many.status_code == 422
    assert "`inputs` tokens + `max_new_tokens` must be <= 64" in too_many.json()["error"]
    chunks = sse_json(chat)
    assert sse_events(chat)[-1] == "[DONE]"
    assert chunks[0]["id"] == "" and chunks[0]["system_fingerprint"].endswith("-native")
    assert chunks[-1]["usage"]["prompt_tokens"] == 2
