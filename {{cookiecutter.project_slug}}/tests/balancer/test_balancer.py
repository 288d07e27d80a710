"""The Balancer end to end over fake nodes: filters, model names, queueing and overload."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import get_args

import pytest

from {{ cookiecutter.package_name }}.balancer import Balancer
from {{ cookiecutter.package_name }}.config import Strategy
from {{ cookiecutter.package_name }}.llm.errors import (
    ContextLengthExceededError,
    ModelNotFoundError,
    NotSupportedError,
    OverloadedError,
    UpstreamUnavailableError,
)
from {{ cookiecutter.package_name }}.llm.models import (
    EmbeddingRequest,
    ModelInfo,
    TextCompletionRequest,
)

from .fakes import MODEL, FakeClient, chat, node_settings, read_ago, settings


def balancer(
    *names: str, models: tuple[str, ...] = (MODEL,), **lb: object
) -> tuple[Balancer, dict[str, FakeClient]]:
    lb.setdefault("strategy", "least_loaded")
    instance = Balancer(settings(models=models, **lb), rng=random.Random(7))
    clients = {}
    for name in names:
        clients[name] = FakeClient(name)
        instance.add_node(node_settings(name), clients[name])
    return instance, clients


async def answered_by(instance: Balancer, **request: object) -> str:
    response = await instance.chat_completion(chat(**request))  # type: ignore[arg-type]
    content = response.choices[0].message.content
    assert isinstance(content, str)
    return content


async def test_unknown_model_is_404() -> None:
    instance, _ = balancer("a")
    with pytest.raises(ModelNotFoundError) as caught:
        await instance.chat_completion(chat(model="nope"))
    assert caught.value.status_code == 404
    assert "nope" in caught.value.message


async def test_listed_id_maps_to_the_nodes_own_name_and_back() -> None:
    instance = Balancer(settings(models=("llama",)))
    client = FakeClient("a")
    instance.add_node(
        node_settings("a", models=[{"id": "llama", "backend_model": "llama3.2:3b-q4"}]), client
    )
    response = await instance.chat_completion(chat(model="llama"))
    assert client.seen_models == ["llama3.2:3b-q4"]
    assert response.model == "llama"
    chunks = [chunk async for chunk in instance.stream_chat_completion(chat(model="llama"))]
    assert {chunk.model for chunk in chunks} == {"llama"}
    text = await instance.text_completion(TextCompletionRequest(model="llama", prompt="hi"))
    assert text.model == "llama"
    text_request = TextCompletionRequest(model="llama", prompt="hi")
    pieces = [chunk async for chunk in instance.stream_text_completion(text_request)]
    assert pieces and {chunk.model for chunk in pieces} == {"llama"}
    vectors = await instance.embeddings(EmbeddingRequest(model="llama", input="hi"))
    assert vectors.model == "llama"
    assert client.seen_models[-1] == "llama3.2:3b-q4"


async def test_only_nodes_serving_the_model_are_chosen() -> None:
    instance = Balancer(settings(models=("m", "other")))
    instance.add_node(node_settings("a", models=["m"]), FakeClient("a"))
    instance.add_node(node_settings("b", models=["other"]), FakeClient("b"))
    assert {await answered_by(instance) for _ in range(6)} == {"a"}
    assert {await answered_by(instance, model="other") for _ in range(6)} == {"b"}


@pytest.mark.parametrize("strategy", list(get_args(Strategy)))
async def test_requests_go_only_to_nodes_that_can_serve_them(strategy: str) -> None:
    """Capabilities: what the server says, else the node's config, else everything."""
    instance = Balancer(settings(strategy=strategy), rng=random.Random(7))
    clients = {
        "said": FakeClient("said", models=[ModelInfo(id=MODEL, capabilities={"embeddings": True})]),
        "plain": FakeClient("plain"),
        "pooler": FakeClient("pooler", models=[ModelInfo(id=MODEL, capabilities={"chat": False})]),
    }
    configured = {"said": [{"id": MODEL, "capabilities": ["chat", "vision"]}]}
    for name, client in clients.items():
        instance.add_node(node_settings(name, models=configured.get(name, [MODEL])), client)
    await instance.refresh()
    lacks = {node.name: set(node.served[MODEL].lacks) for node in instance.nodes()}
    assert lacks == {"said": {"completions", "tools"}, "plain": set(), "pooler": {"chat"}}
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    tools = [{"type": "function", "function": {"name": "f"}}]
    text = TextCompletionRequest(model=MODEL, prompt="hi")
    for _ in range(6):
        await instance.embeddings(EmbeddingRequest(model=MODEL, input="hi"))
        assert await answered_by(instance) in ("said", "plain")
        assert (await instance.text_completion(text)).choices[0].text in ("plain", "pooler")
        assert await answered_by(instance, text=image) in ("said", "plain")
        assert await answered_by(instance, tools=tools) == "plain"
        assert await answered_by(instance, tools=tools, tool_choice="none") in ("said", "plain")


