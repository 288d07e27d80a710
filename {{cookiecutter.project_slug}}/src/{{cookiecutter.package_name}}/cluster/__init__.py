"""Past one process: replicas sharing node state through Redis, and one leader for `run`.

`Fleet` is the balancer's shared state (fleet-wide in-flight slots, ejections,
cooldowns, health); `Leadership` elects the one `run` replica that sends
transactions.  Both degrade rather than fail when Redis is away.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ..config import Settings
from .fleet import Fleet, connect
from .leader import Leadership, LeadershipLost

__all__ = ["Fleet", "Leadership", "LeadershipLost", "connect", "open_fleet"]


def open_fleet(settings: Settings, registry: CollectorRegistry) -> Fleet | None:
    """The fleet state these settings ask for: None for a process alone (no Redis, one
    replica), a local share for several replicas without Redis, else Redis."""
    cluster = settings.cluster
    if cluster.redis_url is None and cluster.replicas <= 1:
        return None
    redis = (
        connect(cluster.redis_url.get_secret_value(), cluster.redis_timeout_s)
        if cluster.redis_url is not None
        else None
    )
    return Fleet(
        cluster,
        redis=redis,
        registry=registry,
        health_interval_s=settings.load_balancer.health_check_interval_s,
    )
