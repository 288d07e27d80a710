"""`serve --workers N`: N processes answering on one port, so `serve` can use N cores.

Each worker listens on its own socket bound to the same port with SO_REUSEPORT,
so the kernel spreads new connections evenly over the workers (one shared
accept queue lets whichever worker wakes first take a whole burst).  The parent
binds the port first without listening, which holds it (and resolves port 0)
for the workers.  Workers are spawned, not forked: no event loop or connection
pool is inherited.  Each worker is a replica: with
`cluster.redis_url` they share every node's slots and findings through Redis;
without it each worker keeps 1/N of every node's `max_concurrency` (at least 1),
so the node never sees more than its limit from this machine.  SIGTERM/SIGINT
stop the workers, SIGHUP is passed on (each re-reads its keys), and a worker that
dies is started again after a second.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from ..config import Settings

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0
STOP_TIMEOUT_S = 10.0


def worker_settings(settings: Settings, workers: int) -> Settings:
    """Each worker counts as `workers` replicas more (see `cluster.replicas`)."""
    cluster = settings.cluster.model_copy(update={"replicas": settings.cluster.replicas * workers})
    return settings.model_copy(update={"cluster": cluster})


def bind(host: str, port: int) -> socket.socket:
    """A socket on host:port that other sockets of this user may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve_workers(
    settings: Settings,
    *,
    workers: int,
    host: str,
    port: int,
    config_path: str | Path | None,
) -> int:
    """Run `workers` serving processes on host:port until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    try:
        held = bind(host, port)
    except OSError as error:
        print(f"serve: cannot listen on {host}:{port}: {error.strerror}", file=sys.stderr)
        return 2
    bound = held.getsockname()
    shared = worker_settings(settings, workers)
    context = multiprocessing.get_context("spawn")

    def start(index: int) -> BaseProcess:
        process = context.Process(
            target=_worker,
            args=(shared, config_path, host, bound[1]),
            name=f"serve-worker-{index}",
        )
        process.start()
        return process

    log.info(
        "serving on %s:%d with %d workers (%s)",
        bound[0],
        bound[1],
        workers,
        "sharing state through Redis"
        if settings.cluster.redis_url is not None
        else f"each allows 1/{shared.cluster.replicas} of every node's max_concurrency",
    )
    processes = [start(index) for index in range(workers)]
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    def hangup(signum: int, _frame: FrameType | None) -> None:
        for process in processes:
            _signal(process, signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hangup)
    try:
        while not stopping:
            time.sleep(0.2)
            for index, process in enumerate(processes):
                if not process.is_alive() and not stopping:
                    log.warning(
                        "worker %d exited with %s; starting another", index, process.exitcode
                    )
                    time.sleep(RESTART_DELAY_S)
                    processes[index] = start(index)
    finally:
        for process in processes:
            _signal(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in processes:
            process.join(max(deadline - time.monotonic(), 0.0))
            if process.is_alive():
                process.kill()
                process.join()
        held.close()
    return 0


def _signal(process: BaseProcess, signum: int) -> None:
    if process.pid is not None and process.is_alive():
        os.kill(process.pid, signum)


def _worker(settings: Settings, config_path: str | Path | None, host: str, port: int) -> None:
    from .server import serve_socket

    sock = bind(host, port)
    sock.listen(2048)
    serve_socket(settings, sock, config_path=config_path)
