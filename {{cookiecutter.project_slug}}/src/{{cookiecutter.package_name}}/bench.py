"""`bench <name>`: the benchmarks, each printing a Markdown table.

Each benchmark lives beside the code it measures; this module only routes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

BENCHMARKS = {
    "transport": "httpx's default transport against httpx over aiohttp, through one client",
    "balancer": "balancing quality of every strategy on a simulated heterogeneous fleet",
    "overhead": "latency and throughput the provider adds over a node, beside nginx and LiteLLM",
}


def _load(name: str) -> Callable[[list[str]], int]:
    if name == "transport":
        from .backends.bench import main as transport

        return transport
    if name == "balancer":
        from .balancer.bench import main as balancer

        return balancer
    from .api.bench import main as overhead

    return overhead


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print("usage: bench {" + ",".join(BENCHMARKS) + "} [options]", file=sys.stderr)
        for name, text in BENCHMARKS.items():
            print(f"  {name:10} {text}", file=sys.stderr)
        return 2
    return _load(argv[0])(argv[1:])
