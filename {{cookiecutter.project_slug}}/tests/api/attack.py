"""Tools for the attack tests: raw connections, the event loop's CPU time, peak memory."""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit


class LoopCpu:
    """CPU time of this thread while the block runs: the event loop's work, the app's under
    test and the test's own client calls (so the bound errs on the side of failing).

    Unlike the loop's lag, other load on the machine does not inflate it.
    """

    def __init__(self) -> None:
        self.spent = 0.0
        self._start = 0.0

    async def __aenter__(self) -> LoopCpu:
        self._start = time.thread_time()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.spent = time.thread_time() - self._start


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
