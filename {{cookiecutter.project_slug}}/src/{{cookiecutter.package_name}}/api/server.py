"""`serve`: the app on Granian (Rust, hyper), which enforces HTTP itself.

hyper parses HTTP/1.1 and bounds what the app never sees: the request head (`max_header_bytes`, and
at most 100 header lines: else 431), the time to send it (`header_timeout_s`, also an idle
keep-alive connection's), and a body the app does not read: the connection is closed, never drained.
The body the app reads is bounded by `read_body`.  Granian's worker processes share the port
(`--workers`); TLS when `[api] tls_certfile` and `tls_keyfile` are set.

SIGHUP re-reads the config file and the environment (README, "Keys"); a config that fails
validation is logged and ignored, so a typo never locks everyone out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any, Literal

from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import Server as Granian
from granian.server.embed import Server as EmbeddedGranian
from starlette.applications import Starlette

from ..config import ApiSettings, ConfigError, Settings, load_settings
from ..logs import configure_logging
from .app import Api, create_app

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 5


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    config_path: str | Path | None = None,
    workers: int = 1,
) -> int:
    """Serve until interrupted; 2 with a message when the settings cannot serve."""
    style: Literal["json", "text"] = "json" if settings.log_json else "text"
    configure_logging(style)
    try:
        create_app(settings)
    except ConfigError as error:
        print(f"serve: {error}", file=sys.stderr)
        return 2
    host = host or settings.api.host
    port = settings.api.port if port is None else port
    try:
        port = _free_port(host, port)
    except OSError as error:
        print(f"serve: cannot listen on {host}:{port}: {error.strerror}", file=sys.stderr)
        return 2
    sharing = (
        "sharing state through Redis"
        if settings.cluster.redis_url is not None
        else f"each allows 1/{workers} of every node's max_concurrency"
    )
    scheme = "https" if settings.api.tls_certfile else "http"
    plural = "s" if workers > 1 else ""
    server = _Server(
        config_path,
        f"running on {scheme}://{host}:{port} with {workers} worker{plural} ({sharing})",
        target="",
        address=host,
        port=port,
        workers=workers,
        loop=Loops.uvloop,
        workers_kill_timeout=STOP_TIMEOUT_S,
        respawn_failed_workers=True,
        log_level=LogLevels.warning,
        reload_paths=[Path(__file__).parent],  # unused (no reload), but read: not the cwd
        **server_options(settings.api),
    )
    server.serve(target_loader=partial(worker_app, config_path, workers, style), wrap_loader=False)
    return 0


def server_options(api: ApiSettings) -> dict[str, Any]:
    """Granian's options for the [api] limits, shared by `serve` and the embedded server."""
    return {
        "interface": Interfaces.ASGI,
        # HTTP/1.1 only: with HTTP/2 also on, the wait for the first bytes (to tell the two
        # apart) had no timeout, so connections that sent nothing were held for ever.
        "http": HTTPModes.http1,
        "websockets": False,  # no websocket route: an Upgrade is a plain request
        "backlog": 2048,
        # Connections a worker holds at once (Granian's permits, one per connection): half
        # its file descriptors, so past the cap new clients wait in the backlog instead of
        # failing at the fd limit, and a few thousand idle ones cannot lock everyone out.
        "backpressure": max(128, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2),
        "http1_settings": HTTP1Settings(
            header_read_timeout=int(api.header_timeout_s * 1000),
            max_buffer_size=api.max_header_bytes,
        ),
        "ssl_cert": api.tls_certfile,
        "ssl_key": api.tls_keyfile,
    }


def worker_settings(settings: Settings, workers: int) -> Settings:
    """Each worker counts as `workers` replicas more (see `cluster.replicas`)."""
    cluster = settings.cluster.model_copy(update={"replicas": settings.cluster.replicas * workers})
    return settings.model_copy(update={"cluster": cluster})


def worker_app(
    config_path: str | Path | None, workers: int, style: Literal["json", "text"]
) -> Starlette:
    """A worker's app, from the config as it is now (called in each worker process); it logs
    in `serve`'s style, which `--log-json` may have set.

    Granian's workers take SIGINT and SIGTERM; SIGHUP, passed on by `serve`, reloads
    the app in place on its event loop, so requests in flight (long streams) go on.
    """
    if sys.platform == "linux":
        # A worker whose parent dies (killed, crashed) dies too, as it would keep the port:
        # orphaned Granian workers ignored SIGTERM.  prctl(2) PR_SET_PDEATHSIG is 1.
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before the call
            os._exit(1)
    configure_logging(style)
    settings = worker_settings(load_settings(config_path), workers)
    app = create_app(settings)
    api: Api = app.state.api

    def reload() -> None:
        try:
            api.reload(worker_settings(load_settings(config_path), workers))
        except ConfigError as error:
            log.error("SIGHUP: configuration not reloaded, keeping the current one: %s", error)

    loop = asyncio.get_event_loop()  # Granian's, created before the app
    signal.signal(signal.SIGHUP, lambda *_: loop.call_soon_threadsafe(reload))
    return app


class _Server(Granian):  # type: ignore[misc,valid-type]  # granian's public server class
    """Granian's server; SIGHUP goes to the workers, which reload in place."""

    def __init__(self, config_path: str | Path | None, announce: str, **options: Any) -> None:
        super().__init__(**options)
        self.config_path = config_path
        self.announce = announce

    def startup(self, *args: Any, **kwargs: Any) -> None:
        super().startup(*args, **kwargs)
        # Once the workers are forked: a thread running while the parent forks may hold a
        # lock (the resolver's) that the child then waits for forever.
        line = (self.bind_addr, self.bind_port, self.announce)
        threading.Thread(target=_announce, args=line, daemon=True).start()

    def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
        try:
            settings = load_settings(self.config_path)
            create_app(settings)
        except ConfigError as error:
            log.error("SIGHUP: configuration not reloaded, keeping the current one: %s", error)
            return
        log.info("SIGHUP: reloading the configuration (%d API keys)", len(settings.api.api_keys))
        for worker in multiprocessing.active_children():  # Granian's workers
            if worker.pid is not None:
                os.kill(worker.pid, signal.SIGHUP)


@contextlib.asynccontextmanager
async def serving(app: Starlette, api: ApiSettings, host: str, port: int) -> AsyncIterator[str]:
    """Serve `app` in the running event loop (tests, `demo`, `run`): its URL until exit."""
    port = _free_port(host, port)  # raises OSError if taken: Granian would fail in its task
    server = EmbeddedGranian(app, address=host, port=port, log_enabled=False, **server_options(api))
    task = asyncio.create_task(server.serve())
    try:
        while not _accepts(host, port):
            if task.done():
                raise OSError(f"cannot listen on {host}:{port}: {task.exception()}")
            await asyncio.sleep(0.01)
        yield f"{'https' if api.tls_certfile else 'http'}://{host}:{port}"
    finally:
        server.stop()  # type: ignore[no-untyped-call]  # granian leaves it untyped
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def _announce(host: str, port: int, line: str) -> None:
    """Log `line` once a worker answers on host:port: "running" means ready."""
    for _ in range(600):
        if _accepts(host, port):
            log.info("%s", line)
            return
        time.sleep(0.05)


def _free_port(host: str, port: int = 0) -> int:
    """`port`, or any free port for 0; OSError if it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return int(probe.getsockname()[1])
