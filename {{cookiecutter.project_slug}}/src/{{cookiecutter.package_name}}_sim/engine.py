"""The simulated engine: admission, load figures, faults, and deterministic generation.

Every dialect shares one `Simulator`; the dialect modules only shape its work
into each server's wire format.  Counts are the simulator's true state, so the
load endpoints and the control surface never disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import string
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from .config import SimConfig

Fault = Literal["error", "hang", "drop"]
PieceKind = Literal["reasoning", "content", "tool"]
FinishReason = Literal["stop", "length", "tool_calls"]

WORDS = [
    *("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven"),
    *("bright", "stars", "watch", "quiet", "rivers", "carry", "small", "boats", "past"),
    *("green", "hills", "toward", "distant", "towns"),
]
# Words of two, three and four UTF-8 bytes per character, for split_utf8.
UTF8_WORDS = ["café", "naïve", "日本", "語", "🚀", "über", "ñandú", "€5"]


class DroppedConnection(Exception):
    """Raised inside a handler to close the client's connection without an answer."""


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: one token per whitespace-separated word."""
    return len(text.split())


@dataclass
class Piece:
    kind: PieceKind
    text: str


@dataclass
class ToolCallPlan:
    """A call to one tool; `pieces` join into the arguments' JSON text."""

    id: str
    name: str
    arguments: dict[str, Any]
    pieces: list[str]

    @property
    def arguments_json(self) -> str:
        return "".join(self.pieces)


@dataclass
class Plan:
    """What one request will produce, decided before the first token."""

    reasoning: list[str]
    content: list[str]
    finish_reason: FinishReason
    stopped_by: str | None = None
    tool_call: ToolCallPlan | None = None

    @property
    def completion_tokens(self) -> int:
        tool_tokens = len(self.tool_call.pieces) if self.tool_call else 0
        return len(self.reasoning) + len(self.content) + tool_tokens

    @property
    def text(self) -> str:
        return "".join(self.content)

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)


@dataclass(eq=False)
class Slot:
    """A request holding one of the engine's concurrency slots."""

    tokens: int
    generated: int = 0
    started: float = field(default_factory=time.monotonic)


def _words(rng: random.Random, count: int, utf8: bool) -> list[str]:
    vocabulary = WORDS + UTF8_WORDS if utf8 else WORDS
    return [(" " if index else "") + rng.choice(vocabulary) for index in range(count)]


def tool_arguments(schema: dict[str, Any] | None) -> dict[str, Any]:
    """Arguments that satisfy a tool's JSON schema: one plain value per property."""
    properties = (schema or {}).get("properties") or {}
    return {name: _value_for(spec) for name, spec in properties.items() if isinstance(spec, dict)}


def _value_for(spec: dict[str, Any]) -> Any:
    if spec.get("enum"):
        return spec["enum"][0]
    kind = spec.get("type")
    if isinstance(kind, list):
        kind = next((item for item in kind if item != "null"), "string")
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return tool_arguments(spec)
    return "sim"


