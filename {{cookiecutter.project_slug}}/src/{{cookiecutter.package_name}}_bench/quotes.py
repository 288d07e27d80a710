"""`bench quotes`: signed job quotes per second of CPU, as POST /tangle/quote makes them.

Each quote prices a chat job from its input (`price_job`: ABI and JSON decoding,
the token estimate) and signs tnt-core's JobQuoteDetails with EIP-712 (`Quoter.quote`),
in this one process.  The service's terms come from a stand-in for the chain, read
once as on a real one; the figure is CPU time, so a busy machine does not lower it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any, cast

from eth_abi.abi import encode
from eth_account import Account

from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.tangle.chain import Chain
from {{ cookiecutter.package_name }}.tangle.quotes import Quoter

# anvil's public dev key #1 (local chains only) and the local testnet's Tangle contract.
KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
TANGLE = "0x0165878A594ca255338adfa4d48449f69242Eb8F"
REQUESTER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


class _Terms:
    """The chain as far as a quote reads it: an EventDriven service, chain id 31337."""

    account = Account.from_key(KEY)
    address = account.address
    tangle = TANGLE

    async def call(self, *_args: Any) -> tuple[Any, ...]:
        return ((0,) * 10 + (2, 1, 0),)

    async def chain_id(self) -> int:
        return 31337


async def measure(prompt_chars: int, count: int) -> float:
    settings = Settings.model_validate(
        {"job_pricing": {"models": {"m": {"prompt": 1000, "completion": 2000}}}}
    )
    quoter = Quoter(settings, cast(Chain, _Terms()), 1)
    request = {"type": "chat.completion", "model": "m", "max_tokens": 64}
    request["messages"] = [{"role": "user", "content": "x" * prompt_chars}]
    inputs = encode(["string"], [json.dumps(request)])
    await quoter.quote(REQUESTER, 0, inputs)  # the terms are read once, as in `run`
    started = time.process_time()
    for _ in range(count):
        await quoter.quote(REQUESTER, 0, inputs)
    return count / (time.process_time() - started)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench quotes", description=__doc__)
    parser.add_argument("--count", type=int, default=500, help="quotes per row")
    parser.add_argument("--chars", type=int, nargs="+", default=[100, 10_000, 100_000])
    args = parser.parse_args(argv)
    if args.count < 1 or min(args.chars) < 1:
        parser.error("--count and --chars must be at least 1")
    print("| prompt characters | quotes | quotes per CPU second |")
    print("|---:|---:|---:|")
    for chars in args.chars:
        rate = asyncio.run(measure(chars, args.count))
        print(f"| {chars:,} | {args.count:,} | {rate:,.0f} |")
    return 0
