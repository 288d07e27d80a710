"""Balancing requests across nodes: registry, admission, accounting, strategies, health."""

from .balancer import Balancer
from .registry import ClientFactory
from .shared import SharedState
from .state import ListedModel, NodeState

__all__ = ["Balancer", "ClientFactory", "ListedModel", "NodeState", "SharedState"]
