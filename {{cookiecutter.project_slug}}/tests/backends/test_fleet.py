"""A mixed fleet behind one balancer: a server that generates beside one that embeds, both
serving one model id, against the simulators and, in the template's CI, the real servers
(vLLM with a generate and a pooling runner; llama-server without and with --embeddings).

Nothing tells the balancer which node does what but the servers themselves (vLLM's
routes; llama-server's refusal, after which the request goes to the other node).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, get_args

import pytest

from {{ cookiecutter.package_name }}.balancer import Balancer
from {{ cookiecutter.package_name }}.config import LoadBalancerSettings, ModelSettings, Settings, Strategy
from {{ cookiecutter.package_name }}.llm.errors import LlmError
from {{ cookiecutter.package_name }}.llm.models import EmbeddingRequest, TextCompletionRequest

from .conftest import REAL_MODEL, SERVED, ServedFactory
from .test_contract import chat, served_on

ROUNDS = 6


@served_on([pair for pair in SERVED if pair[0] in ("vllm", "llamacpp")])
@pytest.mark.parametrize("strategy", get_args(Strategy))
async def test_a_mixed_fleet_serves_every_request(served: ServedFactory, strategy: str) -> None:
    generating, _ = await served()
    embedding, _ = await served(embeddings=True)
    settings = Settings(
        nodes=[],
        models=[ModelSettings(id=REAL_MODEL)],
        load_balancer=LoadBalancerSettings(strategy=strategy),  # type: ignore[arg-type]
    )
    balancer = Balancer(settings, rng=random.Random(3))
    for name, client in (("generating", generating), ("embedding", embedding)):
        balancer.add_node(client.node.model_copy(update={"name": name}), client)
    await balancer.refresh()
    calls: dict[str, Callable[[int], Awaitable[Any]]] = {
        "chat": lambda i: balancer.chat_completion(chat(REAL_MODEL, f"say {i}", max_tokens=4)),
        "completions": lambda i: balancer.text_completion(
            TextCompletionRequest(model=REAL_MODEL, prompt=f"once {i}", max_tokens=4)
        ),
        "embeddings": lambda i: balancer.embeddings(
            EmbeddingRequest(model=REAL_MODEL, input=f"text {i}")
        ),
    }
    failed: Counter[str] = Counter()
    messages: set[str] = set()
    for i in range(ROUNDS):
        for kind, call in calls.items():
            try:
                await call(i)
            except LlmError as error:
                failed[kind] += 1
                messages.add(f"{kind}: {error.status_code} {error.message}")
    summary = ", ".join(f"{kind} {failed[kind]}/{ROUNDS}" for kind in calls)
    assert not failed, f"failed: {summary}; {sorted(messages)}"
    served_by = {node.name: node.requests_total for node in balancer.nodes()}
    assert served_by["embedding"] >= ROUNDS, served_by
