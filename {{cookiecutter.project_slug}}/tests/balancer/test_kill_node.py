"""A node killed in the middle of a run, over real simulated servers and real clients:
every request still succeeds elsewhere, the node is ejected, and it comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from {{ cookiecutter.package_name }}.backends import create_client
from {{ cookiecutter.package_name }}.balancer import Balancer
from {{ cookiecutter.package_name }}.config import ModelSettings, NodeSettings, Settings
from {{ cookiecutter.package_name }}_sim import SimHandle

from .fakes import MODEL, chat, lb_settings


async def test_killed_node_is_ejected_its_requests_retried_and_it_is_readmitted(
    sim_server: Callable[..., Awaitable[SimHandle]],
) -> None:
    handles = [
        await sim_server(dialect="openai", models=[MODEL], ttft_s=0.005, output_tokens=4)
        for _ in range(3)
    ]
    nodes = [
        NodeSettings(name=f"node-{index}", url=handle.url, type="openai_compatible", models=[MODEL])
        for index, handle in enumerate(handles)
    ]
    lb = lb_settings(
        strategy="round_robin",  # keeps sending the dead node its share until it is ejected
        health_check_interval_s=0.1,
        health_check_timeout_s=1,
        eject_consecutive_failures=2,
        ejection_base_s=0.3,
        max_queue=64,  # five waves of six at once outnumber the slots: they queue (opt-in)
        selection_timeout_s=5,
    )
    settings = Settings(nodes=nodes, models=[ModelSettings(id=MODEL)], load_balancer=lb)
    registry = CollectorRegistry()
    balancer = Balancer(settings, metrics_registry=registry)
    for node in nodes:
        balancer.add_node(node, create_client(node, lb))
    await balancer.start()
    try:
        victim = handles[1]

        async def one() -> str | None:
            response = await balancer.chat_completion(chat())
            return response.choices[0].message.content

        # Six at a time; the victim dies after the first wave, with requests in flight.
        answers = await asyncio.gather(*(one() for _ in range(6)))
        waves = [asyncio.gather(*(one() for _ in range(6))) for _ in range(5)]
        await asyncio.sleep(0)
        await victim.stop()
        for wave in waves:
            answers.extend(await wave)
        assert len(answers) == 36
        assert all(answers)

        ejections = registry.get_sample_value("llm_node_ejections_total", {"node": "node-1"})
        assert ejections is not None and ejections >= 1
        state = {node.name: node for node in balancer.node_states()}["node-1"]
        assert state.state in {"ejected", "unhealthy", "half_open"}
        served_before = state.requests_total - state.errors_total

        await victim.start()
        # Once it passes a health check after its backoff, it takes its share again.
        for _ in range(100):
            await asyncio.gather(*(one() for _ in range(3)))
            state = {node.name: node for node in balancer.node_states()}["node-1"]
            if (
                state.state == "healthy"
                and state.requests_total - state.errors_total > served_before
            ):
                break
            await asyncio.sleep(0.05)
        assert state.state == "healthy"
        assert state.requests_total - state.errors_total > served_before
    finally:
        await balancer.aclose()
