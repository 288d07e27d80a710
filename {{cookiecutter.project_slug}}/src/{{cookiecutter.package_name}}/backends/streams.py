"""Line readers for the two streaming formats the servers use.

Both split the body into lines as bytes: LF, CR and CRLF end a line, and none
of those bytes can occur inside a multi-byte UTF-8 character, so a character
split across network chunks is whole again once its line is.  Each payload
is decoded once, as a whole, which also skips httpx's text and line layers
on every network read.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx
from pydantic_core import from_json, to_json

from ..llm.errors import UpstreamError

DONE = b"[DONE]"


def decode(payload: bytes) -> dict[str, Any]:
    """A JSON object the server streamed; anything else is the server's fault."""
    try:
        # pydantic-core's parser: about a third of json.loads' time, and bounded in depth.
        data = from_json(payload)
    except ValueError:
        # Invalid UTF-8 is replaced, not fatal, as httpx's own text decoding does.
        text = payload.decode("utf-8", "replace")
        try:
            data = from_json(text)
        except ValueError:
            raise UpstreamError(
                f"the server streamed a line that is not JSON: {text[:200]!r}"
            ) from None
    if not isinstance(data, dict):
        text = payload[:200].decode("utf-8", "replace")
        raise UpstreamError(f"the server streamed JSON that is not an object: {text!r}")
    return data


async def _lines(response: httpx.Response) -> AsyncGenerator[list[bytes], None]:
    """The body's lines without their endings, a batch per network read (one
    generator step per read, not per line); a last line needs no ending."""
    pending = b""
    async for piece in response.aiter_bytes():
        lines = (pending + piece).splitlines(keepends=True)
        if not lines:
            continue
        # An unfinished line waits for the rest; so does a final CR, which may be a CRLF's half.
        pending = b"" if lines[-1].endswith(b"\n") else lines.pop()
        yield [line.rstrip(b"\r\n") for line in lines]
    if pending:
        yield [pending.rstrip(b"\r\n")]


async def sse_data(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """Each server-sent event's data, as bytes, until `data: [DONE]` or the end of the body.

    Comment lines (`: keep-alive`) and `event:`/`id:`/`retry:` fields are
    skipped; `data:` lines of one event are joined as the SSE spec says.
    llama.cpp reports a failure inside a 200 stream with a field of its own,
    `error: {...}`, which a plain SSE reader would skip; it comes out as
    `{"error": {...}}`, the shape other servers send in `data:`.
    """
    data: list[bytes] = []
    async for lines in _lines(response):
        for line in lines:
            if line:
                field, _, value = line.partition(b":")
                if field == b"data":
                    data.append(value.removeprefix(b" "))
                elif field == b"error":
                    value = value.strip()
                    yield to_json(
                        {
                            "error": decode(value)
                            if value.startswith(b"{")
                            else value.decode("utf-8", "replace")
                        }
                    )
                continue
            if not data:
                continue
            payload = b"\n".join(data)
            data = []
            if payload == DONE:
                return
            yield payload
    # A body may end without the blank line that closes its last event.
    if data and (payload := b"\n".join(data)) != DONE:
        yield payload


async def sse_events(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    """Server-sent events as JSON objects (see `sse_data`)."""
    async for payload in sse_data(response):
        yield decode(payload)


async def ndjson_objects(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    """Newline-delimited JSON objects (Ollama's streams)."""
    async for lines in _lines(response):
        for line in lines:
            if line.strip():
                yield decode(line)
