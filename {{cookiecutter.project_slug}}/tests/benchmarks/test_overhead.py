"""`bench overhead`: its node speaks OpenAI's API as our client reads it, its load counts
failures instead of dying, and one short run prints the whole table."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from {{ cookiecutter.package_name }}.backends.openai_compatible import OpenAICompatibleClient
from {{ cookiecutter.package_name }}.config import LoadBalancerSettings, NodeModel, NodeSettings
from {{ cookiecutter.package_name }}.llm.models import ChatCompletionRequest, ChatMessage
from {{ cookiecutter.package_name }}_bench import overhead_load, overhead_node

PACKAGE = "{{ cookiecutter.package_name }}"


@pytest.fixture(params=[1, 102], ids=["one-send", "send-per-event"])
async def node_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    server = await overhead_node.start(0, "bench-model", request.param)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


def _client(url: str) -> OpenAICompatibleClient:
    node = NodeSettings(
        name="bench", url=url, type="openai_compatible", models=[NodeModel(id="bench-model")]
    )
    return OpenAICompatibleClient(node, LoadBalancerSettings())


def _request(stream: bool) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model="bench-model", messages=[ChatMessage(role="user", content="hi")], stream=stream
    )


async def test_node_answers_validate_as_openai(node_url: str) -> None:
    client = _client(node_url)
    try:
        answer = await client.chat_completion(_request(False))
        assert answer.choices[0].message.content == " word" * overhead_node.ANSWER_TOKENS
        assert answer.usage is not None
        assert answer.usage.completion_tokens == overhead_node.ANSWER_TOKENS
        chunks = [chunk async for chunk in client.stream_chat_completion(_request(True))]
        assert [models.id for models in await client.list_models()] == ["bench-model"]
    finally:
        await client.aclose()
    content = [chunk for chunk in chunks if chunk.choices]
    assert len(content) == overhead_node.STREAM_CHUNKS
    assert "".join(chunk.choices[0].delta.content or "" for chunk in content) == " word" * 100
    assert content[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == overhead_node.STREAM_CHUNKS


async def test_load_counts_answers_and_failures(node_url: str) -> None:
    target = {"url": node_url, "model": "bench-model", "headers": {}}
    latencies, failures, _ = await overhead_load.drive(
        target, stream=True, concurrency=4, duration=0.2, max_tokens=100
    )
    assert latencies
    assert failures == {}
    port = int(node_url.rsplit(":", 1)[1])
    server_gone = {"url": "http://127.0.0.1:1", "model": "bench-model", "headers": {}}
    assert port != 1
    latencies, failures, _ = await overhead_load.drive(
        server_gone, stream=False, concurrency=2, duration=0.1, max_tokens=16
    )
    assert latencies == []
    assert failures.get("ConnectionRefusedError", 0) > 0


@pytest.mark.timeout(600)  # five processes start on a machine that may be busy
def test_one_short_run_prints_every_row() -> None:
    done = subprocess.run(
        [sys.executable, "-m", PACKAGE, "bench", "overhead", "--duration", "0.2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {
        line.split("|")[1].strip(): line.split("|")[2:-1]
        for line in done.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| path")
    }
    assert {"direct to the node", "this provider", "bare proxy (Starlette + aiohttp)"} <= set(rows)
    for name, cells in rows.items():
        assert cells[-1].strip() == "0", f"{name} had failed requests:\n{done.stdout}"
    # A missing nginx or LiteLLM is a one-line note, not a traceback.
    if "nginx (1 worker)" not in rows:
        assert "nginx row skipped: nginx is not installed (apt-get install" in done.stdout
    if "LiteLLM proxy (1 worker)" not in rows:
        assert "LiteLLM row skipped" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
