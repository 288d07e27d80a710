"""Admission: which nodes may take a request, the strategy's pick, and the FIFO queue.

An API request finding every candidate full gets 429 at once, as OpenRouter asks of
providers (its guide, "Performance metrics"); the opt-in queue and a job's `patience`
are in the README ("Balancing").  A freed slot is reserved for the first waiter that
can use it: one waiter wakes per completion, so a completion's cost does not grow with
the queue.  Changes that may open several slots (a node added, readmitted or reloaded)
wake every waiter, and each looks again every second for changes nobody announces.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ..llm.errors import (
    ContextLengthExceededError,
    LlmError,
    OverloadedError,
    UpstreamUnavailableError,
)
from ..llm.models import ChatCompletionRequest, EmbeddingRequest, TextCompletionRequest
from .metrics import BalancerMetrics
from .node import Node, capable
from .registry import Registry
from .shared import SharedState
from .strategies import RequestFacts

Prompted = ChatCompletionRequest | TextCompletionRequest | EmbeddingRequest
# How often a waiter looks again without being woken.
RECHECK_S = 1.0
# How long the current task's requests may wait for a node, past `max_queue` (a context
# variable: jobs and the API share the balancer's call signatures); None: the API's bound.
_patience: ContextVar[float | None] = ContextVar("patience", default=None)


@contextmanager
def patience(wait_s: float) -> Iterator[None]:
    token = _patience.set(wait_s)
    try:
        yield
    finally:
        _patience.reset(token)


@dataclasses.dataclass(slots=True, eq=False)
class _Waiter:
    facts: RequestFacts
    tried: set[str]
    # Resolved with a node whose slot is reserved for this waiter, or None: look again.
    woken: asyncio.Future[Node | None]
    gone: bool = False  # left the queue (served, timed out or cancelled)

    def can_use(self, node: Node) -> bool:
        return (
            node.can(self.facts.model, self.facts.needs)
            and node.name not in self.tried
            and _fits(node, self.facts)
        )


class Admission:
    def __init__(
        self,
        registry: Registry,
        metrics: BalancerMetrics,
        shared: SharedState | None,
        now: Callable[[], float],
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._shared = shared
        self._now = now
        self._queue: deque[_Waiter] = deque()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    async def select(
        self,
        facts: RequestFacts,
        tried: set[str],
        last_error: LlmError | None,
        request: Prompted | None = None,
    ) -> Node:
        """A node with a free slot for this attempt, waiting in the queue while all are full.

        A prompt the estimate finds too long for every node is refused only if the node
        with the largest context, counting it itself where its server can, agrees.
        """
        try:
            candidates = self._candidates(facts, tried, last_error)
        except ContextLengthExceededError:
            if request is None or (counted := await self._count(facts, request)) is None:
                raise
            facts = counted
            candidates = self._candidates(facts, tried, last_error)
        node = self._choose(candidates, facts)
        if node is not None:
            return node
        wait_s = _patience.get()
        if wait_s is None:
            # A replica may first have to fetch from its peers a slot they are not using.
            fetching = self._shared is not None and any(not n.saturated() for n in candidates)
            if self._waiting >= self._registry.lb.max_queue and not fetching:
                raise self._overloaded(facts, candidates)
            wait_s = self._registry.lb.selection_timeout_s
        return await self._wait(facts, tried, last_error, candidates, wait_s)

    async def _wait(
        self,
        facts: RequestFacts,
        tried: set[str],
        last_error: LlmError | None,
        candidates: list[Node],
        wait_s: float,
    ) -> Node:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait_s
        waiter = _Waiter(facts, tried, loop.create_future())
        self._queue.append(waiter)
        self._waiting += 1
        self._metrics.queued.set(self._waiting)
        try:
            while True:
                remaining = give_up - loop.time()
                if remaining <= 0:
                    raise self._overloaded(facts, candidates)
                # Awaiting the future itself: cancelling this task cannot undo a hand-over
                # that already happened, and `_leave` passes such a slot on.
                recheck = loop.call_later(min(remaining, RECHECK_S), _look_again, waiter.woken)
                try:
                    handed = await waiter.woken
                finally:
                    recheck.cancel()
                if handed is not None:
                    waiter.gone = True
                    handed.reserved -= 1
                    self._metrics.selected(handed.name, self._registry.lb.strategy)
                    return handed
                waiter.woken = loop.create_future()
                candidates = self._candidates(facts, tried, last_error)
                node = self._choose(candidates, facts)
                if node is not None:
                    return node
        finally:
            self._leave(waiter)

    def _leave(self, waiter: _Waiter) -> None:
        self._waiting -= 1
        self._metrics.queued.set(self._waiting)
        if waiter.gone:
            return
        waiter.gone = True
        woken = waiter.woken
        if woken.done() and not woken.cancelled() and (node := woken.result()) is not None:
            # Handed a slot but leaving (cancelled, or found room elsewhere): pass it on.
            node.reserved -= 1
            if self._registry.holds(node):
                self.slot_freed(node)
            else:
                self._registry.close_retired()
        elif not woken.done():
            woken.cancel()

    def slot_freed(self, node: Node) -> None:
        """Hand the node's free slot to the first waiter that can use it."""
        queue = self._queue
        while queue and queue[0].gone:
            queue.popleft()
        if not queue or not self._registry.holds(node) or not self._has_room(node):
            return
        if node.draining or not node.usable(self._now()):
            return
        for waiter in queue:
            if not waiter.gone and not waiter.woken.done() and waiter.can_use(node):
                node.reserved += 1
                waiter.woken.set_result(node)
                return

    def fleet_changed(self) -> None:
        """Wake every waiter to look again: room may have opened anywhere."""
        for waiter in self._queue:
            if not waiter.gone and not waiter.woken.done():
                waiter.woken.set_result(None)

    # --- filters and the strategy ---------------------------------------------------

    def _candidates(
        self, facts: RequestFacts, tried: set[str], last_error: LlmError | None
    ) -> list[Node]:
        fresh = [node for node in self._eligible(facts) if node.name not in tried]
        if not fresh:
            raise last_error or UpstreamUnavailableError(
                f"no node serving {facts.model!r} is available"
            )
        return fresh

    def _eligible(self, facts: RequestFacts) -> list[Node]:
        """Nodes that serve the model, fit the prompt and are up (or all of them, in panic)."""
        now = self._now()
        serving = [
            node
            for node in self._registry.nodes.values()
            if not node.draining and facts.model in node.served
        ]
        if not serving:
            raise UpstreamUnavailableError(f"no node serves {facts.model!r} at the moment")
        serving = capable(serving, facts.model, facts.needs)
        fitting = [node for node in serving if _fits(node, facts)]
        if not fitting:
            largest = max(node.served[facts.model].context_length or 0 for node in serving)
            lb = self._registry.lb
            # OpenAI's wording, which client libraries' context-window fallbacks look for.
            raise ContextLengthExceededError(
                f"This model's maximum context length is {largest} tokens. However, your "
                f"messages resulted in about {facts.prompt_tokens} tokens (estimated at "
                f"{lb.chars_per_token:g} characters a token). Please reduce the length "
                f"of the messages.",
                param="messages",
            )
        usable = [node for node in fitting if node.usable(now)]
        # Panic mode (as Envoy): when every node is down, trying them beats refusing.
        return usable or fitting

    async def _count(self, facts: RequestFacts, request: Prompted) -> RequestFacts | None:
        serving = [node for node in self._registry.nodes.values() if facts.model in node.served]
        largest = max(serving, key=lambda node: node.served[facts.model].context_length or 0)
        text = (
            "\n".join(request.inputs())
            if isinstance(request, EmbeddingRequest)
            else request.prompt_text()
        )
        name = largest.served[facts.model].upstream_name
        with contextlib.suppress(LlmError):  # else the estimate stands
            if (tokens := await largest.client.count_tokens(name, text)) is not None:
                needed = facts.needed_tokens + tokens - facts.prompt_tokens
                return dataclasses.replace(facts, prompt_tokens=tokens, needed_tokens=needed)
        return None

    def _choose(self, candidates: list[Node], facts: RequestFacts) -> Node | None:
        room = [node for node in candidates if self._has_room(node)]
        if not room:
            return None
        node = self._registry.chooser.choose(room, facts)
        self._metrics.selected(node.name, self._registry.lb.strategy)
        return node

    def _has_room(self, node: Node) -> bool:
        if node.saturated():
            return False
        return self._shared is None or self._shared.has_room(node)

    def _overloaded(self, facts: RequestFacts, nodes: list[Node]) -> OverloadedError:
        self._metrics.overloaded.inc()
        # Roughly when the quickest node starts answering again.
        quickest = min((node.ttft.value_ms or 1000.0) for node in nodes) / 1000
        return OverloadedError(
            f"every node serving {facts.model!r} is busy; try again shortly",
            retry_after=float(min(max(math.ceil(quickest), 1), 60)),
        )


def _look_again(woken: asyncio.Future[Node | None]) -> None:
    if not woken.done():
        woken.set_result(None)


def _fits(node: Node, facts: RequestFacts) -> bool:
    """The servers' own rule (vLLM 0.32, llama.cpp): only a prompt that fills the context
    alone is refused; one whose max_tokens overruns it is served and cut at the context
    (finish_reason "length"), so the balancer refuses no more than the node would."""
    context = node.served[facts.model].context_length
    return context is None or facts.prompt_tokens < context
