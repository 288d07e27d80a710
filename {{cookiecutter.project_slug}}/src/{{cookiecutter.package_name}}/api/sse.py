"""Server-sent events for streamed completions.

One task relays chunks; the request's own task watches for the client going away, the deadline, and
silence (then it writes `: keep-alive` comments).  The relay and the keep-alives share a lock so
frames never interleave.  When the client leaves, the relay is cancelled and the balancer's iterator
closed, which closes the upstream request and stops generation on the node.

The relay reads the iterator in a task of its own and writes whatever frames piled up since its last
write in one send, as nginx writes what one upstream read brought: a node that sends a burst of
chunks costs one trip through the ASGI stack and one socket write, not one per chunk.  A paced node
still gets each chunk written as soon as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

from pydantic_core import to_json
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..llm.errors import LlmError, UpstreamError, UpstreamTimeoutError
from ..llm.models import ChatCompletionChunk, TextCompletionChunk
from .body import disconnected
from .errors import Scrubber, unexpected

KEEPALIVE = b": keep-alive\n\n"
# A stream whose first chunk takes longer than this after admission gets its headers and
# a comment instead, then a comment every keep-alive interval until the first token.
FIRST_BYTE_S = 0.2
# Frames waiting for the writer beyond this many bytes pause the reader (backpressure).
HIGH_WATER = 64 * 1024
DONE = b"data: [DONE]\n\n"
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
Chunk = ChatCompletionChunk | TextCompletionChunk


def frame(data: dict[str, object]) -> bytes:
    # pydantic-core's encoder: the same compact JSON as json.dumps, in a fraction of the time.
    return b"data: " + to_json(data) + b"\n\n"


async def close_iterator(iterator: AsyncIterator[object]) -> None:
    """Close an async generator, and with it the upstream request."""
    if isinstance(iterator, AsyncGenerator):
        await iterator.aclose()


class SseResponse(Response):
    """A response relaying an iterator of chunks as SSE, ending with `data: [DONE]`."""

    def __init__(
        self,
        iterator: AsyncIterator[Chunk],
        first: asyncio.Future[Chunk],
        *,
        include_usage: bool,
        keepalive_s: float,
        deadline_s: float,
        scrub: Scrubber,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = list(HEADERS)
        self.iterator = iterator
        self.first = first
        self.include_usage = include_usage
        self.keepalive_s = keepalive_s
        self.deadline_s = deadline_s
        self.scrub = scrub
        self._lock = asyncio.Lock()
        self._last_write = 0.0
        # Frames read but not yet written, and the futures each side parks on.
        self._frames: list[bytes] = []
        self._size = 0
        self._more: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        if not self.first.done():
            await self._write(send, KEEPALIVE)  # a first byte while the node starts
        self._last_write = loop.time()
        relay = asyncio.ensure_future(self._relay(send))
        gone = asyncio.ensure_future(disconnected(receive))
        try:
            while True:
                now = loop.time()
                wake = min(self._last_write + self.keepalive_s, deadline) - now
                done, _ = await asyncio.wait(
                    (relay, gone), timeout=max(wake, 0), return_when=asyncio.FIRST_COMPLETED
                )
                if relay in done or gone in done:
                    break
                if loop.time() >= deadline:
                    relay.cancel()
                    await asyncio.gather(relay, return_exceptions=True)
                    # The node first: a client that stopped reading may never take the frame.
                    await close_iterator(self.iterator)
                    late = self._error_frame(UpstreamTimeoutError("the request deadline passed"))
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.keepalive_s):
                            await self._write(send, late, more=False)
                    break
                if loop.time() - self._last_write >= self.keepalive_s:
                    # Bounded by the deadline: the client may have stopped reading.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout_at(deadline):
                            await self._write(send, KEEPALIVE)
        finally:
            for task in (relay, gone):
                task.cancel()
            await asyncio.gather(relay, gone, return_exceptions=True)
            await close_iterator(self.iterator)

    async def _relay(self, send: Send) -> None:
        """Write the frames the reader made, a batch per send, until its last one."""
        reader = asyncio.ensure_future(self._read())
        reader.add_done_callback(lambda _: self._wake_writer())
        try:
            while True:
                if not self._frames:
                    if reader.done():
                        return
                    self._more = asyncio.get_running_loop().create_future()
                    await self._more
                    continue
                data = b"".join(self._frames)
                self._frames.clear()
                self._size = 0
                if self._room is not None and not self._room.done():
                    self._room.set_result(None)
                # The reader ends with [DONE] (or an error event and [DONE]).
                last = reader.done()
                await self._write(send, data, more=not last)
                if last:
                    return
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self) -> None:
        """Turn chunks into frames, ending with [DONE] or an error event."""
        try:
            await self._put_chunk(await self.first)
            async for chunk in self.iterator:
                await self._put_chunk(chunk)
        except LlmError as error:
            self._put(self._error_frame(error))
            return
        except Exception as error:  # the stream must still end in an error event
            self._put(self._error_frame(unexpected(error, self.scrub)))
            return
        self._put(DONE)

    async def _put_chunk(self, chunk: Chunk) -> None:
        if chunk.usage is not None:
            if not chunk.choices:
                if self.include_usage:
                    self._put(frame(chunk.wire()))
                return
            if not self.include_usage:
                chunk.usage = None
        self._put(frame(chunk.wire()))
        if self._size >= HIGH_WATER:
            self._room = asyncio.get_running_loop().create_future()
            await self._room

    def _put(self, data: bytes) -> None:
        self._frames.append(data)
        self._size += len(data)
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._more is not None and not self._more.done():
            self._more.set_result(None)

    def _error_frame(self, error: LlmError) -> bytes:
        """End a started stream in-band: an error event, then [DONE]."""
        body = error.to_openai()
        body["error"]["message"] = self.scrub(error.message)
        return frame(body) + DONE

    async def _write(self, send: Send, data: bytes, *, more: bool = True) -> None:
        async with self._lock:
            await send({"type": "http.response.body", "body": data, "more_body": more})
            self._last_write = asyncio.get_running_loop().time()


async def first_chunk(
    iterator: AsyncIterator[Chunk], wait_s: float
) -> tuple[asyncio.Future[Chunk], bool]:
    """Start reading the first chunk and wait up to `wait_s` for it.

    Failures that come quickly (overload, a dead node) still get a proper HTTP
    status; a node that is slow to start gets a 200 with keep-alives instead.
    Returns the pending-or-done future and whether it is done.
    """
    future: asyncio.Future[Chunk] = asyncio.ensure_future(_next(iterator))
    try:
        done, _ = await asyncio.wait((future,), timeout=wait_s)
    except asyncio.CancelledError:
        # The caller is going: stop reading, so the iterator can be closed.
        future.cancel()
        await asyncio.gather(future, return_exceptions=True)
        raise
    return future, bool(done)


async def _next(iterator: AsyncIterator[Chunk]) -> Chunk:
    try:
        return await anext(iterator)
    except StopAsyncIteration:
        raise UpstreamError("the node ended the stream without sending anything") from None
