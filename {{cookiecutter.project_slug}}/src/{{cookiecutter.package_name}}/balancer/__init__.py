"""Balancing requests across nodes: registry, strategies, health, failover and metrics."""

from .balancer import Balancer, ClientFactory
from .state import ListedModel, NodeState

__all__ = ["Balancer", "ClientFactory", "ListedModel", "NodeState"]
