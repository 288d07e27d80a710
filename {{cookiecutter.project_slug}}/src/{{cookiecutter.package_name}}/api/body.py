"""The client's side of a request: its body under a size and a time limit, and its leaving."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.types import Receive

from ..llm.errors import InvalidRequestError, PayloadTooLargeError, RequestTimeoutError

# A refused body up to this many times the limit is read and dropped, so that a client
# that writes all of it before reading sees the 413 rather than a reset it would retry
# (nginx's lingering close); beyond it, or without a key, the connection is closed.
DRAINED = 4
# Each piece of a body costs the event loop a message (about 15 us), whatever its size: a
# body in more than PIECES pieces averaging under PIECE_BYTES is refused (1-byte chunks
# cost 14 s a MB; a client sends a body in a few large pieces).
PIECES = 1000
PIECE_BYTES = 1024


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, refused with 413 once it is known to exceed `limit` bytes, and with
    408 when it has not arrived `timeout_s` after the headers.

    The server closes the connection of a request whose body is not read to the end.
    A client that leaves mid-upload raises Starlette's ClientDisconnect.
    """
    # Granian (hyper) refuses a malformed Content-Length with 400 before the app sees it.
    declared = int(request.headers.get("content-length", 0))
    parts: list[bytes] = []
    size = pieces = 0
    try:
        async with asyncio.timeout(timeout_s):
            if declared > limit:
                if declared <= DRAINED * limit:
                    async for _ in request.stream():
                        pass
                raise _too_large(limit)
            async for chunk in request.stream():
                size += len(chunk)
                pieces += 1
                if pieces > PIECES and size < pieces * PIECE_BYTES:
                    raise InvalidRequestError("the request body arrives in too many small pieces")
                if size > DRAINED * limit:
                    break
                if size <= limit:
                    parts.append(chunk)
    except TimeoutError:
        raise RequestTimeoutError("the request body did not arrive in time") from None
    if size > limit:
        raise _too_large(limit)
    return b"".join(parts)


async def disconnected(receive: Receive) -> None:
    """Return when the client has gone (call it once the body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes")
