"""The load for `bench overhead`: keep-alive connections on raw sockets, one request at a time each.

Like the node, it is an asyncio protocol on uvloop with httptools parsing the
answers, so the core it shares with the node does little per request and the
proxy under test is what limits a row.  Each connection sends one request,
reads the whole answer (Content-Length or chunked), and sends the next.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, cast

import httptools
import uvloop


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `ask` sends a request and waits for the whole answer."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[tuple[int, bytes]] | None = None
        self.tail = b""
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("the connection closed mid-answer"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            if self.done is not None and not self.done.done():
                self.done.set_exception(error)

    def on_body(self, body: bytes) -> None:
        self.tail = (self.tail + body)[-32:]

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()  # the server said `connection: close`: the next one redials
            if not self.lost.done():
                self.lost.set_result(None)
        if self.done is not None and not self.done.done():
            self.done.set_result((self.parser.get_status_code(), self.tail))

    async def ask(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.tail = b""
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.done


def request_bytes(target: dict[str, Any], *, stream: bool, max_tokens: int) -> bytes:
    body = json.dumps(
        {
            "model": target["model"],
            "messages": [{"role": "user", "content": "Say something short."}],
            "max_tokens": max_tokens,
            "stream": stream,
        }
    ).encode()
    host = target["url"].split("://", 1)[1]
    headers = "".join(f"{name}: {value}\r\n" for name, value in target["headers"].items())
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{headers}\r\n"
    )
    return head.encode() + body


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def drive(
    target: dict[str, Any], *, stream: bool, concurrency: int, duration: float, max_tokens: int
) -> tuple[list[float], dict[str, int], float]:
    """Latencies (s), failures by reason and elapsed time: `concurrency` connections for
    `duration` seconds."""
    loop = asyncio.get_running_loop()
    host, port = target["url"].split("://", 1)[1].rsplit(":", 1)
    request = request_bytes(target, stream=stream, max_tokens=max_tokens)
    latencies: list[float] = []
    failures: dict[str, int] = {}
    start = time.perf_counter()
    stop = start + duration

    def fail(why: str) -> None:
        failures[why] = failures.get(why, 0) + 1

    async def one_connection() -> None:
        connection: _Connection | None = None
        while time.perf_counter() < stop:
            if connection is None or connection.lost.done():
                try:
                    _, connection = await loop.create_connection(_Connection, host, int(port))
                except OSError as error:
                    fail(type(error).__name__)
                    await asyncio.sleep(0.01)
                    continue
            began = time.perf_counter()
            try:
                status, tail = await connection.ask(request)
            except (ConnectionError, httptools.HttpParserError) as error:
                fail(type(error).__name__)
                connection = None
                continue
            if status != 200:
                fail(f"HTTP {status}")
            elif stream and not tail.endswith(b"data: [DONE]\n\n"):
                fail("no [DONE]")
            else:
                latencies.append(time.perf_counter() - began)
        if connection is not None and connection.transport is not None:
            connection.transport.close()

    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return latencies, failures, time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children so far: nginx's worker is a
    child of its master."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(child)) for child in children)


async def _phases(spec: dict[str, Any]) -> dict[str, Any]:
    """Each phase in turn, with the proxy's CPU time per answer when its pid is given."""
    target, pid = spec["target"], spec.get("pid")
    result: dict[str, Any] = {}
    for name, phase in spec["phases"].items():
        cpu = cpu_seconds(pid) if pid else 0.0
        latencies, failures, elapsed = await drive(target, **phase)
        used = cpu_seconds(pid) - cpu if pid else 0.0
        result[name] = {
            "p50": percentile(latencies, 0.5) if latencies else None,
            "p99": percentile(latencies, 0.99) if latencies else None,
            "per_s": len(latencies) / elapsed,
            "cpu_us": used / len(latencies) * 1e6 if pid and latencies else None,
            "failures": failures,
        }
    return result


def main(argv: list[str]) -> int:
    """`python -m ...bench_load SPEC`: run the phases SPEC (JSON) names, print the results."""
    result = uvloop.run(_phases(json.loads(argv[0])))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
