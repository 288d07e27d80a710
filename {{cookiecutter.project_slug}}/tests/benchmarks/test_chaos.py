"""`bench chaos`: a short fixed-seed fault schedule on the runner pair, Redis, a node and the
local chain, with every invariant holding; the schedule comes from the seed alone."""

from __future__ import annotations

import itertools
import os
import re
import shutil

import pytest

from {{ cookiecutter.package_name }}_bench.chaos import FAULTS, INVARIANTS, main, schedule


def test_the_schedule_is_the_seeds_and_covers_every_fault() -> None:
    assert schedule(7, 600) == schedule(7, 600)
    assert schedule(7, 600) != schedule(8, 600)
    plan = schedule(7, 600)
    assert {fault.kind for fault in plan} == set(FAULTS)
    for earlier, later in itertools.pairwise(plan):
        assert later.at_s > earlier.at_s + (0 if earlier.kind == "reorg" else earlier.seconds)


def test_a_short_schedule_breaches_no_invariant(capsys: pytest.CaptureFixture[str]) -> None:
    rpc = os.environ.get("TANGLE_E2E_RPC_URL")
    if not rpc:
        pytest.skip("TANGLE_E2E_RPC_URL is unset: bench chaos needs anvil with tnt-core")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    # Seed 2's first 55 s: leader killed twice, standby paused, Redis restarted empty and
    # flushed, a fee spike above the runners' cap.
    status = main(["--seed", "2", "--minutes", "0.9", "--rpc", rpc, "--settle", "60"])
    out = capsys.readouterr().out
    rows = dict(re.findall(r"^\| ([^|]+?) \| (\d+) \|", out, re.M))
    assert set(rows) == set(INVARIANTS)
    assert status == 0, out
    assert all(count == "0" for count in rows.values()), out
    submitted = int(re.search(r"calls submitted: (\d+)", out).group(1))  # type: ignore[union-attr]
    sent = int(re.search(r"operator transactions: (\d+)", out).group(1))  # type: ignore[union-attr]
    samples = int(re.search(r"node load samples \(.*\): (\d+)", out).group(1))  # type: ignore[union-attr]
    assert submitted >= 20 and sent >= 1 and samples >= 100
    assert re.search(r"HTTP answers: 200: [1-9]", out), out
    assert re.search(r"takeovers \(.*\): \d", out), out
