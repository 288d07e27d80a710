"""HTTP plumbing every dialect shares: JSON bodies, streams, disconnects and drops."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import suppress
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .engine import DroppedConnection, Simulator, iter_utf8_split


def dumps(body: Any) -> bytes:
    """Compact JSON with raw UTF-8, as every simulated server writes it."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status, headers, media_type="application/json")


async def read_json(request: Request) -> Any:
    """The request body as JSON; a ValueError says what was wrong."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ValueError(f"request body is not valid JSON: {error}") from None


def stream(
    sim: Simulator,
    chunks: AsyncGenerator[bytes, None],
    media_type: str,
    headers: dict[str, str] | None = None,
) -> StreamingResponse:
    """Stream `chunks`, counting a client that leaves early as a cancellation."""
    return _ClosingStream(_guarded(sim, chunks), media_type=media_type, headers=headers)


class _ClosingStream(StreamingResponse):
    """Close the body generator as soon as the response ends, however it ends.

    Starlette cancels the sender when the client disconnects; closing the
    generator right away frees the engine slot now rather than at garbage collection.
    """

    body_iterator: AsyncGenerator[bytes, None]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


async def _guarded(
    sim: Simulator, chunks: AsyncGenerator[bytes, None]
) -> AsyncGenerator[bytes, None]:
    done = False
    try:
        async for chunk in chunks:
            if not sim.config.split_utf8:
                yield chunk
                continue
            for part in iter_utf8_split(chunk):
                yield part
                # A short gap keeps the halves in separate reads on the client.
                await asyncio.sleep(0.001)
        done = True
    except DroppedConnection:
        done = True
        raise
    finally:
        if not done:
            sim.cancelled_total += 1
        await chunks.aclose()


async def answer(
    request: Request, sim: Simulator, work: Callable[[], Awaitable[Response]]
) -> Response:
    """Run a non-streamed request, stopping (and counting it) if the client leaves."""
    task = asyncio.ensure_future(work())
    watcher = asyncio.ensure_future(_disconnect(request.receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    sim.cancelled_total += 1
    with suppress(asyncio.CancelledError, DroppedConnection):
        await task
    return Response(status_code=499)  # nobody is listening any more


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _is_drop(error: BaseException) -> bool:
    if isinstance(error, DroppedConnection):
        return True
    if isinstance(error, BaseExceptionGroup):
        return all(_is_drop(inner) for inner in error.exceptions)
    return False


class DropMiddleware:
    """Turn `DroppedConnection` into a closed connection instead of a 500.

    The server closes the socket when the app fails after the response began,
    so a drop before any byte first starts the response.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except BaseException as error:
            if _is_drop(error) and not started:
                await send({"type": "http.response.start", "status": 200, "headers": []})
            raise


class _QuietDrops(logging.Filter):
    """Keep deliberate drops out of uvicorn's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or not _is_drop(error)


def quiet_drops() -> None:
    """Install the filter once on uvicorn's error logger."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(item, _QuietDrops) for item in logger.filters):
        logger.addFilter(_QuietDrops())


Sample = tuple[dict[str, str], float]
Metric = tuple[str, str, str, list[Sample]]  # name, type, help, samples


def prometheus(metrics: list[Metric]) -> Response:
    """Prometheus text exposition with each server's exact metric names.

    Written by hand because the servers differ in details prometheus-client
    would normalise (TGI's counters carry no `_total` suffix).
    """
    lines: list[str] = []
    for name, kind, help_text, samples in metrics:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            label_text = ",".join(f'{key}="{item}"' for key, item in labels.items())
            lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8")
