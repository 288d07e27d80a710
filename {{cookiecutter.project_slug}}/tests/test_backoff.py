"""The retry delay: grows, is capped, and spreads clients that failed together."""

from __future__ import annotations

import random

from {{ cookiecutter.package_name }}.backoff import backoff_s


def test_delay_doubles_within_half_steps_and_is_capped() -> None:
    rng = random.Random(1)
    for failures, step in [(1, 0.25), (2, 0.5), (3, 1.0), (6, 5.0), (10_000, 5.0)]:
        for _ in range(200):
            delay = backoff_s(failures, base_s=0.25, cap_s=5.0, rng=rng)
            assert step / 2 <= delay <= step


def test_clients_failing_together_retry_apart() -> None:
    rng = random.Random(2)
    delays = {round(backoff_s(4, base_s=1.0, cap_s=30.0, rng=rng), 3) for _ in range(50)}
    assert len(delays) > 40
