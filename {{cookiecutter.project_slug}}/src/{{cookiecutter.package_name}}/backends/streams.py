"""Line readers for the two streaming formats the servers use.

Both read `httpx.Response.aiter_lines()`, which decodes UTF-8 incrementally: a
character split across network chunks is held back until its last byte
arrives, never replaced or dropped.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from ..llm.errors import UpstreamError


def _decode(payload: str) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except json.JSONDecodeError:
        raise UpstreamError(
            f"the server streamed a line that is not JSON: {payload[:200]!r}"
        ) from None
    if not isinstance(data, dict):
        raise UpstreamError(f"the server streamed JSON that is not an object: {payload[:200]!r}")
    return data


async def sse_events(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    """Server-sent events as JSON objects, until `data: [DONE]` or the end of the body.

    Comment lines (`: keep-alive`) and `event:`/`id:`/`retry:` fields are
    skipped; `data:` lines of one event are joined as the SSE spec says.
    llama.cpp reports a failure inside a 200 stream with a field of its own,
    `error: {...}`, which a plain SSE reader would skip; it comes out as
    `{"error": {...}}`, the shape other servers send in `data:`.
    """
    data: list[str] = []
    async for line in response.aiter_lines():
        if line:
            field, _, value = line.partition(":")
            if field == "data":
                data.append(value.removeprefix(" "))
            elif field == "error":
                yield {"error": _decode(value) if value.strip().startswith("{") else value.strip()}
            continue
        if not data:
            continue
        payload = "\n".join(data)
        data = []
        if payload == "[DONE]":
            return
        yield _decode(payload)
    # A body may end without the blank line that closes its last event.
    if data and (payload := "\n".join(data)) != "[DONE]":
        yield _decode(payload)


async def ndjson_objects(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    """Newline-delimited JSON objects (Ollama's streams)."""
    async for line in response.aiter_lines():
        if line.strip():
            yield _decode(line)
