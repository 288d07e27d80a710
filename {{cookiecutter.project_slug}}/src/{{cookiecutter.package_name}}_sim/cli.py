"""`sim`: run one simulated LLM server until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import get_args

from pydantic import ValidationError

from .config import Dialect, SimConfig
from .server import SimHandle


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sim", description=__doc__)
    add = parser.add_argument
    add("--dialect", choices=get_args(Dialect), default="openai", help="which server to imitate")
    add("--port", type=int, default=0, help="listen port on 127.0.0.1 (0: any free port)")
    add("--model", action="append", dest="models", default=[], help="a model name (repeatable)")
    add("--context-length", type=int, default=4096)
    add("--ttft", type=float, default=0.0, help="seconds before the first token")
    add("--tps", type=float, default=0.0, help="tokens per second (0: as fast as possible)")
    add("--output-tokens", type=int, default=16, help="length of a natural answer")
    add("--max-concurrency", type=int, default=4)
    add("--max-queue", type=int, default=None, help="waiting requests allowed (default: unbounded)")
    add("--error-rate", type=float, default=0.0)
    add("--hang-rate", type=float, default=0.0)
    add("--drop-rate", type=float, default=0.0)
    add("--loading", type=float, default=0.0, help="seconds of simulated model loading")
    add("--split-utf8", action="store_true", help="split stream chunks inside characters")
    add("--seed", type=int, default=0)
    add("--api-key", default=None, help="require this Bearer key")
    add("--no-metrics", action="store_true", help="llama.cpp without --metrics")
    return parser


def config_from(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        dialect=args.dialect,
        models=args.models,
        context_length=args.context_length,
        ttft_s=args.ttft,
        tokens_per_s=args.tps,
        output_tokens=args.output_tokens,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        error_rate=args.error_rate,
        hang_rate=args.hang_rate,
        drop_rate=args.drop_rate,
        loading_s=args.loading,
        split_utf8=args.split_utf8,
        seed=args.seed,
        api_key=args.api_key,
        metrics_enabled=not args.no_metrics,
    )


async def _serve(config: SimConfig, port: int) -> None:
    handle = SimHandle(config, port)
    await handle.start()
    print(
        f"sim: {config.dialect} serving {', '.join(config.model_names())} at {handle.url}",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await handle.stop()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from(args)
    except ValidationError as error:
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"])
            print(f"sim: {field}: {problem['msg']}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, args.port))
    return 0
