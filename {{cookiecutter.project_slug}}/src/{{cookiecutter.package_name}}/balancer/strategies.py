"""The strategies: each picks one node among candidates that already passed the filters.

Every strategy honours node weights and breaks ties at random, so equal nodes
share work instead of the first one taking it all; and every one gives a node not
measured, or measured long ago, a trial (the latency-based ones in `_with_trials`).
"""

from __future__ import annotations

import abc
import bisect
import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..config import Capability, LoadBalancerSettings, Strategy
from .node import Node


@dataclass(frozen=True)
class RequestFacts:
    """What a strategy may know of the request."""

    model: str
    needed_tokens: int
    prefix: str
    # The prompt alone (estimated): what vLLM and llama.cpp check against the context.
    prompt_tokens: int = 0
    needs: tuple[Capability, ...] = ("chat",)  # the operation first, then tools or vision


class Chooser(abc.ABC):
    # An estimate this many latency_decay_s older than the latest one here is stale.
    stale_decays = 10.0

    def __init__(self, lb: LoadBalancerSettings, rng: random.Random) -> None:
        self.lb = lb
        self.rng = rng

    @abc.abstractmethod
    def choose(self, candidates: Sequence[Node], facts: RequestFacts) -> Node:
        """Pick one of `candidates` (never empty)."""

    def nodes_changed(self, nodes: Sequence[Node]) -> None:  # noqa: B027 - optional hook
        """The registry changed; strategies with per-node state rebuild it."""

    def _with_trials(
        self, candidates: Sequence[Node], estimate: Callable[[Node], float | None]
    ) -> Callable[[Node], float]:
        """`estimate`; without a fresh one, the best fresh one while idle (a trial, as Envoy and
        Linkerd give new endpoints), and while its trial runs its last, or the worst here."""
        horizon = max(node.latency.updated_at for node in candidates)
        horizon -= self.stale_decays * self.lb.latency_decay_s
        fresh = {
            node.name: value
            for node in candidates
            if (value := estimate(node)) is not None and node.latency.updated_at >= horizon
        }
        known = list(fresh.values()) or [self.lb.default_latency_ms]

        def cost(node: Node) -> float:
            if node.name in fresh or not node.in_flight:
                return fresh.get(node.name, min(known))
            last = estimate(node)
            return max(known) if last is None else last

        return cost

    def _lowest(self, candidates: Sequence[Node], key: Callable[[Node], float]) -> Node:
        best = min(key(node) for node in candidates)
        return self.rng.choice([node for node in candidates if key(node) == best])


class RoundRobin(Chooser):
    """Smooth weighted round robin (nginx): exact weight ratios, maximally interleaved."""

    def __init__(self, lb: LoadBalancerSettings, rng: random.Random) -> None:
        super().__init__(lb, rng)
        self._current: dict[str, float] = {}

    def choose(self, candidates: Sequence[Node], facts: RequestFacts) -> Node:
        total = 0.0
        for node in candidates:
            self._current[node.name] = self._current.get(node.name, 0.0) + node.weight
            total += node.weight
        best = max(candidates, key=lambda node: self._current[node.name])
        self._current[best.name] -= total
        return best

    def nodes_changed(self, nodes: Sequence[Node]) -> None:
        names = {node.name for node in nodes}
        self._current = {name: value for name, value in self._current.items() if name in names}


class LeastLoaded(Chooser):
    """Fewest requests on the node per unit of weight."""

    def choose(self, candidates: Sequence[Node], facts: RequestFacts) -> Node:
        return self._lowest(candidates, lambda node: (node.load() + 1) / node.weight)


class LatencyBased(Chooser):
    """Lowest peak-EWMA latency per unit of weight (failures count with a penalty)."""

    def choose(self, candidates: Sequence[Node], facts: RequestFacts) -> Node:
        latency = self._with_trials(
            candidates, lambda node: node.latency.value_ms and node.latency.value_ms / node.weight
        )
        return self._lowest(candidates, latency)


