"""`bench workers`: what `serve --workers 2` answers per second against one worker.

The same fast node (`overhead_node`: canned answers on raw sockets) and the same
load process (`overhead_load`) as `bench overhead`, in one run: the provider with
one worker, then with two, without Redis (each worker keeps half of the node's
limit, which is far above the load here).  The node and the load run on CPU 1
and the provider on any CPU, so on a two-CPU machine the second worker shares a
core with the load: the gain shown is what such a machine gives.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .overhead import (
    KEY,
    LISTED,
    PACKAGE,
    Target,
    _free_port,
    _measure,
    _ms,
    _node,
    _process,
    _provider_config,
    _wait_until_up,
)

# Spawned workers import the package afresh: give the second one time to listen too.
WORKER_START_S = 3.0


def run(duration: float, counts: list[int]) -> int:
    results: dict[int, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        node_port = _free_port()
        node_url = f"http://127.0.0.1:{node_port}"
        node = stack.enter_context(_process(_node(node_port, 1), cpu=1))
        _wait_until_up(f"{node_url}/v1/models", node, 30)
        config = Path(tmp) / "provider.toml"
        config.write_text(_provider_config(node_url))
        for workers in counts:
            port = _free_port()
            argv = [sys.executable, "-m", PACKAGE, "serve", "--port", str(port)]
            argv += ["--workers", str(workers)]
            env = {"OPENROUTER_CONFIG": str(config)}
            with _process(argv, cpu=-1, env=env) as provider:
                _wait_until_up(f"http://127.0.0.1:{port}/health", provider, 30)
                if workers > 1:
                    time.sleep(WORKER_START_S)
                print(f"measuring --workers {workers} ...", file=sys.stderr, flush=True)
                url = f"http://127.0.0.1:{port}"
                target = Target(
                    f"--workers {workers}", url, LISTED, {"authorization": f"Bearer {KEY}"}
                )
                results[workers] = _measure(target, duration)
    cpus = len(os.sched_getaffinity(0))
    print(f"`serve --workers N` on this machine ({cpus} CPUs; node and load on CPU 1); ")
    print(f"each phase runs {duration:g} s against a node far faster than the provider.\n")
    print(
        "| workers | req/s c=64 | x first | p50 c=64 (ms) | p50 c=1 (ms) "
        "| 100-chunk streams/s c=16 | failures |"
    )
    print("|---|---|---|---|---|---|---|")
    one = results[counts[0]]["c64"]["per_s"]
    for workers, row in results.items():
        failures = sum(sum(row[phase]["failures"].values()) for phase in ("c1", "c64", "streams"))
        cells = [
            str(workers),
            f"{row['c64']['per_s']:.0f}",
            f"{row['c64']['per_s'] / one:.2f}",
            _ms(row["c64"]["p50"]),
            _ms(row["c1"]["p50"]),
            f"{row['streams']['per_s']:.0f}",
            str(failures),
        ]
        print("| " + " | ".join(cells) + " |")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench workers", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per phase (default 4)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        metavar="N",
        help="worker counts to measure, the first is the baseline (default: 1 2)",
    )
    args = parser.parse_args(argv)
    if any(count < 1 for count in args.workers):
        print("bench workers: --workers: counts start at 1", file=sys.stderr)
        return 2
    return run(args.duration, args.workers)
