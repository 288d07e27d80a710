"""Tools for the attack tests: raw connections, event-loop lag, peak memory."""

from __future__ import annotations

import asyncio
import resource
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit


class LoopLag:
    """The worst delay of a 5 ms timer while the block runs: how long the loop was blocked."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, loop.time() - start - 0.005)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def peak_rss_mb() -> float:
    """This process's peak resident memory (the app under test runs in it)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()


async def exchange(url: str, data: bytes, wait_s: float = 10) -> bytes:
    """Send `data` on a fresh connection and read until the server closes it."""
    async with connect(url) as (reader, writer):
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), wait_s)


async def is_closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server has closed the connection (what it sent first is read and dropped)."""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 0.05)
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: test", *headers]
    if body:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
