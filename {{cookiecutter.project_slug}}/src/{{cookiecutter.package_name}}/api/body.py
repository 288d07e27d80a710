"""The client's side of a request: its body under a size limit, and its leaving."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Receive

from ..llm.errors import InvalidRequestError, PayloadTooLargeError


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit` bytes.

    A client that leaves mid-upload raises Starlette's ClientDisconnect.  The
    time the body may take is bounded by the server (`body_timeout_s`).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequestError("invalid Content-Length header")
        if int(declared) > limit:
            raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def disconnected(receive: Receive) -> None:
    """Return when the client has gone (call it once the body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes")
