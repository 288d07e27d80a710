"""The balancer under faults, with real processes where it matters: simulated nodes in
their own processes (killed with SIGKILL), `serve` reloaded by SIGHUP, real clients."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from prometheus_client import CollectorRegistry

from {{ cookiecutter.package_name }}.api.app import Api
from {{ cookiecutter.package_name }}.backends import available_types, create_client
from {{ cookiecutter.package_name }}.backends.base import HttpClient
from {{ cookiecutter.package_name }}.balancer import Balancer
from {{ cookiecutter.package_name }}.config import ModelSettings, NodeSettings, NodeType, Settings
from {{ cookiecutter.package_name }}.context import Context
from {{ cookiecutter.package_name }}.llm.errors import InvalidRequestError, LlmError, OverloadedError
from {{ cookiecutter.package_name }}_sim import SimHandle

from .fakes import MODEL, chat, lb_settings
from api.test_processes import clean_env, process, read_until  # tests/ is on sys.path

PACKAGE = "{{ cookiecutter.package_name }}"


@dataclass
class SimProcess:
    url: str
    proc: asyncio.subprocess.Process

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)


@asynccontextmanager
async def sim_process(*options: str) -> AsyncIterator[SimProcess]:
    """A simulated OpenAI-compatible node in its own process, on a free port."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        PACKAGE,
        "sim",
        "--port",
        "0",
        "--model",
        MODEL,
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
        assert match, f"the simulator did not start: {line!r}"
        yield SimProcess(match.group(1), proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def fleet(urls: list[str], max_concurrency: int, **lb: object) -> Settings:
    nodes = [
        NodeSettings(
            name=f"node-{index}",
            url=url,
            type="openai_compatible",
            models=[MODEL],
            max_concurrency=max_concurrency,
        )
        for index, url in enumerate(urls)
    ]
    return Settings(nodes=nodes, models=[ModelSettings(id=MODEL)], load_balancer=lb_settings(**lb))


@asynccontextmanager
async def balancing(settings: Settings) -> AsyncIterator[tuple[Balancer, CollectorRegistry]]:
    registry = CollectorRegistry()
    balancer = Balancer(settings, metrics_registry=registry)
    for node in settings.nodes:
        balancer.add_node(node, create_client(node, settings.load_balancer))
    await balancer.start()
    try:
        yield balancer, registry
    finally:
        await balancer.aclose()


@dataclass
class Tally:
    ok: int = 0
    overloaded: int = 0
    failed: list[str] = field(default_factory=list)


async def clients_in_a_loop(
    balancer: Balancer, clients: int, total: int, at: int, event: Callable[[], None]
) -> Tally:
    """`clients` callers send `total` requests back to back; `event` runs after `at` answers."""
    tally = Tally()
    sent = 0

    async def caller() -> None:
        nonlocal sent
        while sent < total:
            sent += 1
            try:
                await balancer.chat_completion(chat())
                tally.ok += 1
            except OverloadedError:
                tally.overloaded += 1
            except LlmError as error:
                tally.failed.append(f"{error.status_code} {error.message}")
            if tally.ok == at:
                event()

    await asyncio.gather(*(caller() for _ in range(clients)))
    return tally


async def test_a_node_killed_at_full_load_loses_no_request() -> None:
    # Three nodes with two slots each, six callers in a loop: every slot busy when one
    # node dies; its requests must wait for, or move to, the surviving slots.  Answers
    # take 0.3 s so the run outlasts selection_timeout_s: a waiter that callers coming
    # back for more could overtake (a freed slot open to all) would starve into a 429.
    async with AsyncExitStack() as stack:
        sims = [
            await stack.enter_async_context(
                sim_process("--max-concurrency", "2", "--ttft", "0.3", "--output-tokens", "8")
            )
            for _ in range(3)
        ]
        # With the queue an operator may turn on (off by default: a full fleet is a 429).
        queue = {"max_queue": 64, "selection_timeout_s": 5.0}
        settings = fleet([sim.url for sim in sims], max_concurrency=2, **queue)
        balancer, registry = await stack.enter_async_context(balancing(settings))
        tally = await clients_in_a_loop(balancer, clients=6, total=150, at=40, event=sims[1].kill)
    print(f"\nnode killed at full load: {tally}")
    assert tally.ok == 150, tally
    assert tally.overloaded == 0 and not tally.failed
    assert registry.get_sample_value("llm_balancer_retries_total") is not None


async def test_max_concurrency_raised_live_takes_the_new_load_without_errors() -> None:
    # The server runs 12 at once; the node starts at 2 and is raised to 12 by a reload.
    # A client pool still sized for 2 would make 8 of 12 requests wait for a connection
    # past the pool timeout, fail, and eject a healthy node.
    async with sim_process(
        "--max-concurrency", "12", "--ttft", "0.8", "--output-tokens", "2"
    ) as sim:
        before = fleet([sim.url], max_concurrency=2, connect_timeout_s=0.3, selection_timeout_s=30)
        async with balancing(before) as (balancer, registry):
            after = fleet(
                [sim.url], max_concurrency=12, connect_timeout_s=0.3, selection_timeout_s=30
            )
            balancer.apply_settings(after, create_client)
            answers = await asyncio.gather(
                *(balancer.chat_completion(chat()) for _ in range(12)), return_exceptions=True
            )
            errors = [answer for answer in answers if isinstance(answer, BaseException)]
            assert not errors, errors
            state = balancer.node_states()[0]
            assert state.max_concurrency == 12
            assert state.state == "healthy" and state.errors_total == 0
            assert not registry.get_sample_value("llm_node_ejections_total", {"node": "node-0"})


def deep(depth: int) -> list[Any]:
    root: list[Any] = []
    inner = root
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return root


async def test_a_request_that_cannot_be_encoded_is_the_callers_400_and_no_node_is_blamed(
    sim_server: Callable[..., Awaitable[SimHandle]],
) -> None:
    handle = await sim_server(dialect="openai", models=[MODEL])
    settings = fleet([handle.url], max_concurrency=4, eject_consecutive_failures=1)
    async with balancing(settings) as (balancer, registry):
        for _ in range(5):
            # A standard field is sent on, so it must be encoded: it cannot be.
            with pytest.raises(InvalidRequestError) as refused:
                await balancer.chat_completion(chat(metadata=deep(30_000)))
            assert refused.value.status_code == 400
            assert "cannot be encoded" in refused.value.message
            # An unknown field is dropped before encoding, whatever it holds.
            assert (await balancer.chat_completion(chat(unknown=deep(30_000)))).choices
        state = balancer.node_states()[0]
        assert state.state == "healthy" and state.errors_total == 0
        assert not registry.get_sample_value("llm_node_ejections_total", {"node": "node-0"})
        assert (await balancer.chat_completion(chat())).choices
        # A body a client builds itself (not from wire()) is guarded the same way.
        client = next(iter(balancer.nodes())).client
        assert isinstance(client, HttpClient)
        with pytest.raises(InvalidRequestError, match="cannot be encoded"):
            await client.fetch("POST", "/v1/chat/completions", body={"options": deep(30_000)})


async def test_ready_says_when_health_checks_have_stopped(
    sim_server: Callable[..., Awaitable[SimHandle]],
) -> None:
    handle = await sim_server(dialect="openai", models=[MODEL])
    settings = fleet([handle.url], max_concurrency=4)
    settings.api.auth_enabled = False
    async with Context.open(settings) as context:
        api = Api(settings)
        api.attach(context)
        assert (await api.ready(None)).status_code == 200  # type: ignore[arg-type]
        monitor = context.balancer._monitor  # stop it the only way it stops: from outside
        assert monitor is not None
        monitor.cancel()
        await asyncio.sleep(0)
        response = await api.ready(None)  # type: ignore[arg-type]
        assert response.status_code == 503 and b"health_checks" in response.body


def missing_type() -> NodeType:
    """A server type this project was generated without (every bake lacks some)."""
    return next(kind for kind in get_args(NodeType) if kind not in available_types())


def write_config(
    path: Path, url: str, *, extra: str = "", cap: int = 512, auth: bool = True
) -> None:
    path.write_text(
        f'[api]\napi_keys = ["key"]\nauth_enabled = {str(auth).lower()}\n\n'
        f'[[nodes]]\nname = "n1"\nurl = "{url}"\ntype = "openai_compatible"\n'
        f'models = ["{MODEL}"]\n\n'
        f'[[models]]\nid = "{MODEL}"\nmax_output_length = {cap}\n' + extra
    )


async def test_serve_reload_is_all_or_nothing_and_the_api_follows_it(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    async with sim_process() as sim:
        write_config(config, sim.url)
        async with process(
            "serve", "--config", str(config), "--port", "0", env=clean_env()
        ) as proc:
            port = (await read_until(proc.stderr, r"running on http://127.0.0.1:(\d+)")).group(1)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                key = {"authorization": "Bearer key"}

                async def listed() -> list[str]:
                    response = await http.get("/v1/models", headers=key)
                    return sorted(model["id"] for model in response.json()["data"])

                async def ask(max_tokens: int, headers: dict[str, str]) -> int:
                    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
                    body["max_tokens"] = max_tokens  # type: ignore[assignment]
                    response = await http.post("/v1/chat/completions", json=body, headers=headers)
                    return response.status_code

                assert await ask(100, key) == 200
                # A node of a type this project lacks: refused whole, with the reason.
                kind = missing_type()
                write_config(
                    config,
                    sim.url,
                    cap=50,
                    extra=f'\n[[nodes]]\nname = "n2"\nurl = "{sim.url}"\ntype = "{kind}"\n'
                    f'models = ["acme/new"]\n\n[[models]]\nid = "acme/new"\n',
                )
                proc.send_signal(signal.SIGHUP)
                refused = await read_until(proc.stderr, r"not reloaded.*")
                assert "nothing changed" in refused.group(0) and f"'{kind}'" in refused.group(0)
                assert await listed() == [MODEL]
                assert await ask(100, key) == 200  # the old cap, the old fleet
                # A valid reload: the new cap and auth setting hold at once, in the
                # listing and in the request path alike.
                write_config(config, sim.url, cap=50, auth=False)
                proc.send_signal(signal.SIGHUP)
                for _ in range(100):
                    if await ask(100, {}) == 400:
                        break
                    await asyncio.sleep(0.05)
                assert await ask(100, {}) == 400  # above the new cap, and no key needed
                assert await ask(50, {}) == 200
                document = (await http.get(f"/v1/models/{MODEL}")).json()
                assert document["output_modalities"][0]["max_length"]["value"] == 50
