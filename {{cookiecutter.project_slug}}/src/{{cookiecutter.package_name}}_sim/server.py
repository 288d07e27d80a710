"""Serve a simulated server with uvicorn in the running event loop.

`running_sim(config)` is what tests, benchmarks and the demo use.  Its handle
can kill the node (in-flight requests are dropped and the port refuses
connections) and bring it back on the same port with the same counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator

import uvicorn

from .app import create_app
from .config import SimConfig
from .engine import Simulator
from .wire import quiet_drops


class _Server(uvicorn.Server):
    """uvicorn's server without signal handlers: the host program owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class SimHandle:
    """A simulated server listening on 127.0.0.1; `sim` is its control surface."""

    def __init__(self, config: SimConfig, port: int = 0, host: str = "127.0.0.1") -> None:
        self.sim = Simulator(config)
        self.app = create_app(config, self.sim)
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.url

    @property
    def serving(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Listen (again) on the same port; a restarted node loads again for `loading_s`."""
        if self.serving:
            return
        quiet_drops()
        self.sim.revive()
        # With the protocol named, asyncio turns Nagle off on accepted connections;
        # without it every reused connection stalls about 40 ms.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=30,
        )
        server = _Server(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start
                raise RuntimeError("simulator stopped while starting")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Kill the node: drop requests in flight and stop listening."""
        if self._server is None or self._task is None:
            return
        self.sim.kill()
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = None
        self._task = None


@contextlib.asynccontextmanager
async def running_sim(config: SimConfig, port: int = 0) -> AsyncIterator[SimHandle]:
    """Serve `config` on 127.0.0.1 (port 0: any free port) until the block ends."""
    handle = SimHandle(config, port)
    await handle.start()
    try:
        yield handle
    finally:
        await handle.stop()
