"""Active health checks and model discovery, one schedule per node (README: "Balancing").

A node whose ejection backoff has ended is checked at once (the half-open probe).  The
loop must outlive anything a client or a callback raises: a monitor that stopped would
leave a node that dies later marked healthy.  A failure is logged when it first happens
(or changes) on a node, not on every round.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable

from ..backoff import pause
from ..config import LoadBalancerSettings
from ..llm.errors import LlmError
from .node import Breaker, Node

log = logging.getLogger(__name__)


class HealthMonitor:
    def __init__(
        self,
        lb: LoadBalancerSettings,
        nodes: Callable[[], Iterable[Node]],
        checked: Callable[[Node, str], None],
    ) -> None:
        self.lb = lb
        self._nodes = nodes
        self._checked = checked  # told the node and its state before the check
        self._wake = asyncio.Event()
        self._reported: dict[str, str] = {}  # node -> the unexpected failure last logged

    def wake(self) -> None:
        """Run a round now (a node was added)."""
        self._wake.set()

    def due_at(self, node: Node) -> float:
        if node.checked_at is None:
            return -math.inf
        due = node.checked_at + self.lb.health_check_interval_by_type.get(
            node.settings.type, self.lb.health_check_interval_s
        )
        if node.breaker is not Breaker.CLOSED and node.checked_at < node.ejected_until:
            due = min(due, node.ejected_until)
        return due

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(node) for node in list(self._nodes())))

    async def check(self, node: Node) -> None:
        """One health check, and discovery when due; never raises."""
        loop = asyncio.get_running_loop()
        before = node.state(loop.time())
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(self.lb.health_check_timeout_s):
                await node.client.check_health()
        except LlmError as error:
            node.health_failed(error.message, loop.time())
        except TimeoutError:
            node.health_failed(
                f"no answer to the health check in {self.lb.health_check_timeout_s:g} s",
                loop.time(),
            )
        except Exception as error:  # a client bug must not stop the monitor
            self._unexpected(node, "health check", error)
            node.health_failed(f"health check failed: {type(error).__name__}", loop.time())
        else:
            node.health_ok(loop.time())
            self._reported.pop(node.name, None)
        if node.healthy and (
            node.discovered_at is None
            or loop.time() - node.discovered_at >= self.lb.discovery_interval_s
        ):
            await self._discover(node)
        try:
            self._checked(node, before)
        except Exception as error:
            self._unexpected(node, "recording the health check", error)

    async def _discover(self, node: Node) -> None:
        loop = asyncio.get_running_loop()
        node.discovered_at = loop.time()
        try:
            async with asyncio.timeout(self.lb.health_check_timeout_s):
                node.discovered = await node.client.discover_models()
        except (LlmError, TimeoutError) as error:
            # Configured models still route; the next round asks again.
            log.info("node %s: model discovery failed (%s)", node.name, type(error).__name__)
        except Exception as error:
            self._unexpected(node, "model discovery", error)

    def _unexpected(self, node: Node, what: str, error: Exception) -> None:
        """Log a failure nobody foresaw once per node and kind, with its traceback."""
        key = f"{what}: {type(error).__name__}"
        if self._reported.get(node.name) != key:
            self._reported[node.name] = key
            log.error("node %s: %s failed unexpectedly", node.name, what, exc_info=error)

    async def run(self) -> None:
        """Check nodes as they fall due, until cancelled; nothing raised stops it."""
        loop = asyncio.get_running_loop()
        failing = False
        while True:
            try:
                upcoming = await self._round(loop)
                failing = False
            except Exception:
                if not failing:
                    log.exception("health check round failed; checking again next interval")
                failing = True
                upcoming = loop.time() + self.lb.health_check_interval_s
            await pause(self._wake, max(0.0, upcoming - loop.time()))

    async def _round(self, loop: asyncio.AbstractEventLoop) -> float:
        """Check the nodes that are due; return when the next one is."""
        now = loop.time()
        due = [node for node in self._nodes() if self.due_at(node) <= now]
        if due:
            # return_exceptions: one check that escapes its own handling must
            # neither stop the round nor leave the others unawaited.
            await asyncio.gather(*(self.check(node) for node in due), return_exceptions=True)
        self._wake.clear()
        return min(
            (self.due_at(node) for node in self._nodes()),
            default=loop.time() + self.lb.health_check_interval_s,
        )