class Simulator:
    """One simulated server's state, shared by its routes and by tests (`app.state.sim`)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config.model_copy()
        self._fault_rng = random.Random(config.seed)
        self._slots: asyncio.Semaphore | None = None
        self._killed: asyncio.Event | None = None
        self._started = time.monotonic()
        self._holders: set[Slot] = set()
        self.running = 0
        self.waiting = 0
        self.requests_total = 0
        self.completed_total = 0
        self.cancelled_total = 0
        self.rejected_total = 0
        self.errors_total = 0
        self.hung_total = 0
        self.dropped_total = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0

    # --- control surface -------------------------------------------------------

    def set_faults(
        self,
        *,
        error_rate: float | None = None,
        hang_rate: float | None = None,
        drop_rate: float | None = None,
    ) -> None:
        """Change fault rates at run time (validated like the config)."""
        if error_rate is not None:
            self.config.error_rate = error_rate
        if hang_rate is not None:
            self.config.hang_rate = hang_rate
        if drop_rate is not None:
            self.config.drop_rate = drop_rate

    def restart_loading(self) -> None:
        """Start the loading period again, as a freshly started server would."""
        self._started = time.monotonic()

    def kill(self) -> None:
        """Drop every request in flight; the server handle closes the socket."""
        self._kill_event().set()

    def revive(self) -> None:
        self._kill_event().clear()
        self.restart_loading()

    @property
    def killed(self) -> bool:
        return self._killed is not None and self._killed.is_set()

    def stats(self) -> dict[str, int]:
        """Counters for tests and the CLI."""
        return {
            "running": self.running,
            "waiting": self.waiting,
            "requests_total": self.requests_total,
            "completed_total": self.completed_total,
            "cancelled_total": self.cancelled_total,
            "rejected_total": self.rejected_total,
            "errors_total": self.errors_total,
            "hung_total": self.hung_total,
            "dropped_total": self.dropped_total,
            "prompt_tokens_total": self.prompt_tokens_total,
            "generation_tokens_total": self.generation_tokens_total,
        }

    # --- state the load endpoints report -----------------------------------------

    @property
    def ready(self) -> bool:
        return time.monotonic() - self._started >= self.config.loading_s

    def kv_cache_usage(self) -> float:
        """Tokens held by running requests over the engine's token capacity."""
        capacity = self.config.max_concurrency * self.config.context_length
        return min(1.0, sum(slot.tokens + slot.generated for slot in self._holders) / capacity)

    def busy_slots(self) -> list[Slot | None]:
        """One entry per slot: the request in it, or None when idle."""
        holders: list[Slot | None] = list(self._holders)
        return holders + [None] * (self.config.max_concurrency - len(holders))

    # --- admission ---------------------------------------------------------------

    def draw_fault(self) -> Fault | None:
        """Decide this request's fault, if any, from the seeded fault stream."""
        draw = self._fault_rng.random()
        for fault, rate in (
            ("error", self.config.error_rate),
            ("hang", self.config.hang_rate),
            ("drop", self.config.drop_rate),
        ):
            if draw < rate:
                return fault  # type: ignore[return-value]
            draw -= rate
        return None

    def full(self) -> bool:
        """True when a new request would exceed concurrency plus queue."""
        limit = self.config.max_queue
        if limit is None:
            return False
        return self.running + self.waiting >= self.config.max_concurrency + limit

    @asynccontextmanager
    async def slot(self, prompt_tokens: int) -> AsyncIterator[Slot]:
        """Wait in the queue for a slot (counted as waiting), then hold it (running)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_concurrency)
        self.waiting += 1
        try:
            if self._slots.locked():
                await self._until_killed(asyncio.ensure_future(self._slots.acquire()), self._slots)
            else:
                await self._slots.acquire()  # free slot: no suspension, no extra tasks
        finally:
            self.waiting -= 1
        holder = Slot(tokens=prompt_tokens)
        self.running += 1
        self._holders.add(holder)
        self.prompt_tokens_total += prompt_tokens
        try:
            yield holder
        finally:
            self.running -= 1
            self._holders.discard(holder)
            self._slots.release()

    async def hang(self) -> None:
        """Never answer; a kill drops the connection."""
        self.hung_total += 1
        await self._until_killed(asyncio.ensure_future(asyncio.Event().wait()))

    # --- generation --------------------------------------------------------------

    def plan(
        self,
        *,
        prompt: str,
        limit: int | None,
        stop: list[str],
        seed: int | None = None,
        reasoning: bool = False,
        tool: tuple[str, dict[str, Any]] | None = None,
    ) -> Plan:
        """The deterministic output for a prompt: same prompt and seed, same words.

        With `tool` (name, JSON schema) the answer is a call to that tool, with
        arguments built from the schema, instead of text.
        """
        rng = random.Random(zlib.crc32(f"{self.config.seed}|{seed}|{prompt}".encode()))
        budget = limit if limit is not None else math.inf
        thinking_count = min(self.config.reasoning_tokens if reasoning else 0, budget)
        thinking = _words(rng, int(thinking_count), False)
        budget -= len(thinking)
        if tool is not None:
            return _tool_plan(thinking, tool, budget, rng)
        natural = self.config.output_tokens
        count = int(min(natural, budget))
        words = _words(rng, count, self.config.split_utf8)
        finish: FinishReason = "length" if count < natural else "stop"
        plan = Plan(reasoning=thinking, content=words, finish_reason=finish)
        return _apply_stop(plan, stop) if stop else plan

    async def pieces(self, plan: Plan, slot: Slot, *, drop: bool = False) -> AsyncIterator[Piece]:
        """The plan's tokens at the configured pace; a drop fault ends it half-way."""
        if self.config.ttft_s > 0:
            # Long enough to matter: wake up at once if the node is killed meanwhile.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kill_event().wait(), self.config.ttft_s)
        if self.killed:
            raise DroppedConnection
        pieces = [Piece("reasoning", text) for text in plan.reasoning]
        pieces += [Piece("content", text) for text in plan.content]
        if plan.tool_call is not None:
            pieces += [Piece("tool", text) for text in plan.tool_call.pieces]
        drop_at = len(pieces) // 2 if drop else -1
        rate = self.config.tokens_per_s
        start = time.monotonic()
        for index, piece in enumerate(pieces):
            if index == drop_at:
                self.dropped_total += 1
                raise DroppedConnection
            if rate and index:
                await self.pause(start + index / rate - time.monotonic())
            elif self.killed:
                raise DroppedConnection
            slot.generated += 1
            self.generation_tokens_total += 1
            yield piece
        if drop:
            self.dropped_total += 1
            raise DroppedConnection

    async def pause(self, seconds: float) -> None:
        """Sleep between tokens (short), then give up if the server was killed meanwhile."""
        if seconds > 0:
            await asyncio.sleep(seconds)
        if self.killed:
            raise DroppedConnection

    def embedding(self, text: str) -> list[float]:
        """A deterministic unit vector for a text."""
        rng = random.Random(zlib.crc32(f"{self.config.seed}|{text}".encode()))
        vector = [rng.gauss(0.0, 1.0) for _ in range(self.config.embedding_dim)]
        norm = math.sqrt(sum(value * value for value in vector)) or 1.0
        return [value / norm for value in vector]

    # --- internals ---------------------------------------------------------------

    def _kill_event(self) -> asyncio.Event:
        if self._killed is None:
            self._killed = asyncio.Event()
        return self._killed

    async def _until_killed(
        self, work: asyncio.Future[Any], acquired: asyncio.Semaphore | None = None
    ) -> None:
        """Await `work`, giving up with a dropped connection when the server is killed.

        If we give up (kill or client gone) after `work` acquired `acquired`, the
        slot is handed back so no permit leaks.
        """
        killed = asyncio.ensure_future(self._kill_event().wait())
        try:
            await asyncio.wait({work, killed}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                raise DroppedConnection
            work.result()
        except BaseException:
            if work.done() and not work.cancelled() and acquired is not None:
                acquired.release()
            work.cancel()
            raise
        finally:
            killed.cancel()


def _tool_plan(
    thinking: list[str], tool: tuple[str, dict[str, Any]], budget: float, rng: random.Random
) -> Plan:
    name, schema = tool
    arguments = tool_arguments(schema)
    pieces = re.findall(r"\S+\s*", json.dumps(arguments))
    finish: FinishReason = "tool_calls"
    if len(pieces) > budget:
        pieces, finish = pieces[: int(budget)], "length"
    call_id = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(24))
    call = ToolCallPlan(id=call_id, name=name, arguments=arguments, pieces=pieces)
    return Plan(reasoning=thinking, content=[], finish_reason=finish, tool_call=call)


def _apply_stop(plan: Plan, stop: list[str]) -> Plan:
    """Cut the content at the first stop sequence; tokens up to it count as generated."""
    text = plan.text
    found = [(text.find(sequence), sequence) for sequence in stop if sequence and sequence in text]
    if not found:
        return plan
    cut, sequence = min(found)
    content: list[str] = []
    length = 0
    for word in plan.content:
        if length + len(word) >= cut:
            content.append(word[: cut - length])
            break
        content.append(word)
        length += len(word)
    return Plan(plan.reasoning, content, "stop", stopped_by=sequence)


def iter_utf8_split(data: bytes) -> Iterator[bytes]:
    """Split bytes inside the first multi-byte character, if there is one."""
    for index, byte in enumerate(data):
        if byte >= 0xC0:
            yield data[: index + 1]
            yield data[index + 1 :]
            return
    yield data
