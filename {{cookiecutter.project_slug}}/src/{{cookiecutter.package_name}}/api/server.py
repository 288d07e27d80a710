"""`serve`: the app on uvicorn (uvloop, httptools with limits), with key rotation on SIGHUP.

SIGHUP re-reads the config file and the environment; new `api.api_keys` and
`api.metrics_key` apply to the next request.  A config that fails validation
is logged and ignored, so a typo never locks everyone out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Generator
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from starlette.types import ASGIApp

from ..config import ConfigError, Settings, load_settings
from ..logs import configure_logging
from .app import Api, create_app
from .protocol import Limits, limited_protocol

log = logging.getLogger(__name__)


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    config_path: str | Path | None = None,
    workers: int = 1,
) -> int:
    """Serve until interrupted; 2 with a message when the settings cannot serve."""
    configure_logging("json" if settings.log_json else "text")
    try:
        app = create_app(settings)
    except ConfigError as error:
        print(f"serve: {error}", file=sys.stderr)
        return 2
    if workers > 1:
        from .workers import serve_workers

        return serve_workers(
            settings,
            workers=workers,
            host=host or settings.api.host,
            port=settings.api.port if port is None else port,
            config_path=config_path,
        )
    api: Api = app.state.api
    config = server_config(
        app,
        settings,
        host=host or settings.api.host,
        port=settings.api.port if port is None else port,
        log_config=None,
    )
    run_on_uvloop(Server(config).run_until_signal(lambda: reload(api, config_path)))
    return 0


def serve_socket(
    settings: Settings, sock: socket.socket, *, config_path: str | Path | None
) -> None:
    """One worker of `serve --workers`: the app on a socket its parent bound."""
    configure_logging("json" if settings.log_json else "text")
    app = create_app(settings)
    api: Api = app.state.api
    config = server_config(app, settings, log_config=None)
    run_on_uvloop(Server(config).run_until_signal(lambda: reload(api, config_path), sockets=[sock]))


def server_config(app: ASGIApp, settings: Settings, **options: Any) -> uvicorn.Config:
    """uvicorn's config for the app: httptools with the [api] connection limits."""
    api = settings.api
    limits = Limits(
        max_header_bytes=api.max_header_bytes,
        max_header_count=api.max_header_count,
        header_timeout_s=api.header_timeout_s,
        body_timeout_s=api.body_timeout_s,
    )
    defaults: dict[str, Any] = {
        "access_log": False,
        # No WebSocket upgrades: uvicorn's websocket protocol would take the connection
        # outside the limits above, and the API has no websocket route.
        "ws": "none",
        "timeout_graceful_shutdown": 5,
        "timeout_keep_alive": api.keepalive_timeout_s,
    }
    return uvicorn.Config(app, http=limited_protocol(limits), **(defaults | options))


def run_on_uvloop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop, as uvicorn.run would: less CPU per request than asyncio's loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


class Server(uvicorn.Server):
    """uvicorn's server with our own signal handlers: SIGINT/SIGTERM stop it, SIGHUP reloads.

    uvicorn's own handlers re-raise the signal after shutdown, which ends the
    process with a KeyboardInterrupt traceback; a clean exit needs these.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def stop(self) -> None:
        self.should_exit = True

    async def run_until_signal(
        self,
        on_hangup: Callable[[], None] | None = None,
        sockets: list[socket.socket] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        if on_hangup is not None:
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        await self.serve(sockets=sockets)


def reload(api: Api, config_path: str | Path | None) -> None:
    """Re-read settings and swap the keys; keep the old ones if the new config is invalid."""
    try:
        api.reload(load_settings(config_path))
    except ConfigError as error:
        log.error("SIGHUP: configuration not reloaded, keeping the current keys: %s", error)
        return
    log.info("SIGHUP: API keys reloaded (%d keys)", len(api.keys))
