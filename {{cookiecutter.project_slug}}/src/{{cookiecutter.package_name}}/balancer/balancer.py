"""The balancer: one object the API and the job runner call, and the request path.

The README's "Balancing" says what a request goes through.  A retryable failure is
tried again on another node until the first streamed chunk, and a request is never
in flight on two nodes at once: an attempt is finished (or closed) before the next
starts.  The parts live beside this module: `registry` (nodes, reload), `admission`
(filters, strategy, queue), `accounting` (what an outcome does to its node) and
`health` (active checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from ..config import Capability, LoadBalancerSettings, NodeSettings, Settings
from ..llm.errors import LlmError, ModelNotFoundError, NotSupportedError
from ..llm.interfaces import StreamingLlmClient
from ..llm.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    TextCompletionChunk,
    TextCompletionRequest,
    TextCompletionResponse,
    Usage,
)
from .accounting import Accounting
from .admission import Admission
from .health import HealthMonitor
from .metrics import BalancerMetrics, ModelCollector
from .node import Node
from .registry import ClientFactory, Registry
from .shared import SharedState
from .state import ListedModel, NodeState
from .strategies import Chooser, RequestFacts

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT", ChatCompletionRequest, TextCompletionRequest, EmbeddingRequest)
AnswerT = TypeVar("AnswerT", ChatCompletionResponse, TextCompletionResponse, EmbeddingResponse)
ChunkT = TypeVar("ChunkT", ChatCompletionChunk, TextCompletionChunk)


class Balancer:
    """Routes each request to one node; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics_registry: CollectorRegistry | None = None,
        rng: random.Random | None = None,
        chooser: Chooser | None = None,
        shared: SharedState | None = None,
    ) -> None:
        registry = metrics_registry or CollectorRegistry()
        self._metrics = BalancerMetrics(registry)
        registry.register(ModelCollector(self.listed_models))
        self._registry = Registry(settings, self._metrics, rng or random.Random(), chooser, _now)
        self._admission = Admission(self._registry, self._metrics, shared, _now)
        self._accounting = Accounting(self._metrics, shared, self._registry.holds, _now)
        self._health = HealthMonitor(
            settings.load_balancer, lambda: self._registry.nodes.values(), self._checked
        )
        self._monitor: asyncio.Task[None] | None = None

    @property
    def settings(self) -> Settings:
        """The settings in force: the API, the listing and the fleet all read this one."""
        return self._registry.settings

    @property
    def lb(self) -> LoadBalancerSettings:
        return self._registry.lb

    # --- the fleet -------------------------------------------------------------------

    def add_node(self, node: NodeSettings, client: StreamingLlmClient) -> None:
        """Register a node; it takes traffic at once and is health-checked on the next round."""
        self._registry.add(node, client)
        self._health.wake()
        self._admission.fleet_changed()

    def remove_node(self, name: str) -> None:
        """Stop routing to the node now; its client closes once its requests finish."""
        self._registry.remove(name)

    def drain_node(self, name: str) -> None:
        """Send the node no new requests; those in flight finish."""
        self._registry.drain(name)

    def apply_settings(self, settings: Settings, client_factory: ClientFactory) -> None:
        """Reload without restart, all or nothing.

        Every client the new settings need is built first; if any cannot be, this
        raises a ConfigError saying why and nothing changes.  Then the fleet swaps in
        one step: removed nodes finish their requests; a node whose URL, type, key or
        max_concurrency changed gets a new client (its pool is sized by it); weight
        and models change in place.
        """
        plan = self._registry.plan(settings, client_factory)
        added = self._registry.swap(plan)
        self._health.lb = settings.load_balancer
        if added:
            self._health.wake()
        self._admission.fleet_changed()

    def fleet_changed(self) -> None:
        """Room may have opened or a peer changed a node's state (told by a shared-state
        backend): the node gauges show it, queued requests look again."""
        now = _now()
        for node in self._registry.nodes.values():
            self._metrics.publish(node, now)
        self._admission.fleet_changed()

    # --- lifecycle -------------------------------------------------------------------

    async def refresh(self) -> None:
        """One health check and discovery round for every node, now."""
        await self._health.check_all()

    async def start(self) -> None:
        """Check every node once, then keep checking in the background."""
        await self.refresh()
        self._monitor = asyncio.create_task(self._health.run(), name="balancer-health")

    @property
    def health_checks_running(self) -> bool:
        """False when the background health checks have stopped (or never started)."""
        return self._monitor is not None and not self._monitor.done()

    async def aclose(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        await self._registry.aclose()

    def _checked(self, node: Node, before: str) -> None:
        node.refresh_served(self._registry.listed_context())
        self._accounting.transition(node, before)
        if node.state(_now()) != before:
            self._admission.fleet_changed()

    # --- requests --------------------------------------------------------------------

    async def chat_completion(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        facts = self._chat_facts(request)
        return await self._call(
            request, facts, lambda client, upstream: client.chat_completion(upstream)
        )

    async def text_completion(self, request: TextCompletionRequest) -> TextCompletionResponse:
        facts = self._facts(request.model, request.prompt_text(), request.max_tokens, "completions")
        return await self._call(
            request, facts, lambda client, upstream: client.text_completion(upstream)
        )

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        facts = self._facts(request.model, "\n".join(request.inputs()), None, "embeddings")
        return await self._call(
            request, facts, lambda client, upstream: client.embeddings(upstream)
        )

    def stream_chat_completion(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        facts = self._chat_facts(request)
        return self._stream(
            request, facts, lambda client, upstream: client.stream_chat_completion(upstream)
        )

    def stream_text_completion(
        self, request: TextCompletionRequest
    ) -> AsyncIterator[TextCompletionChunk]:
        facts = self._facts(request.model, request.prompt_text(), request.max_tokens, "completions")
        return self._stream(
            request, facts, lambda client, upstream: client.stream_text_completion(upstream)
        )

    def _chat_facts(self, request: ChatCompletionRequest) -> RequestFacts:
        parts = [p for m in request.messages if isinstance(m.content, list) for p in m.content]
        tools = bool(request.tools) and request.tool_choice != "none"
        images = any(part.get("type") == "image_url" for part in parts)
        needs = ("chat", *(("tools",) if tools else ()), *(("vision",) if images else ()))
        return self._facts(request.model, request.prompt_text(), request.token_limit(), *needs)

    def _facts(
        self, model: str, prompt: str, max_tokens: int | None, *needs: Capability
    ) -> RequestFacts:
        """The request as strategies see it; the token count is estimated (chars / 4)."""
        if not any(listed.id == model for listed in self.settings.models):
            raise ModelNotFoundError(f"the model {model!r} is not served here", param="model")
        lb = self.lb
        prompt_tokens = math.ceil(len(prompt) / lb.chars_per_token)
        needed = prompt_tokens + (max_tokens or 0)
        return RequestFacts(model, needed, prompt[: lb.prefix_chars], prompt_tokens, needs)

    async def _call(
        self,
        request: RequestT,
        facts: RequestFacts,
        send: Callable[[StreamingLlmClient, RequestT], Awaitable[AnswerT]],
    ) -> AnswerT:
        """Attempts until one answers or no retry is left."""
        deadline = _now() + self.lb.failover_deadline_s
        tried: set[str] = set()
        last_error: LlmError | None = None
        retries = 0
        while True:
            node = await self._admission.select(facts, tried, last_error, request)
            tried.add(node.name)
            upstream = request.model_copy(update={"model": node.served[facts.model].upstream_name})
            trial = self._accounting.dispatched(node)
            started = _now()
            try:
                answer = await send(node.client, upstream)
            except Exception as exc:
                error = self._accounting.failed(node, exc, started)
                if not self._may_retry(node, facts, error, retries, deadline):
                    raise error from (None if error is exc else exc)
                last_error = error
                retries += error.retryable
                continue
            finally:
                self._release(node, trial)
            tokens = answer.usage.completion_tokens if isinstance(answer.usage, Usage) else None
            self._accounting.succeeded(node, started, started, tokens)
            answer.model = facts.model
            return answer

    async def _stream(
        self,
        request: RequestT,
        facts: RequestFacts,
        open_stream: Callable[[StreamingLlmClient, RequestT], AsyncIterator[ChunkT]],
    ) -> AsyncIterator[ChunkT]:
        """Attempts until one streams its first chunk; after that, no retry."""
        deadline = _now() + self.lb.failover_deadline_s
        tried: set[str] = set()
        last_error: LlmError | None = None
        retries = 0
        while True:
            node = await self._admission.select(facts, tried, last_error, request)
            tried.add(node.name)
            upstream = request.model_copy(update={"model": node.served[facts.model].upstream_name})
            trial = self._accounting.dispatched(node)
            started = _now()
            stream = open_stream(node.client, upstream)
            try:
                try:
                    first = await anext(stream)
                except StopAsyncIteration:
                    self._accounting.succeeded(node, started, started, None)
                    return
                except Exception as exc:
                    error = self._accounting.failed(node, exc, started)
                    if not self._may_retry(node, facts, error, retries, deadline):
                        raise error from (None if error is exc else exc)
                    last_error = error
                    retries += error.retryable
                    continue
                first_at = self._accounting.first_chunk(node, started)
                first.model = facts.model
                tokens = _StreamTokens()
                tokens.count(first)
                yield first
                # From here on the client has bytes: no retry, the error goes to the caller.
                try:
                    async for chunk in stream:
                        chunk.model = facts.model
                        tokens.count(chunk)
                        yield chunk
                except Exception as exc:
                    error = self._accounting.failed(node, exc, started)
                    raise error from (None if error is exc else exc)
                self._accounting.succeeded(node, started, first_at, tokens.total())
                return
            finally:
                await _aclose(stream)
                self._release(node, trial)

    def _release(self, node: Node, trial: bool) -> None:
        """The attempt's slot is free: a queued request takes it, or a retired client closes."""
        self._accounting.released(node, trial)
        if self._registry.holds(node):
            self._admission.slot_freed(node)
        else:
            self._registry.close_retired()

    def _may_retry(
        self, node: Node, facts: RequestFacts, error: LlmError, retries: int, deadline: float
    ) -> bool:
        """A node failure within budget, or a node that said it cannot (asked never again)."""
        if isinstance(error, NotSupportedError):
            node.refuse(facts.model, facts.needs[0])
            return True
        if not error.retryable or retries >= self.lb.max_retries or _now() >= deadline:
            return False
        self._metrics.retries.inc()
        return True

    # --- descriptions ----------------------------------------------------------------

    def listed_models(self) -> list[ListedModel]:
        return self._registry.listed_models()

    def node_states(self) -> list[NodeState]:
        return self._registry.node_states()

    def nodes(self) -> Iterable[Node]:
        """The live registry, for tools and tests that look inside."""
        return self._registry.nodes.values()

    @property
    def queued(self) -> int:
        """Requests waiting for a free slot now."""
        return self._admission.waiting


class _StreamTokens:
    """Output tokens of a stream: the usage chunk's count, else one per content chunk."""

    def __init__(self) -> None:
        self.chunks = 0
        self.reported: int | None = None

    def count(self, chunk: ChatCompletionChunk | TextCompletionChunk) -> None:
        if chunk.choices:
            self.chunks += 1
        if chunk.usage is not None:
            self.reported = chunk.usage.completion_tokens

    def total(self) -> int:
        return self.reported if self.reported is not None else self.chunks


def _now() -> float:
    """The loop's clock (virtual in the benchmark); outside a loop, the clock loops use."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


async def _aclose(stream: AsyncIterator[Any]) -> None:
    """Close an upstream stream so the server stops generating."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
