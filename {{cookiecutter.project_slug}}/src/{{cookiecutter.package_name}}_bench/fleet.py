"""In-process simulated nodes and a virtual clock for the balancing-quality benchmark.

A `SimNode` is a `StreamingLlmClient` that models an LLM server without HTTP:
`slots` requests run at once and the rest wait in its FIFO queue; a request
costs prefill (prompt tokens not in the prefix cache) plus decode (output
tokens); it may fail fast with a 503.  The `VirtualClockLoop` makes every sleep
return at once with the clock moved on, so a fleet's half hour runs in seconds
and the figures do not depend on how busy the machine's cores are.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import selectors
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from {{ cookiecutter.package_name }}.balancer.node import Node
from {{ cookiecutter.package_name }}.balancer.strategies import Chooser, RequestFacts
from {{ cookiecutter.package_name }}.config import LoadBalancerSettings
from {{ cookiecutter.package_name }}.llm.errors import NotSupportedError, UpstreamUnavailableError
from {{ cookiecutter.package_name }}.llm.interfaces import StreamingLlmClient
from {{ cookiecutter.package_name }}.llm.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChoiceDelta,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
    NodeMetrics,
    TextCompletionChunk,
    TextCompletionRequest,
    TextCompletionResponse,
    Usage,
)

CHARS_PER_TOKEN = 4
FAIL_FAST_S = 0.001

# The request being routed, for the oracle's perfect knowledge.
current_request: ContextVar[ChatCompletionRequest | None] = ContextVar(
    "current_request", default=None
)


class _Clock:
    now = 0.0


class _JumpingSelector(selectors.SelectSelector):
    """Where the loop would block for `timeout`, move the clock on instead."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            self._clock.now += timeout
        return super().select(0)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose time only moves when every task waits on a timer."""

    def __init__(self) -> None:
        self._clock = _Clock()
        super().__init__(_JumpingSelector(self._clock))

    def time(self) -> float:
        return self._clock.now


@dataclass(frozen=True)
class NodeSpec:
    name: str
    slots: int
    ms_per_token: float
    prefill_ms_per_token: float
    fail_rate: float = 0.0
    cached_prompts: int = 0

    def service_s(self, prompt_tokens: int, output_tokens: int) -> float:
        return (
            prompt_tokens * self.prefill_ms_per_token + output_tokens * self.ms_per_token
        ) / 1000


@dataclass
class _Work:
    prompt_tokens: int
    output_tokens: int
    system: str | None

    @classmethod
    def of(cls, request: ChatCompletionRequest) -> _Work:
        system = request.messages[0].text() if request.messages[0].role == "system" else None
        return cls(
            prompt_tokens=len(request.prompt_text()) // CHARS_PER_TOKEN,
            output_tokens=request.max_tokens or 1,
            system=system,
        )


@dataclass
class SimNode(StreamingLlmClient):
    spec: NodeSpec
    model: str
    rng: random.Random
    queued: list[float] = field(default_factory=list)  # service times, in arrival order
    running: list[float] = field(default_factory=list)  # finish times (a heap)
    cache: OrderedDict[str, None] = field(default_factory=OrderedDict)
    completed: int = 0
    cache_hits: int = 0
    cache_lookups: int = 0

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.spec.slots)
        self._gauges = NodeMetrics()  # publishes none: the balancer counts load itself

    def get_supported_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=self.model)]

    def get_metrics(self) -> NodeMetrics:
        return self._gauges

    async def check_health(self) -> None:
        return None

    async def discover_models(self) -> list[ModelInfo]:
        return self.get_supported_models()

    async def aclose(self) -> None:
        return None

    def uncached_tokens(self, work: _Work) -> int:
        """Prompt tokens to prefill: the shared system prompt is free when cached."""
        if work.system is None or self.spec.cached_prompts == 0:
            return work.prompt_tokens
        if work.system in self.cache:
            return work.prompt_tokens - len(work.system) // CHARS_PER_TOKEN
        return work.prompt_tokens

    def expected_finish(self, now: float, request: ChatCompletionRequest) -> float:
        """When this request would finish here: the oracle's perfect knowledge."""
        free = sorted(self.running)
        free += [now] * (self.spec.slots - len(free))
        heapq.heapify(free)
        for service in self.queued:
            heapq.heappush(free, max(heapq.heappop(free), now) + service)
        work = _Work.of(request)
        start = max(free[0], now)
        return start + self.spec.service_s(self.uncached_tokens(work), work.output_tokens)

    async def stream_chat_completion(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        loop = asyncio.get_running_loop()
        if self.rng.random() < self.spec.fail_rate:
            await asyncio.sleep(FAIL_FAST_S)
            raise UpstreamUnavailableError("simulated overload")
        work = _Work.of(request)
        uncached = self.uncached_tokens(work)
        service = self.spec.service_s(uncached, work.output_tokens)
        self.queued.append(service)
        try:
            await self._slots.acquire()
        finally:
            self.queued.remove(service)
        finish = loop.time() + service
        heapq.heappush(self.running, finish)
        try:
            if work.system is not None and self.spec.cached_prompts:
                self._touch(work.system)
            await asyncio.sleep(uncached * self.spec.prefill_ms_per_token / 1000)
            yield self._chunk(request, "first")
            await asyncio.sleep(work.output_tokens * self.spec.ms_per_token / 1000)
            self.completed += 1
            yield self._chunk(request, None, Usage.of(work.prompt_tokens, work.output_tokens))
        finally:
            self.running.remove(finish)
            heapq.heapify(self.running)
            self._slots.release()

    def _touch(self, system: str) -> None:
        self.cache_lookups += 1
        if system in self.cache:
            self.cache_hits += 1
            self.cache.move_to_end(system)
            return
        self.cache[system] = None
        while len(self.cache) > self.spec.cached_prompts:
            self.cache.popitem(last=False)

    @staticmethod
    def _chunk(
        request: ChatCompletionRequest, text: str | None, usage: Usage | None = None
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id="sim",
            model=request.model,
            choices=[] if usage else [ChatCompletionStreamChoice(delta=ChoiceDelta(content=text))],
            usage=usage,
        )

    async def chat_completion(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        raise NotSupportedError("the benchmark streams")

    async def text_completion(self, request: TextCompletionRequest) -> TextCompletionResponse:
        raise NotSupportedError("the benchmark streams")

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        raise NotSupportedError("the benchmark streams")

    def stream_text_completion(
        self, request: TextCompletionRequest
    ) -> AsyncIterator[TextCompletionChunk]:
        raise NotSupportedError("the benchmark streams")


class Oracle(Chooser):
    """Join the node where this request would finish first, knowing every queue exactly,
    every node's speed and cache, the request's length and each node's failure rate."""

    def __init__(
        self, lb: LoadBalancerSettings, rng: random.Random, fleet: dict[str, SimNode]
    ) -> None:
        super().__init__(lb, rng)
        self.fleet = fleet

    def choose(self, candidates: Sequence[Node], facts: RequestFacts) -> Node:
        request = current_request.get()
        if request is None:
            raise RuntimeError("the oracle routes only requests the benchmark announced")
        now = asyncio.get_running_loop().time()
        finish = {
            node.name: self.fleet[node.name].expected_finish(now, request) for node in candidates
        }
        fallback = min(finish.values())

        def expected(node: Node) -> float:
            # A failure costs almost nothing, then the request goes to the best other node.
            rate = self.fleet[node.name].spec.fail_rate
            return (1 - rate) * finish[node.name] + rate * (fallback + FAIL_FAST_S)

        return self._lowest(candidates, expected)
