"""Parsing helpers for the simulator tests: SSE events and NDJSON lines."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx


def sse_events(response: httpx.Response) -> list[str]:
    """The `data` payloads of an SSE body, in order (`data:` with or without a space)."""
    events = []
    for block in response.text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data:"):
                events.append(line[5:].removeprefix(" "))
    return events


def sse_json(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON events of an SSE body, without the final `[DONE]`."""
    return [json.loads(event) for event in sse_events(response) if event != "[DONE]"]


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


async def eventually(check: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    """Wait until `check()` holds (the server reached a state), or fail naming `what`."""
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
