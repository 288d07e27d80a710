"""`bench balancer`: balancing quality of every strategy, beside an oracle.

The real `Balancer` (filters, strategies, retries, ejection, queue) routes
open-loop Poisson arrivals to in-process simulated nodes (`fleet`) on a
virtual clock, so the run measures decisions, not this machine's speed.  Every
strategy sees the same arrivals and request sizes (same seed).

Two workloads:
- heterogeneous: four nodes of different speed and concurrency, one degraded
  (5x slower) and one failing 20 % of requests fast (503 in 1 ms), at 50, 80
  and 95 % of the fleet's capacity;
- prefix: four equal nodes with a prefix cache of 3 system prompts each, 12
  shared system prompts with Zipf popularity and many users, at 80 %.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from {{ cookiecutter.package_name }}.balancer.balancer import Balancer
from {{ cookiecutter.package_name }}.balancer.strategies import STRATEGIES
from {{ cookiecutter.package_name }}.config import LoadBalancerSettings, ModelSettings, NodeSettings, Settings
from {{ cookiecutter.package_name }}.llm.errors import LlmError
from {{ cookiecutter.package_name }}.llm.models import ChatCompletionRequest, ChatMessage

from .fleet import (
    CHARS_PER_TOKEN,
    NodeSpec,
    Oracle,
    SimNode,
    VirtualClockLoop,
    current_request,
)

MODEL = "bench-model"

HETEROGENEOUS = (
    NodeSpec("big", slots=8, ms_per_token=20, prefill_ms_per_token=0.2),
    NodeSpec("small", slots=4, ms_per_token=35, prefill_ms_per_token=0.5),
    NodeSpec("degraded", slots=8, ms_per_token=100, prefill_ms_per_token=1.0),
    NodeSpec("flaky", slots=4, ms_per_token=20, prefill_ms_per_token=0.2, fail_rate=0.2),
)
PREFIX_FLEET = tuple(
    NodeSpec(f"n{index}", slots=4, ms_per_token=20, prefill_ms_per_token=0.5, cached_prompts=3)
    for index in range(1, 5)
)
SYSTEM_PROMPTS = 12
SYSTEM_PROMPT_TOKENS = 3000


@dataclass(frozen=True)
class Job:
    at: float
    request: ChatCompletionRequest


@dataclass
class Outcome:
    ok: bool
    latency_s: float = 0.0
    ttft_s: float = 0.0


@dataclass
class Run:
    strategy: str
    load: float
    outcomes: list[Outcome]
    fleet: dict[str, SimNode]

    def latency(self, q: float) -> float:
        return _quantile([outcome.latency_s for outcome in self.outcomes if outcome.ok], q)

    def ttft(self, q: float) -> float:
        return _quantile([outcome.ttft_s for outcome in self.outcomes if outcome.ok], q)

    def error_rate(self) -> float:
        return sum(1 for outcome in self.outcomes if not outcome.ok) / len(self.outcomes)

    def shares(self) -> dict[str, float]:
        total = sum(node.completed for node in self.fleet.values()) or 1
        return {name: node.completed / total for name, node in self.fleet.items()}

    def hit_rate(self) -> float:
        lookups = sum(node.cache_lookups for node in self.fleet.values())
        return sum(node.cache_hits for node in self.fleet.values()) / max(lookups, 1)

    def max_over_mean(self) -> float:
        counts = [node.completed for node in self.fleet.values()]
        return max(counts) / statistics.mean(counts) if any(counts) else math.nan


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    values.sort()
    return values[min(len(values) - 1, int(q * len(values)))]


def _filler(tokens: int, tag: str) -> str:
    """Text of about `tokens` tokens whose first characters identify it."""
    head = f"{tag} "
    return head + "x" * max(0, tokens * CHARS_PER_TOKEN - len(head))


def _request(messages: list[ChatMessage], output_tokens: int) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model=MODEL, messages=messages, max_tokens=output_tokens, stream=True
    )


def _output_tokens(rng: random.Random, mean: float) -> int:
    # Long-tailed answer lengths: most short, a few very long.
    return max(10, min(int(rng.expovariate(1 / mean)), 1000))


def heterogeneous_jobs(count: int, rng: random.Random) -> list[Job]:
    """Independent users: distinct prompts of 100-600 tokens, answers averaging 150."""
    sizes = [(rng.randint(100, 600), _output_tokens(rng, 150)) for _ in range(count)]
    return [
        Job(
            0.0, _request([ChatMessage(role="user", content=_filler(prompt, f"user {index}"))], out)
        )
        for index, (prompt, out) in enumerate(sizes)
    ]


def prefix_jobs(count: int, rng: random.Random) -> list[Job]:
    """Many users behind a few long shared system prompts (Zipf popularity)."""
    systems = [_filler(SYSTEM_PROMPT_TOKENS, f"system prompt {k}") for k in range(SYSTEM_PROMPTS)]
    popularity = [1 / (k + 1) for k in range(SYSTEM_PROMPTS)]
    jobs = []
    for index in range(count):
        system = rng.choices(systems, weights=popularity)[0]
        messages = [
            ChatMessage(role="system", content=system),
            ChatMessage(role="user", content=_filler(rng.randint(20, 200), f"user {index}")),
        ]
        jobs.append(Job(0.0, _request(messages, _output_tokens(rng, 100))))
    return jobs


def capacity(fleet: Sequence[NodeSpec], jobs: Sequence[Job]) -> float:
    """Requests per second the fleet completes at full use, no prefix cache hits."""
    total = 0.0
    for spec in fleet:
        mean = statistics.mean(
            spec.service_s(
                len(job.request.prompt_text()) // CHARS_PER_TOKEN, job.request.max_tokens or 1
            )
            for job in jobs
        )
        total += spec.slots / mean
    return total


def with_arrivals(jobs: Sequence[Job], rate: float, rng: random.Random) -> list[Job]:
    at = 0.0
    timed = []
    for job in jobs:
        at += rng.expovariate(rate)
        timed.append(Job(at, job.request))
    return timed


async def _simulate(
    strategy: str, fleet_specs: Sequence[NodeSpec], jobs: Sequence[Job], seed: int
) -> tuple[list[Outcome], dict[str, SimNode]]:
    lb = LoadBalancerSettings(strategy="power_of_two" if strategy == "oracle" else strategy)
    nodes = [
        NodeSettings(
            name=spec.name,
            url="http://127.0.0.1:1",
            type="openai_compatible",
            models=[MODEL],
            max_concurrency=2 * spec.slots,
            weight=spec.slots / 4,
        )
        for spec in fleet_specs
    ]
    settings = Settings(nodes=nodes, models=[ModelSettings(id=MODEL)], load_balancer=lb)
    fleet = {
        spec.name: SimNode(spec, MODEL, random.Random(seed * 1000 + index))
        for index, spec in enumerate(fleet_specs)
    }
    rng = random.Random(seed)
    chooser = Oracle(lb, rng, fleet) if strategy == "oracle" else None
    balancer = Balancer(settings, rng=rng, chooser=chooser)
    for node in nodes:
        balancer.add_node(node, fleet[node.name])
    await balancer.start()
    loop = asyncio.get_running_loop()
    outcomes: list[Outcome] = []

    async def one(job: Job) -> None:
        current_request.set(job.request)
        arrived = loop.time()
        first: float | None = None
        try:
            async for _chunk in balancer.stream_chat_completion(job.request):
                if first is None:
                    first = loop.time()
        except LlmError:
            outcomes.append(Outcome(ok=False))
            return
        done = loop.time()
        outcomes.append(Outcome(True, done - arrived, (first or done) - arrived))

    start = loop.time()
    tasks = []
    for job in jobs:
        await asyncio.sleep(max(0.0, start + job.at - loop.time()))
        tasks.append(asyncio.create_task(one(job)))
    await asyncio.gather(*tasks)
    await balancer.aclose()
    return outcomes, fleet


def simulate(
    strategy: str, load: float, fleet: Sequence[NodeSpec], jobs: Sequence[Job], seed: int
) -> Run:
    rate = load * capacity(fleet, jobs)
    timed = with_arrivals(jobs, rate, random.Random(seed + 1))
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        outcomes, nodes = runner.run(_simulate(strategy, fleet, timed, seed))
    return Run(strategy, load, outcomes, nodes)


def _s(value: float) -> str:
    return f"{value:.2f}"


def heterogeneous_table(runs: Sequence[Run]) -> str:
    names = [spec.name for spec in HETEROGENEOUS]
    lines = [
        "| load | strategy | p50 s | p99 s | TTFT p50 s | TTFT p99 s | errors | "
        + " | ".join(f"{name} share" for name in names)
        + " |",
        "|---" * (7 + len(names)) + "|",
    ]
    for run in runs:
        shares = run.shares()
        lines.append(
            f"| {run.load:.0%} | {run.strategy} | {_s(run.latency(0.5))} | "
            f"{_s(run.latency(0.99))} | {_s(run.ttft(0.5))} | "
            f"{_s(run.ttft(0.99))} | {run.error_rate():.1%} | "
            + " | ".join(f"{shares[name]:.0%}" for name in names)
            + " |"
        )
    return "\n".join(lines)


def prefix_table(runs: Sequence[Run], ideal: float) -> str:
    lines = [
        "| strategy | prefix hits | ideal | p50 s | p99 s | TTFT p50 s | TTFT p99 s | "
        "max/mean node load | errors |",
        "|---" * 9 + "|",
    ]
    for run in runs:
        lines.append(
            f"| {run.strategy} | {run.hit_rate():.0%} | {ideal:.0%} | "
            f"{_s(run.latency(0.5))} | {_s(run.latency(0.99))} | "
            f"{_s(run.ttft(0.5))} | {_s(run.ttft(0.99))} | "
            f"{run.max_over_mean():.2f} | {run.error_rate():.1%} |"
        )
    return "\n".join(lines)


def verdict(runs: Sequence[Run]) -> str:
    """The target: power_of_two's p99 at 80 % within 1.5x the oracle's, 2x better than RR."""
    at = {run.strategy: run.latency(0.99) for run in runs if run.load == 0.8}
    if not {"power_of_two", "oracle", "round_robin"} <= at.keys():
        return ""
    p2c, oracle, rr = at["power_of_two"], at["oracle"], at["round_robin"]
    return (
        f"power_of_two p99 at 80 %: {p2c:.2f} s = {p2c / oracle:.2f}x the oracle's "
        f"({oracle:.2f} s) and {rr / p2c:.2f}x better than round_robin's ({rr:.2f} s)."
    )


def main(argv: list[str]) -> int:
    strategies: list[str] = [*STRATEGIES, "oracle"]
    parser = argparse.ArgumentParser(prog="bench balancer", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--loads", default="0.5,0.8,0.95", help="shares of fleet capacity, comma-separated"
    )
    parser.add_argument(
        "--strategies", default=",".join(strategies), help="comma-separated; 'oracle' included"
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.strategies.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in strategies]
    if unknown:
        parser.error(
            f"unknown strategies {', '.join(unknown)}; choose from {', '.join(strategies)}"
        )
    try:
        loads = [float(value) for value in args.loads.split(",")]
    except ValueError:
        parser.error(f"--loads expects numbers such as 0.5,0.8; got {args.loads!r}")
    if not all(load > 0 for load in loads):
        # Arrivals are spaced by 1 / load: a zero or negative share has no arrival rate.
        parser.error(f"--loads must all be greater than 0; got {args.loads!r}")
    if args.requests < 100:
        parser.error("--requests must be at least 100")
    # Ejections are part of the experiment, not news.
    logging.getLogger(__package__).setLevel(logging.ERROR)

    jobs = heterogeneous_jobs(args.requests, random.Random(args.seed))
    print(
        f"Heterogeneous fleet, {args.requests} streamed requests per run, "
        f"capacity {capacity(HETEROGENEOUS, jobs):.2f} req/s (virtual clock):\n"
    )
    runs = [
        simulate(name, load, HETEROGENEOUS, jobs, args.seed) for load in loads for name in chosen
    ]
    print(heterogeneous_table(runs))
    line = verdict(runs)
    if line:
        print(f"\n{line}")

    jobs = prefix_jobs(args.requests, random.Random(args.seed))
    ideal = 1 - SYSTEM_PROMPTS / args.requests
    print(
        f"\nPrefix workload at 80 %: {SYSTEM_PROMPTS} system prompts of "
        f"{SYSTEM_PROMPT_TOKENS} tokens, 4 equal nodes caching 3 each:\n"
    )
    print(
        prefix_table([simulate(name, 0.8, PREFIX_FLEET, jobs, args.seed) for name in chosen], ideal)
    )
    return 0
