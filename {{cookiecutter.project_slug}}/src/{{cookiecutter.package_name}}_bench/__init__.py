"""`bench <name>`: the benchmarks, each printing a Markdown table.

The benchmarks are not part of the product: this package sits beside it in src/, out
of the wheel and the image, and imports it by name.  This module only routes, and turns
what stops a benchmark from outside (a missing or broken tool, a process that would not
start, a machine too busy for a node to answer) into one line and exit status 1.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from {{ cookiecutter.package_name }}.llm.errors import LlmError

# What a benchmark's surroundings raise; a bug in the benchmark still shows its traceback.
_STOPPED_BY = (OSError, RuntimeError, subprocess.SubprocessError, LlmError)

BENCHMARKS = {
    "transport": "httpx's default transport against httpx over aiohttp, through one client",
    "balancer": "balancing quality of every strategy on a simulated heterogeneous fleet",
    "overhead": "latency and throughput the provider adds over a node, beside nginx and LiteLLM",
    "queue": "completions per second with 0, 256 and 1,024 requests waiting for a slot",
    "workers": "requests per second through serve --workers 2 against one worker",
    "chaos": "the runner pair, Redis, a node and anvil under a seeded fault schedule",
    "quotes": "signed Tangle job quotes (pricing and EIP-712) per CPU second",
}


def _load(name: str) -> Callable[[list[str]], int]:
    if name == "transport":
        from .transport import main as transport

        return transport
    if name == "balancer":
        from .balancing import main as balancer

        return balancer
    if name == "workers":
        from .workers import main as workers

        return workers
    if name == "chaos":
        from .chaos import main as chaos

        return chaos
    if name == "quotes":
        from .quotes import main as quotes

        return quotes
    if name == "queue":
        from .queueing import main as queue

        return queue
    from .overhead import main as overhead

    return overhead


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print("usage: bench {" + ",".join(BENCHMARKS) + "} [options]", file=sys.stderr)
        for name, text in BENCHMARKS.items():
            print(f"  {name:10} {text}", file=sys.stderr)
        return 2
    try:
        return _load(argv[0])(argv[1:])
    except _STOPPED_BY as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        print(f"bench {argv[0]}: stopped: {reason}", file=sys.stderr)
        return 1
