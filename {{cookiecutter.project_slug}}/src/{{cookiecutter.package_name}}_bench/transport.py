"""`bench transport`: httpx's default transport against httpx over aiohttp, through one client.

A simulated OpenAI-compatible server (no token pacing, no time to first
token) runs in its own process, so client and server do not share an event
loop or a core's worth of Python.  One `OpenAICompatibleClient`, as the
balancer uses it, sends `--concurrency` requests at once for `--seconds` per
cell: small non-streamed chat completions, then streams of `--chunks`
chunks.  The table gives requests (or streams) per second and latency
percentiles; pick the faster transport with `load_balancer.http_transport`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from {{ cookiecutter.package_name }}.backends.openai_compatible import OpenAICompatibleClient
from {{ cookiecutter.package_name }}.config import LoadBalancerSettings, NodeModel, NodeSettings
from {{ cookiecutter.package_name }}.llm.models import ChatCompletionRequest, ChatMessage

Transport = Literal["httpx", "aiohttp"]
Workload = Literal["small", "stream"]
TRANSPORTS: tuple[Transport, ...] = ("httpx", "aiohttp")
MODEL = "bench-model"
PACKAGE = "{{ cookiecutter.package_name }}"  # the product


@dataclass
class Cell:
    workload: Workload
    transport: Transport
    completed: int
    seconds: float
    latencies_s: list[float]

    @property
    def rate(self) -> float:
        return self.completed / self.seconds

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)] * 1000


@contextlib.contextmanager
def simulator(chunks: int, concurrency: int) -> Iterator[str]:
    """A simulated server in a child process; yields its base URL."""
    command = [
        sys.executable,
        "-m",
        PACKAGE,
        "sim",
        "--dialect",
        "openai",
        "--model",
        MODEL,
        "--output-tokens",
        str(chunks),
        "--max-concurrency",
        str(concurrency * 2),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: S603
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if found is None:
            raise RuntimeError(f"the simulator did not start: {line.strip()!r}")
        yield found.group(0)
    finally:
        process.terminate()
        process.wait(timeout=10)


def client_for(url: str, transport: Transport, concurrency: int) -> OpenAICompatibleClient:
    node = NodeSettings(
        name="bench",
        url=url,
        type="openai_compatible",
        models=[NodeModel(id=MODEL)],
        max_concurrency=concurrency,
    )
    return OpenAICompatibleClient(node, LoadBalancerSettings(http_transport=transport))


async def one(client: OpenAICompatibleClient, workload: Workload, chunks: int) -> None:
    if workload == "small":
        request = ChatCompletionRequest(
            model=MODEL, messages=[ChatMessage(role="user", content="ping")], max_tokens=4
        )
        await client.chat_completion(request)
        return
    request = ChatCompletionRequest(
        model=MODEL, messages=[ChatMessage(role="user", content="stream")], max_tokens=chunks
    )
    received = 0
    async for chunk in client.stream_chat_completion(request):
        received += bool(chunk.choices and chunk.choices[0].delta.content)
    if received != chunks:
        raise RuntimeError(f"expected {chunks} content chunks, got {received}")


async def measure(
    url: str,
    transport: Transport,
    workload: Workload,
    *,
    concurrency: int,
    seconds: float,
    warmup: float,
    chunks: int,
) -> Cell:
    client = client_for(url, transport, concurrency)
    latencies: list[float] = []
    counting = False
    deadline = time.monotonic() + warmup + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            await one(client, workload, chunks)
            if counting:
                latencies.append(time.monotonic() - started)

    try:
        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        counting = True
        began = time.monotonic()
        await asyncio.gather(*workers)
        elapsed = time.monotonic() - began
    finally:
        await client.aclose()
    return Cell(workload, transport, len(latencies), elapsed, latencies)


def table(cells: list[Cell], chunks: int) -> str:
    names = {"small": "small, non-streamed", "stream": f"{chunks}-chunk stream"}
    lines = [
        "| workload | transport | requests/s | p50 (ms) | p99 (ms) | vs httpx |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for cell in cells:
        base = next(c for c in cells if c.workload == cell.workload and c.transport == "httpx")
        lines.append(
            f"| {names[cell.workload]} | {cell.transport} | {cell.rate:,.0f} | "
            f"{cell.percentile_ms(0.5):.1f} | {cell.percentile_ms(0.99):.1f} | "
            f"{cell.rate / base.rate:.2f}x |"
        )
    return "\n".join(lines)


def speedup(cells: list[Cell], transport: Transport) -> float:
    """Geometric mean over workloads of this transport's rate against httpx's."""
    ratios = []
    for cell in cells:
        if cell.transport == transport:
            base = next(c for c in cells if c.workload == cell.workload and c.transport == "httpx")
            ratios.append(cell.rate / base.rate)
    return statistics.geometric_mean(ratios)


async def run(args: argparse.Namespace, url: str) -> list[Cell]:
    cells = []
    workloads: tuple[Workload, ...] = ("small", "stream")
    for workload in workloads:
        for transport in TRANSPORTS:
            cells.append(
                await measure(
                    url,
                    transport,
                    workload,
                    concurrency=args.concurrency,
                    seconds=args.seconds,
                    warmup=args.warmup,
                    chunks=args.chunks,
                )
            )
    return cells


def event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed, as uvicorn runs the provider."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench transport", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured time per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured time per cell")
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per stream")
    args = parser.parse_args(argv)
    # Checked before the simulator starts; a cell of no time has no percentiles to print.
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.chunks < 1:
        parser.error("--chunks must be at least 1")
    if args.seconds <= 0:
        parser.error("--seconds must be greater than 0")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    with (
        simulator(args.chunks, args.concurrency) as url,
        asyncio.Runner(loop_factory=event_loop) as runner,
    ):
        cells = runner.run(run(args, url))
    print(
        f"One client, {args.concurrency} concurrent, {args.seconds:g} s per cell; "
        f"simulator in its own process. Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs.\n"
    )
    print(table(cells, args.chunks))
    faster = max(TRANSPORTS, key=lambda transport: speedup(cells, transport))
    print(f"\nFaster on average: {faster} (set load_balancer.http_transport = {faster!r}).")
    return 0
