"""The balancer: the node registry, the filters, the strategy, failover and backpressure.

A request names a listed model.  The balancer keeps the nodes that serve it,
are healthy and not ejected, and whose context fits the prompt; waits in a
bounded queue while they are all full; lets the strategy pick one; and retries
a retryable failure on another node until the first streamed chunk.  A request
is never in flight on two nodes at once: an attempt is finished (or closed)
before the next one starts.
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

from ..config import ConfigError, LoadBalancerSettings, NodeSettings, Settings
from ..llm.errors import (
    ContextLengthExceededError,
    LlmError,
    ModelNotFoundError,
    OverloadedError,
    UpstreamError,
    UpstreamUnavailableError,
)
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
from .health import HealthMonitor
from .metrics import BalancerMetrics
from .node import Node
from .state import ListedModel, NodeState, describe
from .strategies import Chooser, RequestFacts, create_chooser

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT", ChatCompletionRequest, TextCompletionRequest, EmbeddingRequest)
AnswerT = TypeVar("AnswerT", ChatCompletionResponse, TextCompletionResponse, EmbeddingResponse)
ChunkT = TypeVar("ChunkT", ChatCompletionChunk, TextCompletionChunk)
# Answers longer than this count as this long in latency samples.
REFERENCE_TOKENS = 100
ClientFactory = Callable[[NodeSettings, LoadBalancerSettings], StreamingLlmClient]


class Balancer:
    """Routes each request to one node; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics_registry: CollectorRegistry | None = None,
        rng: random.Random | None = None,
        chooser: Chooser | None = None,
    ) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        self._fixed_chooser = chooser is not None
        self._chooser = chooser or create_chooser(settings.load_balancer, self._rng)
        self._nodes: dict[str, Node] = {}
        self._metrics = BalancerMetrics(metrics_registry or CollectorRegistry())
        self._health = HealthMonitor(settings.load_balancer, self._nodes.values, self._checked)
        self._room = asyncio.Event()
        self._queued = 0
        self._monitor: asyncio.Task[None] | None = None
        self._retired: list[Node] = []
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def lb(self) -> LoadBalancerSettings:
        return self.settings.load_balancer

    # --- registry --------------------------------------------------------------

    def add_node(self, node: NodeSettings, client: StreamingLlmClient) -> None:
        """Register a node; it takes traffic at once and is health-checked on the next round."""
        if node.name in self._nodes:
            raise ConfigError(f"a node named {node.name!r} is already registered")
        entry = Node(node, client, self.lb)
        entry.refresh_served(self._listed_context())
        self._nodes[node.name] = entry
        self._chooser.nodes_changed(list(self._nodes.values()))
        self._publish(entry)
        self._health.wake()
        self._wake_waiters()

    def remove_node(self, name: str) -> None:
        """Stop routing to the node now; its client closes once its requests finish."""
        node = self._take(name)
        self._chooser.nodes_changed(list(self._nodes.values()))
        self._metrics.forget(name)
        self._retired.append(node)
        self._close_retired()

    def drain_node(self, name: str) -> None:
        """Send the node no new requests; those in flight finish."""
        if name not in self._nodes:
            raise ConfigError(f"no node named {name!r}")
        self._nodes[name].draining = True
        self._publish(self._nodes[name])

    def apply_settings(self, settings: Settings, client_factory: ClientFactory) -> None:
        """Reload without restart: diff the nodes, keep the ones whose connection is unchanged.

        Removed nodes finish their requests; a node whose URL, type or key changed
        is replaced by a new client; weight, concurrency and models change in place.
        """
        old_strategy = self.lb.strategy
        self.settings = settings
        self._health.lb = settings.load_balancer
        if not self._fixed_chooser and settings.load_balancer.strategy != old_strategy:
            self._chooser = create_chooser(settings.load_balancer, self._rng)
        self._chooser.lb = settings.load_balancer
        wanted = {node.name: node for node in settings.nodes}
        for name in [name for name in self._nodes if name not in wanted]:
            self.remove_node(name)
        for name, node_settings in wanted.items():
            current = self._nodes.get(name)
            if current is not None and _same_connection(current.settings, node_settings):
                # A drain stays: it is an operator's decision, not configuration.
                current.settings = node_settings
                current.lb = settings.load_balancer
                continue
            if current is not None:
                self.remove_node(name)
            self.add_node(node_settings, client_factory(node_settings, settings.load_balancer))
        listed = self._listed_context()
        for node in self._nodes.values():
            node.refresh_served(listed)
            self._publish(node)
        self._chooser.nodes_changed(list(self._nodes.values()))
        self._wake_waiters()

    def _take(self, name: str) -> Node:
        try:
            return self._nodes.pop(name)
        except KeyError:
            raise ConfigError(f"no node named {name!r}") from None

    def _listed_context(self) -> dict[str, int | None]:
        return {model.id: model.context_length for model in self.settings.models}

    # --- lifecycle -------------------------------------------------------------

    async def refresh(self) -> None:
        """One health check and discovery round for every node, now."""
        await self._health.check_all()

    async def start(self) -> None:
        """Check every node once, then keep checking in the background."""
        await self.refresh()
        self._monitor = asyncio.create_task(self._health.run(), name="balancer-health")

    async def aclose(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        nodes = [*self._nodes.values(), *self._retired]
        self._nodes.clear()
        self._retired.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)
        await asyncio.gather(*(node.client.aclose() for node in nodes), return_exceptions=True)

    def _close_retired(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: aclose() closes them
        for node in [node for node in self._retired if node.in_flight == 0]:
            self._retired.remove(node)
            task = loop.create_task(node.client.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # --- requests --------------------------------------------------------------

    async def chat_completion(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        facts = self._facts(request.model, request.prompt_text(), request.token_limit())
        return await self._call(
            request, facts, lambda client, upstream: client.chat_completion(upstream)
        )

    async def text_completion(self, request: TextCompletionRequest) -> TextCompletionResponse:
        facts = self._facts(request.model, request.prompt_text(), request.max_tokens)
        return await self._call(
            request, facts, lambda client, upstream: client.text_completion(upstream)
        )

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        facts = self._facts(request.model, "\n".join(request.inputs()), None)
        return await self._call(
            request, facts, lambda client, upstream: client.embeddings(upstream)
        )

    def stream_chat_completion(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        facts = self._facts(request.model, request.prompt_text(), request.token_limit())
        return self._stream(
            request, facts, lambda client, upstream: client.stream_chat_completion(upstream)
        )

    def stream_text_completion(
        self, request: TextCompletionRequest
    ) -> AsyncIterator[TextCompletionChunk]:
        facts = self._facts(request.model, request.prompt_text(), request.max_tokens)
        return self._stream(
            request, facts, lambda client, upstream: client.stream_text_completion(upstream)
        )

    def _facts(self, model: str, prompt: str, max_tokens: int | None) -> RequestFacts:
        """The request as strategies see it; the token count is estimated (chars / 4)."""
        if not any(listed.id == model for listed in self.settings.models):
            raise ModelNotFoundError(f"the model {model!r} is not served here", param="model")
        needed = math.ceil(len(prompt) / self.lb.chars_per_token) + (max_tokens or 0)
        return RequestFacts(model, needed, prompt[: self.lb.prefix_chars])

    async def _call(
        self,
        request: RequestT,
        facts: RequestFacts,
        send: Callable[[StreamingLlmClient, RequestT], Awaitable[AnswerT]],
    ) -> AnswerT:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lb.failover_deadline_s
        tried: set[str] = set()
        last_error: LlmError | None = None
        for attempt in range(self.lb.max_retries + 1):
            node = await self._select(facts, tried, last_error)
            tried.add(node.name)
            upstream = request.model_copy(update={"model": node.served[facts.model].upstream_name})
            trial = self._dispatch(node)
            started = loop.time()
            try:
                answer = await send(node.client, upstream)
            except Exception as exc:
                error = self._failed(node, exc, started)
                if not self._may_retry(error, attempt, deadline):
                    raise error from (None if error is exc else exc)
                last_error = error
                continue
            finally:
                self._release(node, trial)
            self._succeeded(node, started, started, _completion_tokens(answer))
            answer.model = facts.model
            return answer
        raise AssertionError("the loop returns or raises")

    async def _stream(
        self,
        request: RequestT,
        facts: RequestFacts,
        open_stream: Callable[[StreamingLlmClient, RequestT], AsyncIterator[ChunkT]],
    ) -> AsyncIterator[ChunkT]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lb.failover_deadline_s
        tried: set[str] = set()
        last_error: LlmError | None = None
        for attempt in range(self.lb.max_retries + 1):
            node = await self._select(facts, tried, last_error)
            tried.add(node.name)
            upstream = request.model_copy(update={"model": node.served[facts.model].upstream_name})
            trial = self._dispatch(node)
            started = loop.time()
            stream = open_stream(node.client, upstream)
            try:
                try:
                    first = await anext(stream)
                except StopAsyncIteration:
                    self._succeeded(node, started, started, None)
                    return
                except Exception as exc:
                    error = self._failed(node, exc, started)
                    if not self._may_retry(error, attempt, deadline):
                        raise error from (None if error is exc else exc)
                    last_error = error
                    continue
                first_at = self._first_chunk(node, started)
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
                    error = self._failed(node, exc, started)
                    raise error from (None if error is exc else exc)
                self._succeeded(node, started, first_at, tokens.total())
                return
            finally:
                await _aclose(stream)
                self._release(node, trial)
        raise AssertionError("the loop returns or raises")

    def _may_retry(self, error: LlmError, attempt: int, deadline: float) -> bool:
        if not error.retryable or attempt >= self.lb.max_retries:
            return False
        if asyncio.get_running_loop().time() >= deadline:
            return False
        self._metrics.retries.inc()
        return True

    # --- selection -------------------------------------------------------------

    async def _select(
        self, facts: RequestFacts, tried: set[str], last_error: LlmError | None
    ) -> Node:
        """A node for this attempt, waiting in the bounded queue while all are full."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.lb.selection_timeout_s
        queued = False
        try:
            while True:
                fresh = [node for node in self._eligible(facts) if node.name not in tried]
                if not fresh:
                    raise last_error or UpstreamUnavailableError(
                        f"no node serving {facts.model!r} is available"
                    )
                room = [node for node in fresh if not node.saturated()]
                if room:
                    node = self._chooser.choose(room, facts)
                    self._metrics.selected(node.name, self.lb.strategy)
                    return node
                if not queued:
                    if self._queued >= self.lb.max_queue:
                        raise self._overloaded(facts, fresh)
                    queued = True
                    self._queued += 1
                    self._metrics.queued.set(self._queued)
                remaining = give_up - loop.time()
                if remaining <= 0:
                    raise self._overloaded(facts, fresh)
                # Woken when a slot frees; the timeout also catches time-driven changes
                # (a backoff ending) and server gauges we are not told about.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), min(remaining, 1.0))
        finally:
            if queued:
                self._queued -= 1
                self._metrics.queued.set(self._queued)

    def _eligible(self, facts: RequestFacts) -> list[Node]:
        """Nodes that serve the model, fit the prompt and are up (or all of them, in panic)."""
        now = asyncio.get_running_loop().time()
        serving = [
            node
            for node in self._nodes.values()
            if not node.draining and facts.model in node.served
        ]
        if not serving:
            raise UpstreamUnavailableError(f"no node serves {facts.model!r} at the moment")
        fitting = [node for node in serving if _fits(node, facts)]
        if not fitting:
            largest = max(node.served[facts.model].context_length or 0 for node in serving)
            raise ContextLengthExceededError(
                f"the prompt and max_tokens need about {facts.needed_tokens} tokens "
                f"(estimated at {self.lb.chars_per_token:g} characters a token); "
                f"the largest context length serving {facts.model!r} is {largest}",
                param="messages",
            )
        usable = [node for node in fitting if node.usable(now)]
        # Panic mode (as Envoy): when every node is down, trying them beats refusing.
        return usable or fitting

    def _overloaded(self, facts: RequestFacts, nodes: list[Node]) -> OverloadedError:
        self._metrics.overloaded.inc()
        # Roughly when the quickest node starts answering again.
        quickest = min((node.ttft.value_ms or 1000.0) for node in nodes) / 1000
        return OverloadedError(
            f"every node serving {facts.model!r} is busy; try again shortly",
            retry_after=float(min(max(math.ceil(quickest), 1), 60)),
        )

    # --- outcomes --------------------------------------------------------------

    def _dispatch(self, node: Node) -> bool:
        trial = node.dispatched(asyncio.get_running_loop().time())
        self._metrics.node(node.name).requests.inc()
        self._publish(node)
        return trial

    def _release(self, node: Node, trial: bool) -> None:
        node.finished(trial)
        if node in self._retired:
            self._close_retired()
        else:
            self._publish(node)
        self._wake_waiters()

    def _first_chunk(self, node: Node, started: float) -> float:
        now = asyncio.get_running_loop().time()
        node.ttft.observe((now - started) * 1000, now)
        self._metrics.node(node.name).ttft.observe(now - started)
        return now

    def _succeeded(self, node: Node, started: float, first_at: float, tokens: int | None) -> None:
        """Record a whole answer.  The latency sample is the time to the first chunk plus
        the generation time scaled to a reference answer length: a long answer must not
        make a node look slow (LiteLLM #1393), and a short answer that queued must not make
        it look fast."""
        now = asyncio.get_running_loop().time()
        before = node.state(now)
        scale = REFERENCE_TOKENS / max(tokens or 0, REFERENCE_TOKENS)
        node.succeeded(((first_at - started) + (now - first_at) * scale) * 1000, now)
        if tokens and tokens > 1 and first_at > started:
            # Decode speed, scaled both ways: the first chunk carries the first token, the
            # rest took (now - first_at), whatever the answer's length.
            node.decode.observe((now - first_at) * 1000 * REFERENCE_TOKENS / (tokens - 1), now)
        self._metrics.node(node.name).latency.observe(now - started)
        self._transition(node, before)

    def _failed(self, node: Node, exc: Exception, started: float) -> LlmError:
        """Count the failure against the node when it is the node's fault; return it as an
        LlmError (a client bug becomes a retryable upstream error that names only the node)."""
        if isinstance(exc, LlmError):
            error = exc
        else:
            log.error("node %s: client raised %s", node.name, type(exc).__name__, exc_info=exc)
            error = UpstreamError(f"node {node.name} failed")
        self._metrics.error(node.name, error.code or error.error_type)
        if error.retryable:
            now = asyncio.get_running_loop().time()
            before = node.state(now)
            if node.failed((now - started) * 1000, now, error.retry_after):
                self._metrics.node(node.name).ejections.inc()
            self._transition(node, before)
        return error

    def _checked(self, node: Node, before: str) -> None:
        node.refresh_served(self._listed_context())
        self._transition(node, before)
        self._wake_waiters()

    def _transition(self, node: Node, before: str) -> None:
        after = node.state(asyncio.get_running_loop().time())
        if after != before:
            if after == "ejected":
                log.warning(
                    "node %s ejected for %.0f s after failures", node.name, node.backoff_s()
                )
            else:
                log.info("node %s: %s -> %s", node.name, before, after)
        if node.name in self._nodes and self._nodes[node.name] is node:
            self._publish(node)

    def _publish(self, node: Node) -> None:
        series = self._metrics.node(node.name)
        series.in_flight.set(node.in_flight)
        up = not node.draining and node.usable(_now())
        series.healthy.set(1 if up else 0)

    def _wake_waiters(self) -> None:
        # Every waiter wakes and looks again; the first in line takes the slot.
        self._room.set()
        self._room = asyncio.Event()

    # --- descriptions ----------------------------------------------------------

    def listed_models(self) -> list[ListedModel]:
        """Per listed model: its settings, the nodes serving it, their smallest context, and
        whether any of them takes traffic now."""
        now = _now()
        listed = []
        for model in self.settings.models:
            nodes = [node for node in self._nodes.values() if model.id in node.served]
            contexts = [
                context
                for node in nodes
                if (context := node.served[model.id].context_length) is not None
            ]
            listed.append(
                ListedModel(
                    settings=model,
                    nodes=[node.name for node in nodes],
                    context_length=min(contexts) if contexts else model.context_length,
                    healthy=any(not node.draining and node.usable(now) for node in nodes),
                )
            )
        return listed

    def node_states(self) -> list[NodeState]:
        now = _now()
        return [describe(node, now) for node in self._nodes.values()]

    def nodes(self) -> Iterable[Node]:
        """The live registry, for tools and tests that look inside."""
        return self._nodes.values()


def _completion_tokens(answer: AnswerT) -> int | None:
    usage = answer.usage
    return usage.completion_tokens if isinstance(usage, Usage) else None


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


def _fits(node: Node, facts: RequestFacts) -> bool:
    context = node.served[facts.model].context_length
    return context is None or facts.needed_tokens <= context


def _same_connection(old: NodeSettings, new: NodeSettings) -> bool:
    return old.url == new.url and old.type == new.type and old.api_key == new.api_key


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
