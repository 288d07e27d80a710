"""The node registry at run time, health checks and discovery, and what the balancer
reports: the model listing, node states and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from {{ cookiecutter.package_name }}.balancer import Balancer
from {{ cookiecutter.package_name }}.config import ConfigError, ModelSettings, NodeSettings, Settings
from {{ cookiecutter.package_name }}.llm.errors import UpstreamError
from {{ cookiecutter.package_name }}.llm.models import ModelInfo

from .fakes import MODEL, FakeClient, chat, lb_settings, node_settings, read_ago, settings


async def answered_by(instance: Balancer) -> str:
    content = (await instance.chat_completion(chat())).choices[0].message.content
    assert isinstance(content, str)
    return content


async def test_drained_node_finishes_its_requests_and_gets_no_new_ones() -> None:
    instance = Balancer(settings(strategy="round_robin"))
    a, b = FakeClient("a"), FakeClient("b")
    instance.add_node(node_settings("a"), a)
    instance.add_node(node_settings("b"), b)
    a.gate = asyncio.Event()
    held = asyncio.create_task(instance.chat_completion(chat()))  # round robin: a first
    await asyncio.sleep(0)
    instance.drain_node("a")
    assert {await answered_by(instance) for _ in range(4)} == {"b"}
    a.gate.set()
    assert (await held).choices[0].message.content == "a"
    assert {state.name: state.state for state in instance.node_states()}["a"] == "draining"


async def test_removed_node_is_closed_once_its_requests_finish() -> None:
    instance = Balancer(settings())
    a, b = FakeClient("a"), FakeClient("b")
    instance.add_node(node_settings("a"), a)
    instance.add_node(node_settings("b"), b)
    a.gate = asyncio.Event()
    instance.drain_node("b")
    held = asyncio.create_task(instance.chat_completion(chat()))
    await asyncio.sleep(0)
    instance.remove_node("a")
    assert not a.closed  # a request is still in flight there
    instance.add_node(node_settings("b2"), FakeClient("b2"))
    assert await answered_by(instance) == "b2"
    a.gate.set()
    await held
    await asyncio.sleep(0)
    assert a.closed
    assert [state.name for state in instance.node_states()] == ["b", "b2"]
    await instance.aclose()
    assert b.closed


async def test_registry_errors_name_the_node() -> None:
    instance = Balancer(settings())
    instance.add_node(node_settings("a"), FakeClient("a"))
    with pytest.raises(ConfigError, match="'a'"):
        instance.add_node(node_settings("a"), FakeClient("a"))
    with pytest.raises(ConfigError, match="'zz'"):
        instance.remove_node("zz")
    with pytest.raises(ConfigError, match="'zz'"):
        instance.drain_node("zz")


async def test_apply_settings_adds_removes_replaces_and_updates_in_place() -> None:
    first = Settings(
        nodes=[
            node_settings("keep"),
            node_settings("gone"),
            node_settings("moved"),
            node_settings("resized", max_concurrency=2),
        ],
        models=[ModelSettings(id=MODEL)],
        load_balancer=lb_settings(strategy="round_robin"),
    )
    created: dict[str, FakeClient] = {}

    def factory(node: NodeSettings, _lb: object) -> FakeClient:
        created[node.name] = FakeClient(node.name)
        return created[node.name]

    instance = Balancer(first)
    for node in first.nodes:
        instance.add_node(node, factory(node, first.load_balancer))
    originals = dict(created)
    second = Settings(
        nodes=[
            node_settings("keep", weight=5),
            node_settings("moved", url="http://127.0.0.1:10/moved"),
            node_settings("resized", max_concurrency=12),
            node_settings("new"),
        ],
        models=[ModelSettings(id=MODEL)],
        load_balancer=lb_settings(strategy="least_loaded"),
    )
    instance.apply_settings(second, factory)
    states = {state.name: state for state in instance.node_states()}
    assert list(states) == ["keep", "moved", "resized", "new"]  # the configured order
    assert states["keep"].weight == 5
    assert states["moved"].url == "http://127.0.0.1:10/moved"
    assert states["resized"].max_concurrency == 12
    assert created["keep"] is originals["keep"]  # unchanged connection: same client
    # A new URL, or a pool sized for another max_concurrency: a new client.
    assert created["moved"] is not originals["moved"]
    assert created["resized"] is not originals["resized"]
    await asyncio.sleep(0)
    assert originals["gone"].closed and originals["moved"].closed and originals["resized"].closed
    assert not originals["keep"].closed
    assert instance.lb.strategy == "least_loaded"
    assert await answered_by(instance) in {"keep", "moved", "resized", "new"}


async def test_start_checks_health_discovers_models_and_keeps_checking() -> None:
    instance = Balancer(settings(models=(MODEL, "found"), health_check_interval_s=0.01))
    up, down = FakeClient("up"), FakeClient("down", up=False)
    # "found" is not configured on the node: discovery adds it, with its context length.
    up.models = [ModelInfo(id="found", context_length=2048), ModelInfo(id="unlisted")]
    instance.add_node(node_settings("up"), up)
    instance.add_node(node_settings("down"), down)
    await instance.start()
    try:
        states = {state.name: state for state in instance.node_states()}
        assert states["up"].healthy and states["up"].models == ["found", MODEL]
        assert not states["down"].healthy and states["down"].state == "unhealthy"
        assert states["down"].last_error == "down is down"
        checks = up.health_checks
        await asyncio.sleep(0.05)
        assert up.health_checks > checks  # the background loop runs
        down.up = True
        await asyncio.sleep(0.05)
        assert {state.name: state.healthy for state in instance.node_states()}["down"]
    finally:
        await instance.aclose()
    assert up.closed and down.closed


async def test_listed_models_give_nodes_smallest_context_and_health() -> None:
    instance = Balancer(settings(models=(MODEL, "other", "orphan")))
    a, b = FakeClient("a"), FakeClient("b")
    a.models = [ModelInfo(id=MODEL, context_length=8192)]
    b.models = [ModelInfo(id=MODEL, context_length=4096), ModelInfo(id="other")]
    instance.add_node(node_settings("a"), a)
    instance.add_node(node_settings("b", models=[MODEL, "other"]), b)
    await instance.refresh()
    listed = {item.settings.id: item for item in instance.listed_models()}
    assert listed[MODEL].nodes == ["a", "b"]
    assert listed[MODEL].context_length == 4096
    assert listed[MODEL].healthy
    assert listed["other"].nodes == ["b"] and listed["other"].context_length is None
    assert listed["orphan"].nodes == [] and not listed["orphan"].healthy
    b.up = False
    await instance.refresh()
    await instance.refresh()  # unhealthy_threshold: two failed checks in a row
    assert not {item.settings.id: item for item in instance.listed_models()}["other"].healthy


async def test_prometheus_metrics_per_node() -> None:
    registry = CollectorRegistry()
    instance = Balancer(
        settings(strategy="round_robin", eject_consecutive_failures=1, ejection_base_s=60),
        metrics_registry=registry,
    )
    a, b = FakeClient("a"), FakeClient("b")
    instance.add_node(node_settings("a"), a)
    instance.add_node(node_settings("b"), b)
    a.fail = [UpstreamError("boom")]
    for _ in range(3):
        await instance.chat_completion(chat())
    chunks = [chunk async for chunk in instance.stream_chat_completion(chat())]
    assert chunks

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("llm_node_requests_total", node="a") == 1
    assert value("llm_node_requests_total", node="b") == 4
    assert value("llm_node_errors_total", node="a", error="upstream_error") == 1
    assert value("llm_node_ejections_total", node="a") == 1
    assert value("llm_node_up", node="a") == 0
    assert value("llm_node_up", node="b") == 1
    assert value("llm_node_in_flight", node="b") == 0
    assert value("llm_node_request_duration_seconds_count", node="b") == 4
    assert value("llm_node_time_to_first_token_seconds_count", node="b") == 1
    assert value("llm_balancer_selections_total", node="b", strategy="round_robin") == 4
    assert value("llm_balancer_retries_total") == 1
    instance.remove_node("a")
    assert value("llm_node_requests_total", node="a") is None


async def test_node_states_show_server_gauges_and_their_age() -> None:
    instance = Balancer(settings())
    client = FakeClient("a")
    client.metrics.server_running = 3
    client.metrics.server_waiting = 1
    client.metrics.server_kv_cache_usage = 0.5
    started = time.monotonic()
    read_ago(client.metrics, 2.5)
    instance.add_node(node_settings("a", weight=2), client)
    await answered_by(instance)
    (state,) = instance.node_states()
    assert (state.server_running, state.server_waiting, state.server_kv_cache_usage) == (3, 1, 0.5)
    # 2.5 s plus the time since the read, however slow the machine: bounded by this test's.
    assert state.server_signals_age_s is not None
    assert 2.5 - 1e-6 <= state.server_signals_age_s <= 2.5 + (time.monotonic() - started)
    assert state.requests_total == 1 and state.latency_ms is not None
    assert state.url == "http://127.0.0.1:9/a" and state.weight == 2


async def test_a_refused_reload_changes_nothing_and_says_why() -> None:
    first = Settings(
        nodes=[node_settings("a"), node_settings("b")],
        models=[ModelSettings(id=MODEL)],
        load_balancer=lb_settings(strategy="round_robin"),
    )
    instance = Balancer(first)
    clients = {name: FakeClient(name) for name in ("a", "b")}
    for node in first.nodes:
        instance.add_node(node, clients[node.name])
    built: list[FakeClient] = []
    # A type this factory cannot build: any but the bake's default node type.
    missing = "vllm" if node_settings("x").type == "tgi" else "tgi"

    def factory(node: NodeSettings, _lb: object) -> FakeClient:
        if node.type == missing:
            raise ConfigError(f"node {node.name!r} has type {missing!r}, but no {missing} client")
        built.append(FakeClient(node.name))
        return built[-1]

    second = Settings(
        nodes=[node_settings("new"), node_settings("b", type=missing)],
        models=[ModelSettings(id=MODEL)],
        load_balancer=lb_settings(strategy="least_loaded"),
    )
    with pytest.raises(ConfigError, match=rf"reload refused, nothing changed: node 'b'.*{missing}"):
        instance.apply_settings(second, factory)
    assert [state.name for state in instance.node_states()] == ["a", "b"]
    assert instance.settings is first and instance.lb.strategy == "round_robin"
    assert {await answered_by(instance) for _ in range(4)} == {"a", "b"}
    await asyncio.sleep(0)
    assert built and all(client.closed for client in built)  # what was built is closed
    assert not clients["a"].closed and not clients["b"].closed

    def broken(node: NodeSettings, _lb: object) -> FakeClient:
        raise ValueError("bad pool size")

    with pytest.raises(ConfigError, match=r"node 'new'.*ValueError: bad pool size"):
        instance.apply_settings(second, broken)
    assert [state.name for state in instance.node_states()] == ["a", "b"]


async def test_health_checks_go_on_after_discovery_raises_something_unexpected() -> None:
    instance = Balancer(settings(health_check_interval_s=0.01, discovery_interval_s=0.01))
    client = FakeClient("a")
    calls = 0

    async def broken_discovery() -> list[ModelInfo]:
        nonlocal calls
        calls += 1
        raise RuntimeError("a bug in the client")

    client.discover_models = broken_discovery  # type: ignore[method-assign]
    instance.add_node(node_settings("a"), client)
    await instance.start()
    try:
        await asyncio.sleep(0.05)
        assert calls >= 2 and instance.health_checks_running
        client.up = False  # the node dies later: the monitor still notices
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not instance.node_states()[0].healthy:
                break
        assert not instance.node_states()[0].healthy
        assert instance.health_checks_running
    finally:
        await instance.aclose()
    assert not instance.health_checks_running
