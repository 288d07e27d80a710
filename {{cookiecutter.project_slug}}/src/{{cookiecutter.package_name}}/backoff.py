"""Exponential backoff with jitter, for every loop that retries a remote call.

Without jitter, every client that failed at the same moment retries at the same
moment and fails together again ("Exponential Backoff And Jitter", AWS
Architecture Blog, 2015).  The delay is drawn from the upper half of the
exponential step, so it still grows and never collapses to a busy loop.
"""

from __future__ import annotations

import random

_rng = random.Random()


def backoff_s(failures: int, *, base_s: float, cap_s: float, rng: random.Random = _rng) -> float:
    """Seconds to wait after `failures` failures in a row (1 for the first): a random
    point in [step / 2, step], where step = base_s x 2^(failures - 1), capped at cap_s."""
    step = min(cap_s, base_s * 2.0 ** min(max(failures - 1, 0), 64))
    return rng.uniform(step / 2, step)
