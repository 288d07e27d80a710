"""The one object both entry points share.

The HTTP API and the Tangle job loop each hold the same `Context`: the
settings, the balancer with its node registry and connection pools, the
Prometheus registry, and the state shared with other replicas when there are
any (see `cluster`).  It opens and closes with the process's lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from .backends import create_client
from .balancer import Balancer
from .cluster import Fleet, open_fleet
from .config import Settings


@dataclass
class Context:
    balancer: Balancer
    metrics_registry: CollectorRegistry
    fleet: Fleet | None = None

    @property
    def settings(self) -> Settings:
        """The settings in force, as the balancer holds them: one object for every reader."""
        return self.balancer.settings

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[Context]:
        """Create a client per node, start health checks, and close it all on exit."""
        metrics_registry = CollectorRegistry()
        fleet = open_fleet(settings, metrics_registry)
        balancer = Balancer(settings, metrics_registry=metrics_registry, shared=fleet)
        for node in settings.nodes:
            balancer.add_node(node, create_client(node, settings.load_balancer))
        await balancer.start()
        try:
            if fleet is not None:
                await fleet.start(balancer.nodes, balancer.fleet_changed)
            yield cls(balancer=balancer, metrics_registry=metrics_registry, fleet=fleet)
        finally:
            if fleet is not None:
                await fleet.aclose()
            await balancer.aclose()

    def reload(self, settings: Settings) -> None:
        """Take re-read settings without a restart: nodes, weights and models change live.

        All or nothing: a ConfigError (saying why) leaves everything as it was.
        """
        self.balancer.apply_settings(settings, create_client)