async def test_a_node_that_says_it_cannot_is_corrected_and_another_asked() -> None:
    """The refusal goes to another node, not to the caller, and the node is not asked again."""
    instance, clients = balancer("a", "b", strategy="round_robin", max_retries=0)
    clients["a"].fail = [NotSupportedError("this model does not serve embeddings")]
    for _ in range(4):
        await instance.embeddings(EmbeddingRequest(model=MODEL, input="hi"))
    assert len(clients["a"].seen_models) == 1 and len(clients["b"].seen_models) == 4
    assert await answered_by(instance) in ("a", "b")  # it still chats
    assert {await answered_by(instance) for _ in range(4)} == {"a", "b"}


async def test_no_node_able_is_a_400_naming_the_capability() -> None:
    instance, clients = balancer("a", "b", strategy="power_of_two")
    for client in clients.values():
        client.models = [ModelInfo(id=MODEL, capabilities={"embeddings": False, "tools": False})]
    await instance.refresh()
    with pytest.raises(NotSupportedError, match="no node serving 'm' supports embeddings") as e:
        await instance.embeddings(EmbeddingRequest(model=MODEL, input="hi"))
    assert e.value.status_code == 400 and e.value.code == "not_supported"
    tools = [{"type": "function", "function": {"name": "f"}}]
    with pytest.raises(NotSupportedError, match=r"supports tools$"):
        await instance.chat_completion(chat(tools=tools, tool_choice="auto"))
    # Refused by every node in turn: the last refusal is the answer, still a 400.
    instance, clients = balancer("a", "b", strategy="round_robin")
    for client in clients.values():
        client.fail = [NotSupportedError("the server has no such endpoint")]
    with pytest.raises(NotSupportedError) as e:
        await instance.embeddings(EmbeddingRequest(model=MODEL, input="hi"))
    assert e.value.status_code == 400
    assert sum(len(client.seen_models) for client in clients.values()) == 2


async def test_a_listed_model_no_node_serves_is_unavailable() -> None:
    instance, _ = balancer("a", models=(MODEL, "orphan"))
    with pytest.raises(UpstreamUnavailableError):
        await instance.chat_completion(chat(model="orphan"))


async def test_context_length_filter_uses_chars_over_four_plus_max_tokens() -> None:
    instance = Balancer(settings(strategy="round_robin"))
    small, large = FakeClient("small"), FakeClient("large")
    small.models = [ModelInfo(id=MODEL, context_length=100)]
    large.models = [ModelInfo(id=MODEL, context_length=10_000)]
    instance.add_node(node_settings("small"), small)
    instance.add_node(node_settings("large"), large)
    await instance.refresh()
    # As vLLM and llama.cpp, only the prompt must fit: max_tokens beyond the context is
    # served and cut there.  200 characters ~ 50 tokens fit both; 440 ~ 110 only the large.
    prompt = "x" * 200
    assert {await answered_by(instance, text=prompt, max_tokens=60) for _ in range(10)} == {
        "small",
        "large",
    }
    assert {await answered_by(instance, text="x" * 440) for _ in range(10)} == {"large"}
    with pytest.raises(ContextLengthExceededError) as caught:
        await instance.chat_completion(chat(text="x" * 50_000))
    # OpenAI's wording, which client libraries' context-window fallbacks recognise.
    assert caught.value.message.startswith("This model's maximum context length is 10000 tokens")
    assert caught.value.status_code == 400


async def test_a_busy_node_is_set_aside_not_failed() -> None:
    """vLLM's busy 503 has no Retry-After: the request goes to another node, the busy
    one waits about one of its answers (at least 1 s) and counts no failure."""
    instance, clients = balancer("a", "b", strategy="round_robin")
    busy = OverloadedError("The engine is currently busy and cannot accept new requests.")
    clients["a"].fail = [busy]
    await instance.refresh()
    for _ in range(4):  # until round robin has offered a request to "a"
        assert await answered_by(instance) == "b"
        if not clients["a"].fail:
            break
    assert not clients["a"].fail
    assert busy.retry_after is not None and busy.retry_after >= 1
    state = next(state for state in instance.node_states() if state.name == "a")
    assert state.errors_total == 0 and not state.ejected
    assert await answered_by(instance) == "b"  # still set aside


