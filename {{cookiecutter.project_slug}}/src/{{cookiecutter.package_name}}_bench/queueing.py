"""`bench queue`: what the admission queue costs when the provider is overloaded.

The real `Balancer` in front of one in-process node that answers at once
(`max_concurrency` slots, so the node is never the bottleneck): closed-loop
callers keep every slot busy and the given number of requests waiting, and the
table gives completions per second and the event-loop time each one costs.
With no waiters that time is the balancer's own cost per request; with
waiters it adds what a freed slot costs to hand over.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import AsyncIterator

import uvloop

from {{ cookiecutter.package_name }}.balancer.balancer import Balancer
from {{ cookiecutter.package_name }}.config import LoadBalancerSettings, ModelSettings, NodeSettings, Settings
from {{ cookiecutter.package_name }}.llm.interfaces import StreamingLlmClient
from {{ cookiecutter.package_name }}.llm.models import (
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
    NodeMetrics,
    TextCompletionChunk,
    TextCompletionRequest,
    TextCompletionResponse,
)

MODEL = "bench-model"
SLOTS = 4


class InstantNode(StreamingLlmClient):
    """A node that answers every chat request after one turn of the event loop."""

    def __init__(self) -> None:
        self._answer = ChatCompletionResponse(
            model=MODEL,
            choices=[ChatCompletionChoice(message=ChatMessage(role="assistant", content="ok"))],
        )
        self._metrics = NodeMetrics()

    def get_supported_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=MODEL)]

    def get_metrics(self) -> NodeMetrics:
        return self._metrics

    async def chat_completion(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        await asyncio.sleep(0)
        return self._answer

    async def text_completion(self, request: TextCompletionRequest) -> TextCompletionResponse:
        raise NotImplementedError

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        raise NotImplementedError

    def stream_chat_completion(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        raise NotImplementedError

    def stream_text_completion(
        self, request: TextCompletionRequest
    ) -> AsyncIterator[TextCompletionChunk]:
        raise NotImplementedError

    async def check_health(self) -> None:
        return None

    async def discover_models(self) -> list[ModelInfo]:
        return self.get_supported_models()

    async def aclose(self) -> None:
        return None


async def measure(waiters: int, duration: float) -> float:
    """Completions per second with every slot busy and `waiters` requests queued."""
    lb = LoadBalancerSettings(
        max_queue=waiters + SLOTS, selection_timeout_s=3600, health_check_interval_s=3600
    )
    node = NodeSettings(
        name="node", url="http://127.0.0.1:9", models=[MODEL], max_concurrency=SLOTS
    )
    settings = Settings(nodes=[node], models=[ModelSettings(id=MODEL)], load_balancer=lb)
    balancer = Balancer(settings)
    balancer.add_node(node, InstantNode())
    request = ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
    )
    done = 0
    counting = False
    stopping = False

    async def caller() -> None:
        nonlocal done
        while not stopping:
            await balancer.chat_completion(request)
            if counting:
                done += 1

    callers = [asyncio.create_task(caller()) for _ in range(SLOTS + waiters)]
    await asyncio.sleep(min(1.0, duration / 4))  # every caller queued or running
    counting = True
    started = time.perf_counter()
    await asyncio.sleep(duration)
    counting = False
    elapsed = time.perf_counter() - started
    # Each caller ends after its current request: cancelling them would race with
    # the queue's wake-ups, and a waiter must see its request through anyway.
    stopping = True
    await asyncio.gather(*callers)
    await balancer.aclose()
    return done / elapsed


def table(rows: list[tuple[int, float]]) -> str:
    lines = [
        "| waiting requests | completions/s | µs of event loop per completion |",
        "|---:|---:|---:|",
    ]
    for waiters, rate in rows:
        lines.append(f"| {waiters} | {rate:,.0f} | {1e6 / rate if rate else float('inf'):,.1f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench queue", description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per row")
    parser.add_argument(
        "--waiters", type=int, nargs="+", default=[0, 256, 1024], help="queue lengths"
    )
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be greater than 0")
    if min(args.waiters) < 0:
        parser.error("--waiters must not be negative")
    logging.basicConfig(level=logging.WARNING)
    rows = [(waiters, uvloop.run(measure(waiters, args.duration))) for waiters in args.waiters]
    print(table(rows))
    print(f"\nOne node with {SLOTS} slots answering at once, every slot busy; uvloop, one process.")
    return 0
