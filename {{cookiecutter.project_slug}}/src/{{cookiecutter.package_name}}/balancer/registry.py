"""The node registry: which nodes exist, their clients, and reloading them atomically.

A reload is planned first: every client it needs is built and every node
settled before anything changes, so a reload that cannot be carried out is
refused whole (with the reason) and the fleet keeps running as it was.  The
swap itself has no await and cannot fail, so no request ever sees half a fleet.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import ConfigError, LoadBalancerSettings, NodeSettings, Settings
from ..llm.interfaces import StreamingLlmClient
from .metrics import BalancerMetrics
from .node import Node
from .state import ListedModel, NodeState, describe
from .strategies import Chooser, create_chooser

log = logging.getLogger(__name__)

ClientFactory = Callable[[NodeSettings, LoadBalancerSettings], StreamingLlmClient]


@dataclass
class ReloadPlan:
    """Everything a reload changes, built and checked before the swap."""

    settings: Settings
    chooser: Chooser
    built: dict[str, Node] = field(default_factory=dict)  # new nodes and rebuilt clients
    updated: dict[str, NodeSettings] = field(default_factory=dict)  # same client, new settings
    removed: list[str] = field(default_factory=list)


class Registry:
    """The live nodes, the settings they came from, and the strategy that picks among them."""

    def __init__(
        self,
        settings: Settings,
        metrics: BalancerMetrics,
        rng: random.Random,
        chooser: Chooser | None,
        now: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.nodes: dict[str, Node] = {}
        self._metrics = metrics
        self._rng = rng
        self._fixed_chooser = chooser is not None
        self.chooser = chooser or create_chooser(settings.load_balancer, rng)
        self._now = now
        self._retired: list[Node] = []
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def lb(self) -> LoadBalancerSettings:
        return self.settings.load_balancer

    def holds(self, node: Node) -> bool:
        return self.nodes.get(node.name) is node

    # --- one node at a time ------------------------------------------------------

    def add(self, node: NodeSettings, client: StreamingLlmClient) -> Node:
        if node.name in self.nodes:
            raise ConfigError(f"a node named {node.name!r} is already registered")
        entry = Node(node, client, self.lb)
        entry.refresh_served(self.listed_context())
        self.nodes[node.name] = entry
        self.chooser.nodes_changed(list(self.nodes.values()))
        self._metrics.publish(entry, self._now())
        return entry

    def remove(self, name: str) -> None:
        node = self._get(name)
        del self.nodes[name]
        self.chooser.nodes_changed(list(self.nodes.values()))
        self._retire(node)

    def drain(self, name: str) -> None:
        node = self._get(name)
        node.draining = True
        self._metrics.publish(node, self._now())

    def _get(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise ConfigError(f"no node named {name!r}") from None

    # --- reload --------------------------------------------------------------------

    def plan(self, settings: Settings, client_factory: ClientFactory) -> ReloadPlan:
        """Build every client the new settings need; on any failure, close what was built
        and raise a ConfigError that says which node and why.  Nothing live changes."""
        lb = settings.load_balancer
        keep_chooser = self._fixed_chooser or lb.strategy == self.lb.strategy
        plan = ReloadPlan(settings, self.chooser if keep_chooser else create_chooser(lb, self._rng))
        wanted = {node.name: node for node in settings.nodes}
        plan.removed = [name for name in self.nodes if name not in wanted]
        try:
            for name, node_settings in wanted.items():
                current = self.nodes.get(name)
                if current is not None and _client_inputs(
                    current.settings, self.lb
                ) == _client_inputs(node_settings, lb):
                    plan.updated[name] = node_settings
                    continue
                try:
                    client = client_factory(node_settings, lb)
                except ConfigError:
                    raise
                except Exception as error:
                    raise ConfigError(
                        f"node {name!r}: its client could not be created "
                        f"({type(error).__name__}: {error})"
                    ) from None
                plan.built[name] = Node(node_settings, client, lb)
        except ConfigError as error:
            self._close_later([node.client for node in plan.built.values()])
            raise ConfigError(f"reload refused, nothing changed: {error}") from None
        return plan

    def swap(self, plan: ReloadPlan) -> list[Node]:
        """Apply a plan in one step (no await, nothing that can fail); return the new nodes.

        A kept node keeps its load, latency and breaker state, and a drain stays (it
        is an operator's decision, not configuration); a rebuilt one starts afresh
        while the old client finishes its requests.
        """
        self.settings = plan.settings
        self.chooser = plan.chooser
        self.chooser.lb = plan.settings.load_balancer
        for name in plan.removed:
            self._retire(self.nodes.pop(name))
        for name, node_settings in plan.updated.items():
            node = self.nodes[name]
            node.settings = node_settings
            node.lb = plan.settings.load_balancer
        for name, node in plan.built.items():
            old = self.nodes.pop(name, None)
            if old is not None:
                node.draining = old.draining
                self._retire(old)
            self.nodes[name] = node
        # Rebuilt nodes go to the end; keep the configured order for listings.
        self.nodes = {node.name: self.nodes[node.name] for node in plan.settings.nodes}
        listed = self.listed_context()
        now = self._now()
        for node in self.nodes.values():
            node.refresh_served(listed)
            self._metrics.publish(node, now)
        self.chooser.nodes_changed(list(self.nodes.values()))
        return list(plan.built.values())

    def listed_context(self) -> dict[str, int | None]:
        return {model.id: model.context_length for model in self.settings.models}

    # --- retiring clients ---------------------------------------------------------

    def _retire(self, node: Node) -> None:
        """Stop routing to the node; its client closes once its requests finish."""
        self._metrics.forget(node.name)
        self._retired.append(node)
        self.close_retired()

    def close_retired(self) -> None:
        idle = [node for node in self._retired if node.in_flight == 0 and node.reserved == 0]
        for node in idle:
            self._retired.remove(node)
        self._close_later([node.client for node in idle])

    def _close_later(self, clients: list[StreamingLlmClient]) -> None:
        if not clients:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # No loop yet (settings applied before start): nothing is open to close.
            return
        for client in clients:
            task = loop.create_task(client.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        nodes = [*self.nodes.values(), *self._retired]
        self.nodes.clear()
        self._retired.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)
        await asyncio.gather(*(node.client.aclose() for node in nodes), return_exceptions=True)

    # --- descriptions ------------------------------------------------------------

    def listed_models(self) -> list[ListedModel]:
        """Per listed model: its settings, the nodes serving it, their smallest context, and
        whether any of them takes traffic now."""
        now = self._now()
        listed = []
        for model in self.settings.models:
            nodes = [node for node in self.nodes.values() if model.id in node.served]
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
        now = self._now()
        return [describe(node, now) for node in self.nodes.values()]


def _client_inputs(node: NodeSettings, lb: LoadBalancerSettings) -> tuple[object, ...]:
    """What a client is built from: a change in any of it needs a new client (a pool
    sized for the old max_concurrency refuses connections the balancer now allows)."""
    return (
        node.url,
        node.type,
        node.api_key,
        node.max_concurrency,
        lb.connect_timeout_s,
        lb.read_timeout_s,
        lb.health_check_timeout_s,
        lb.http_transport,
        lb.latency_decay_s,
    )