async def test_unhealthy_nodes_are_skipped_and_panic_uses_them_when_none_is_up() -> None:
    instance, clients = balancer("a", "b")
    clients["b"].up = False
    await instance.refresh()
    assert {await answered_by(instance) for _ in range(6)} == {"a"}
    clients["a"].up = False
    await instance.refresh()
    # Every node is down: the request is still tried rather than refused.
    assert await answered_by(instance) in {"a", "b"}


async def test_saturated_node_is_skipped_by_in_flight_and_fresh_gauges() -> None:
    instance = Balancer(settings(strategy="round_robin"))
    full, free = FakeClient("full"), FakeClient("free")
    full.gate = asyncio.Event()
    instance.add_node(node_settings("full", max_concurrency=1), full)
    instance.add_node(node_settings("free", max_concurrency=100), free)
    # Round robin would alternate; the node at max_concurrency is skipped instead.
    held = asyncio.create_task(instance.chat_completion(chat()))
    await asyncio.sleep(0)  # the held request reaches the full node and waits at its gate
    assert {await answered_by(instance) for _ in range(4)} == {"free"}
    full.gate.set()
    await held
    # Fresh server gauges reporting a long queue make a node full too; stale ones do not.
    full.metrics.server_waiting = 50
    read_ago(full.metrics, 1.0)
    assert {await answered_by(instance) for _ in range(4)} == {"free"}
    read_ago(full.metrics, 100.0)
    assert "full" in {await answered_by(instance) for _ in range(4)}


async def test_request_waits_in_the_queue_for_a_free_slot() -> None:
    instance, clients = balancer("a", selection_timeout_s=30, max_queue=16)
    clients["a"].gate = asyncio.Event()
    # a takes max_concurrency (8) requests; the ninth waits instead of failing.
    first = [asyncio.create_task(instance.chat_completion(chat())) for _ in range(8)]
    ninth = asyncio.create_task(instance.chat_completion(chat()))
    await asyncio.sleep(0.01)
    assert not ninth.done()
    assert instance.node_states()[0].in_flight == 8
    clients["a"].gate.set()
    await asyncio.gather(*first)
    assert (await ninth).choices[0].message.content == "a"


async def test_full_queue_or_timeout_is_overloaded_with_retry_after() -> None:
    instance, clients = balancer("a", selection_timeout_s=0.05, max_queue=1)
    clients["a"].gate = asyncio.Event()
    held = [asyncio.create_task(instance.chat_completion(chat())) for _ in range(8)]
    waiting = asyncio.create_task(instance.chat_completion(chat()))
    await asyncio.sleep(0)
    # The queue holds one waiter: the next request is refused at once.
    with pytest.raises(OverloadedError) as refused:
        await instance.chat_completion(chat())
    assert refused.value.status_code == 429
    assert refused.value.retry_after is not None and refused.value.retry_after >= 1
    # The waiter gives up after selection_timeout_s.
    with pytest.raises(OverloadedError):
        await waiting
    clients["a"].gate.set()
    await asyncio.gather(*held)


async def test_no_queue_means_immediate_overload() -> None:
    instance, clients = balancer("a", max_queue=0)
    clients["a"].gate = asyncio.Event()
    held = [asyncio.create_task(instance.chat_completion(chat())) for _ in range(8)]
    await asyncio.sleep(0)
    with pytest.raises(OverloadedError):
        await instance.chat_completion(chat())
    clients["a"].gate.set()
    await asyncio.gather(*held)


async def test_in_flight_returns_to_zero_on_every_exit_path() -> None:
    instance, clients = balancer("a")
    clients["a"].gate = asyncio.Event()
    task = asyncio.create_task(instance.chat_completion(chat()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    clients["a"].gate.set()
    stream = instance.stream_chat_completion(chat())
    await anext(stream)
    await stream.aclose()  # the caller went away mid-stream
    assert clients["a"].tracker.active == 0
    assert instance.node_states()[0].in_flight == 0


@pytest.mark.parametrize("strategy", list(get_args(Strategy)))
async def test_every_strategy_gives_a_new_node_traffic(strategy: str) -> None:
    """Two healthy nodes, requests one after another: both take some.  Before, an
    unmeasured node counted as default_latency_ms (1 s) under power_of_two and
    latency_based, so the first node measured took all 40."""
    instance, _ = balancer("a", "b", strategy=strategy)
    counts = Counter([await answered_by(instance, text=f"prompt {i}") for i in range(40)])
    assert set(counts) == {"a", "b"}, counts