class CapabilityBased(Chooser):
    """Model and context fit against load: a loaded model saves a cold start, and the
    best context fit keeps long-context nodes free for long prompts."""

    def choose(self, candidates: Sequence[Node], facts: RequestFacts) -> Node:
        return self._lowest(candidates, lambda node: -self.score(node, facts))

    @staticmethod
    def score(node: Node, facts: RequestFacts) -> float:
        free = max(0.0, 1.0 - node.load() / node.max_concurrency)
        score = node.weight * free
        served = node.served.get(facts.model)
        if served is not None and served.loaded:
            score += 0.5
        if served is not None and served.context_length:
            score += 0.25 * min(1.0, facts.needed_tokens / served.context_length)
        return score


class PowerOfTwo(Chooser):
    """Two candidates drawn by weight; the lower expected time to answer wins.

    A batching server runs up to its batch side by side, so the load term grows to
    2 at `max_concurrency` instead of Linkerd's (load + 1), which is right for a
    server running one request at a time and makes a fast multi-slot node with a
    few requests running look slower than an idle node several times slower.
    Weight sets the draw odds only: the cost is a time, and dividing it by a weight
    that stands for capacity would count capacity twice.
    """

    def choose(self, candidates: Sequence[Node], facts: RequestFacts) -> Node:
        if len(candidates) == 1:
            return candidates[0]
        first = self.rng.choices(candidates, weights=[node.weight for node in candidates])[0]
        rest = [node for node in candidates if node is not first]
        second = self.rng.choices(rest, weights=[node.weight for node in rest])[0]
        service = self._with_trials(candidates, Node.service_ms)
        return self._lowest(
            [first, second],
            lambda node: (
                service(node)
                * (1 + node.load() / node.max_concurrency)
                * node.attempts_per_success()
            ),
        )


class PrefixAffinity(Chooser):
    """Consistent hashing of the prompt prefix with bounded loads (Mirrokni et al.).

    A node may hold at most ceil((1 + epsilon) x its weighted share of the
    in-flight requests, this one included); a request whose home node is at that
    bound walks the ring to the next node with room.
    """

    points_per_weight = 64

    def __init__(self, lb: LoadBalancerSettings, rng: random.Random) -> None:
        super().__init__(lb, rng)
        self._ring: list[tuple[int, str]] = []
        self._keys: list[int] = []

    def nodes_changed(self, nodes: Sequence[Node]) -> None:
        ring = [
            (_hash(f"{node.name}#{index}"), node.name)
            for node in nodes
            for index in range(max(1, round(self.points_per_weight * node.weight)))
        ]
        ring.sort()
        self._ring = ring
        self._keys = [point for point, _ in ring]

    def choose(self, candidates: Sequence[Node], facts: RequestFacts) -> Node:
        by_name = {node.name: node for node in candidates}
        total = sum(node.in_flight for node in candidates) + 1
        weights = sum(node.weight for node in candidates)
        start = bisect.bisect(self._keys, _hash(facts.prefix))
        seen: set[str] = set()
        for offset in range(len(self._ring)):
            name = self._ring[(start + offset) % len(self._ring)][1]
            node = by_name.get(name)
            if node is None or name in seen:
                continue
            seen.add(name)
            bound = math.ceil((1 + self.lb.prefix_epsilon) * total * node.weight / weights)
            if node.in_flight + 1 <= bound:
                return node
        # Only reached when the ring misses a candidate (added since the last rebuild).
        return self._lowest(candidates, lambda node: node.in_flight / node.weight)


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


STRATEGIES: dict[Strategy, type[Chooser]] = {
    "round_robin": RoundRobin,
    "least_loaded": LeastLoaded,
    "capability_based": CapabilityBased,
    "latency_based": LatencyBased,
    "power_of_two": PowerOfTwo,
    "prefix_affinity": PrefixAffinity,
}


def create_chooser(lb: LoadBalancerSettings, rng: random.Random) -> Chooser:
    return STRATEGIES[lb.strategy](lb, rng)
