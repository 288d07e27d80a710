"""A real Redis (Debian's redis-server) on a free port with a temporary directory, and
`serve` replicas sharing it, as separate processes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from {{ cookiecutter.package_name }}_sim import SimConfig, SimHandle

PACKAGE = "{{ cookiecutter.package_name }}"
MODEL = "cluster-test-model"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """redis-server on 127.0.0.1 without persistence; `kill()` and `start()` keep the port."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert self.process.poll() is None, "redis-server exited at start"
            time.sleep(0.05)
        raise AssertionError("redis-server did not answer PING within 10 s")

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, its data gone (no persistence)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(binary, directory)
    server.start()
    yield server
    server.kill()


class Replica:
    """One `serve` process; its stderr goes to a file."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text()

    async def ready(self, client: httpx.AsyncClient) -> dict[str, Any]:
        body: dict[str, Any] = (await client.get(f"{self.url}/ready")).json()
        return body


ReplicaFactory = Callable[..., Awaitable[Replica]]


def node_config(nodes: list[tuple[str, str, int]], **load_balancer: Any) -> str:
    """A config file's text: no auth, the given (name, url, max_concurrency) nodes."""
    lines = ["[api]", "auth_enabled = false", "", "[load_balancer]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in load_balancer.items()]
    for name, url, limit in nodes:
        lines += [
            "",
            "[[nodes]]",
            f'name = "{name}"',
            f'url = "{url}"',
            'type = "openai_compatible"',
            f'models = ["{MODEL}"]',
            f"max_concurrency = {limit}",
        ]
    lines += ["", "[[models]]", f'id = "{MODEL}"', ""]
    return "\n".join(lines)


@pytest.fixture
async def start_replica(tmp_path: Path) -> AsyncIterator[ReplicaFactory]:
    """Start `serve` with a config text and extra environment; waits until it answers."""
    replicas: list[Replica] = []

    async def start(config: str, *args: str, **env: str) -> Replica:
        index = len(replicas)
        path = tmp_path / f"replica-{index}.toml"
        path.write_text(config)
        log = tmp_path / f"replica-{index}.log"
        port = free_port()
        environ = {k: v for k, v in os.environ.items() if not k.startswith("OPENROUTER_")}
        environ.update(env, OPENROUTER_CONFIG=str(path))
        with log.open("w") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                PACKAGE,
                "serve",
                "--port",
                str(port),
                *args,
                env=environ,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        replica = Replica(process, port, log)
        replicas.append(replica)
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                assert process.returncode is None, f"serve exited:\n{replica.output()}"
                try:
                    if (await client.get(f"{replica.url}/health")).status_code == 200:
                        return replica
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"serve did not answer within 15 s:\n{replica.output()}")

    yield start
    for replica in replicas:
        if replica.process.returncode is None:
            replica.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(replica.process.wait(), 10)
            except TimeoutError:
                replica.process.kill()
                await replica.process.wait()


class PeakCounter:
    """ASGI middleware in front of a simulated node: how many completions it serves at once."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.now = 0
        self.peak = 0
        self.total = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        counted = scope["type"] == "http" and scope["path"].endswith("/completions")
        if counted:
            self.now += 1
            self.total += 1
            self.peak = max(self.peak, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            if counted:
                self.now -= 1


@pytest.fixture
async def counted_node() -> AsyncIterator[Callable[..., Awaitable[tuple[SimHandle, PeakCounter]]]]:
    """A simulated openai-compatible node behind a PeakCounter."""
    handles: list[SimHandle] = []

    async def start(**options: Any) -> tuple[SimHandle, PeakCounter]:
        handle = SimHandle(SimConfig(dialect="openai", models=[MODEL], **options))
        counter = PeakCounter(handle.app)
        handle.app = counter  # type: ignore[assignment]  # any ASGI app serves
        await handle.start()
        handles.append(handle)
        return handle, counter

    yield start
    for handle in handles:
        await handle.stop()
