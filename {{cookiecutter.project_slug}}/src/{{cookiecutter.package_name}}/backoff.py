"""Waiting in loops: exponential backoff with jitter, and a pause a stop cuts short.

Without jitter, every client that failed at the same moment retries at the same
moment and fails together again ("Exponential Backoff And Jitter", AWS
Architecture Blog, 2015).  The delay is drawn from the upper half of the
exponential step, so it still grows and never collapses to a busy loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

_rng = random.Random()


def backoff_s(failures: int, *, base_s: float, cap_s: float, rng: random.Random = _rng) -> float:
    """Seconds to wait after `failures` failures in a row (1 for the first): a random
    point in [step / 2, step], where step = base_s x 2^(failures - 1), capped at cap_s."""
    step = min(cap_s, base_s * 2.0 ** min(max(failures - 1, 0), 64))
    return rng.uniform(step / 2, step)


async def pause(event: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or until `event` is set.

    asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that meets
    the event being set, and a loop told to stop never ends (Fleet.aclose() waited for ever).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
