"""State that several balancer processes of one fleet share, behind a small interface.

One process needs none of it: its own counts are the whole truth and the
balancer runs without a backend.  Replicas in front of the same nodes plug a
backend in (`Balancer(shared=...)`) so `max_concurrency` and ejections hold for
the fleet, not per replica.
"""

from __future__ import annotations

import abc

from .node import Node


class SharedState(abc.ABC):
    """What the balancer tells and asks its peers.

    Every method is called on the request path and must answer from the backend's
    own view without I/O; the backend syncs with its peers in the background, and
    when a peer's change may let a waiting request run (a slot freed elsewhere, a
    node readmitted) it calls `Balancer.fleet_changed()`.
    """

    @abc.abstractmethod
    def has_room(self, node: Node) -> bool:
        """False when requests other replicas run there fill the node."""

    @abc.abstractmethod
    def released(self, node: Node) -> None:
        """A request of ours on the node ended, whatever its outcome."""

    @abc.abstractmethod
    def ejected(self, node: Node) -> None:
        """Our outlier detection ejected the node."""
