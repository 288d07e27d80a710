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


def check_json_size(body: bytes, max_keys: int, max_items: int) -> None:
    """Refuse with 413 a body that could hold more than `max_keys` object keys or
    `max_items` array items and object members in all.

    Validation holds the GIL, so it stalls every client: 8 MB of small messages or tool
    calls took over a second, logit_bias keys or content parts a third of one.  Its cost
    grows with the objects' keys (each followed by ':'), and less steeply with the values
    (all but a container's first preceded by ','): counting those bytes (in C, a few
    milliseconds for the largest body) bounds the work before any of it is done.  Bytes
    inside strings count too, so the bound errs on the side of refusing.
    """
    if body.count(b":") > max_keys:
        raise PayloadTooLargeError(
            f"request body has more than {max_keys} JSON object keys (api.max_json_keys)"
        )
    if body.count(b",") >= max_items:
        raise PayloadTooLargeError(
            f"request body has more than {max_items} JSON array items and object members "
            "(api.max_json_items)"
        )


async def disconnected(receive: Receive) -> None:
    """Return when the client has gone (call it once the body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes")
