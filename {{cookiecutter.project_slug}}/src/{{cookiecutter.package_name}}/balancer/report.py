"""`nodes`: ask every configured node once whether it serves, what, and how loaded it is."""

from __future__ import annotations

import asyncio
import json

from ..backends import create_client
from ..config import Settings, mask_url
from .balancer import Balancer
from .state import NodeState


async def check_nodes(settings: Settings) -> list[NodeState]:
    """One health check and discovery round over real clients, then close them."""
    balancer = Balancer(settings)
    try:
        for node in settings.nodes:
            balancer.add_node(node, create_client(node, settings.load_balancer))
        await balancer.refresh()
        return balancer.node_states()
    finally:
        await balancer.aclose()


def _figure(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_table(states: list[NodeState]) -> str:
    """A Markdown table: one row per node."""
    header = (
        "| node | type | url | reachable | models | running | waiting | kv cache | "
        "gauges age s | error |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for state in states:
        kv = state.server_kv_cache_usage
        lines.append(
            f"| {state.name} | {state.type} | {mask_url(state.url)} | "
            f"{'yes' if state.healthy else 'no'} | {', '.join(state.models) or '-'} | "
            f"{_figure(state.server_running)} | {_figure(state.server_waiting)} | "
            f"{'-' if kv is None else f'{kv:.0%}'} | {_figure(state.server_signals_age_s, 1)} | "
            f"{state.last_error or ''} |"
        )
    return "\n".join(lines)


def print_nodes(settings: Settings, *, as_json: bool) -> int:
    """Print each node's reachability, models and load; exit 1 when none is reachable."""
    states = asyncio.run(check_nodes(settings))
    if as_json:
        shown = [{**state.model_dump(mode="json"), "url": mask_url(state.url)} for state in states]
        print(json.dumps(shown, indent=2))
    else:
        print(render_table(states))
    return 0 if any(state.healthy for state in states) else 1
