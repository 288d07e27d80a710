"""`tangle ...`: operator tools around the blueprint (`tangle --help` lists them).

Keys never come from the command line (it shows in `ps`): the operator's from
the keystore or OPERATOR_PRIVATE_KEY, a customer's from the variable named by
`--key-env`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from eth_abi.abi import decode, encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from pydantic_core import from_json

from ..config import ConfigError, Settings, load_settings
from ..llm.errors import LlmError
from .abi import (
    ERC20_ALLOWANCE,
    ERC20_APPROVE,
    ERC20_BALANCE_OF,
    ERC20_SYMBOL,
    GET_LAST_HEARTBEAT,
    GET_SERVICE,
    GET_SERVICE_OPERATORS,
    IS_ONLINE,
    IS_OPERATOR_REGISTERED,
    JOB_RESULT_SUBMITTED,
    PENDING_REWARDS,
    REGISTER_OPERATOR,
    STAKING_IS_OPERATOR,
    STAKING_MIN_OPERATOR_STAKE,
    STAKING_OPERATOR_BOND_TOKEN,
    STAKING_REGISTER_OPERATOR,
    STAKING_REGISTER_OPERATOR_WITH_ASSET,
    SUBMIT_JOB,
    uint_topic,
)
from .chain import Chain, ChainError
from .checkpoint import Checkpoint
from .events import decode_job_log
from .keys import OperatorKeyError, operator_account, uncompressed_public_key, write_keystore
from .pricing import model_rate, price_job

SERVICE_STATUS = {0: "pending", 1: "active", 2: "terminated"}


class UsageError(Exception):
    """A bad option or input; printed without a traceback."""


def required_service_id(settings: Settings) -> int:
    if settings.tangle.service_id is None:
        raise UsageError("no service id: set SERVICE_ID or tangle.service_id")
    return settings.tangle.service_id


def key_from_env(name: str) -> LocalAccount:
    value = os.environ.get(name, "").strip()
    if not value:
        raise UsageError(f"${name} is not set (it should hold the customer's private key)")
    try:
        account: LocalAccount = Account.from_key(value)
    except (ValueError, TypeError):
        raise UsageError(f"${name} does not hold a valid private key") from None
    return account


# --- register ---------------------------------------------------------------------


async def _stake(chain: Chain, amount: int | None) -> str:
    """Become a staking operator: native stake, or the bond token where the chain wants one."""
    (token,) = await chain.call(chain.staking, STAKING_OPERATOR_BOND_TOKEN)
    if amount is None:
        (amount,) = await chain.call(chain.staking, STAKING_MIN_OPERATOR_STAKE)
    if int(token, 16) == 0:
        sent = await chain.send(chain.staking, STAKING_REGISTER_OPERATOR, value=amount)
        return f"staked {amount} wei: {sent.tx_hash}"
    if not amount:
        raise UsageError("the staking contract publishes no minimum stake: pass --stake")
    (symbol,) = await chain.call(token, ERC20_SYMBOL)
    (balance,) = await chain.call(token, ERC20_BALANCE_OF, chain.address)
    if balance < amount:
        raise UsageError(
            f"staking needs {amount} base units of {symbol} ({token}); "
            f"{chain.address} has {balance}"
        )
    (allowed,) = await chain.call(token, ERC20_ALLOWANCE, chain.address, chain.staking)
    if allowed < amount:
        await chain.send(token, ERC20_APPROVE, chain.staking, amount)
    sent = await chain.send(chain.staking, STAKING_REGISTER_OPERATOR_WITH_ASSET, token, amount)
    return f"staked {amount} base units of {symbol}: {sent.tx_hash}"


async def register(settings: Settings, args: argparse.Namespace) -> int:
    account = operator_account(settings.tangle)
    chain = Chain(settings.tangle, account)
    blueprint = settings.tangle.blueprint_id
    try:
        (staked,) = await chain.call(chain.staking, STAKING_IS_OPERATOR, account.address)
        if staked:
            print(f"{account.address} is already a staking operator")
        else:
            print(await _stake(chain, args.stake))
        (registered,) = await chain.call(
            chain.tangle, IS_OPERATOR_REGISTERED, blueprint, account.address
        )
        if registered:
            print(f"{account.address} is already registered for blueprint {blueprint}")
            return 0
        api = settings.api
        rpc_address = args.rpc_address or f"http://{api.host}:{api.port}"
        sent = await chain.send(
            chain.tangle,
            REGISTER_OPERATOR,
            blueprint,
            uncompressed_public_key(account),
            rpc_address,
        )
        print(f"registered {account.address} for blueprint {blueprint} at {rpc_address}")
        print(f"transaction: {sent.tx_hash}")
        return 0
    finally:
        await chain.aclose()


# --- submit-job -------------------------------------------------------------------


def _request_from_args(settings: Settings, args: argparse.Namespace) -> str:
    if args.request is not None:
        text: str = sys.stdin.read() if args.request == "-" else Path(args.request).read_text()
        return text
    model = args.model or (settings.models[0].id if settings.models else "")
    kind = {"chat": "chat.completion", "text": "text.completion"}.get(args.kind, "embedding")
    body: dict[str, Any] = {"type": kind, "model": model}
    if args.kind == "chat":
        body["messages"] = [{"role": "user", "content": args.prompt}]
    else:
        body["prompt" if args.kind == "text" else "input"] = args.prompt
    if args.max_tokens is not None and args.kind != "embedding":
        body["max_tokens"] = args.max_tokens
    return json.dumps(body)


async def submit_job(
    chain: Chain, service_id: int, job_index: int, inputs: bytes
) -> tuple[int, int]:
    """Submit as the chain's signer; the call id and the block it landed in."""
    sent = await chain.send(chain.tangle, SUBMIT_JOB, service_id, job_index, inputs)
    for entry in sent.receipt["logs"]:
        try:
            call = decode_job_log(entry)
        except ValueError:
            continue
        if call.service_id == service_id:
            return call.call_id, call.block_number
    raise ChainError("the job was submitted but its JobSubmitted event is missing")


async def wait_for_result(
    chain: Chain, service_id: int, call_id: int, from_block: int, timeout_s: float
) -> tuple[str, bytes]:
    """The first result posted for the call: (operator, output bytes)."""
    topics = ["0x" + JOB_RESULT_SUBMITTED.hex(), uint_topic(service_id), uint_topic(call_id)]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        head = await chain.block_number()
        logs = await chain.get_logs(from_block, head, topics)
        if logs:
            entry = logs[0]
            operator = "0x" + bytes(entry["topics"][3])[-20:].hex()
            (output,) = decode(["bytes"], bytes(entry["data"]))
            return operator, bytes(output)
        await asyncio.sleep(0.5)
    raise ChainError(f"no result for call {call_id} within {timeout_s:g} s")


def decode_string_result(output: bytes) -> str:
    """Pretty JSON for a `(string)` result; hex for anything else.

    Any operator can post a result: pydantic-core parses it, since a deeply nested
    one would crash json.loads in a process that imports web3 (see jobs.py).
    """
    try:
        (text,) = decode(["string"], output)
        return json.dumps(from_json(text), indent=2)
    except Exception:  # not a (string) or not JSON: show what it is
        return "0x" + output.hex()


async def submit_job_command(settings: Settings, args: argparse.Namespace) -> int:
    service_id = required_service_id(settings)
    chain = Chain(settings.tangle, key_from_env(args.key_env))
    try:
        # Job 1 (report_metrics) takes no input.
        inputs = encode(["string"], [_request_from_args(settings, args)]) if args.job == 0 else b""
        call_id, block = await submit_job(chain, service_id, args.job, inputs)
        print(f"submitted call {call_id} (job {args.job}) in block {block}", file=sys.stderr)
        if args.no_wait:
            return 0
        operator, output = await wait_for_result(chain, service_id, call_id, block, args.timeout)
        print(f"result from {operator}:", file=sys.stderr)
        print(decode_string_result(output))
        return 0
    finally:
        await chain.aclose()


def price_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        price = price_job(settings, 0, encode(["string"], [_request_from_args(settings, args)]))
    except LlmError as error:
        raise UsageError(error.message) from None
    rate = model_rate(settings, price.model).model_dump()
    print(json.dumps({**price.__dict__, "rate": rate}, indent=2))
    return 0


# --- status -----------------------------------------------------------------------


async def status(settings: Settings, args: argparse.Namespace) -> int:
    service_id = required_service_id(settings)
    try:
        account: LocalAccount | None = operator_account(settings.tangle)
    except OperatorKeyError:
        account = None
    chain = Chain(settings.tangle, account)
    try:
        head = await chain.block_number()
        chain_id = await chain.chain_id()
        (service,) = await chain.call(chain.tangle, GET_SERVICE, service_id)
        (operators,) = await chain.call(chain.tangle, GET_SERVICE_OPERATORS, service_id)
        rows = []
        for operator in operators:
            (online,) = await chain.call(chain.status_registry, IS_ONLINE, service_id, operator)
            (last,) = await chain.call(
                chain.status_registry, GET_LAST_HEARTBEAT, service_id, operator
            )
            rows.append(
                dict(operator=to_checksum_address(operator), online=online, last_heartbeat=last)
            )
        checkpoint = Checkpoint.for_service(settings.tangle, chain_id)
        svc: dict[str, Any] = {
            "id": service_id,
            "blueprint_id": service[0],
            "owner": to_checksum_address(service[1]),
            "status": SERVICE_STATUS.get(service[11], str(service[11])),
            "operator_count": service[6],
        }
        report: dict[str, Any] = {
            "chain_id": chain_id,
            "head_block": head,
            "service": svc,
            "operators": rows,
            "this_operator": account.address if account else None,
            "last_processed_block": checkpoint.load(),
        }
        if account is not None:
            report["balance_wei"] = await chain.balance()
            (report["claimable_rewards_wei"],) = await chain.call(
                chain.tangle, PENDING_REWARDS, account.address
            )
    finally:
        await chain.aclose()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"chain {chain_id}, head block {head}")
    print(
        f"service {service_id}: {svc['status']}, blueprint {svc['blueprint_id']}, "
        f"owner {svc['owner']}, {svc['operator_count']} operators"
    )
    print("| operator | online | last heartbeat | this operator |")
    print("|---|---|---|---|")
    for row in rows:
        last = row["last_heartbeat"]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(last)) if last else "never"
        mine = "yes" if account and row["operator"] == account.address else ""
        print(f"| {row['operator']} | {'yes' if row['online'] else 'no'} | {when} | {mine} |")
    print(f"last processed block (DATA_DIR checkpoint): {report['last_processed_block']}")
    if account is not None:
        print(f"balance {report['balance_wei']} wei, claimable {report['claimable_rewards_wei']}")
        print("revenue, gas per result and runway: `tangle_*` at the API's /metrics")
    return 0


# --- import-key -------------------------------------------------------------------


def import_key(settings: Settings, args: argparse.Namespace) -> int:
    value = os.environ.get(args.key_env, "").strip().removeprefix("0x")
    if not value:
        raise UsageError(f"${args.key_env} is not set")
    try:
        secret = bytes.fromhex(value)
    except ValueError:
        raise UsageError(f"${args.key_env}: expected 64 hex digits") from None
    path = write_keystore(settings.tangle.keystore_uri, secret)
    print(f"stored the key for {Account.from_key(secret).address} in {path}")
    return 0


# --- parsing ----------------------------------------------------------------------


def _request_options(parser: argparse.ArgumentParser, *, metrics: bool = False) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="text to send (job 0)")
    what.add_argument("--request", metavar="FILE", help="LlmRequest JSON file, or - for stdin")
    if metrics:
        what.add_argument("--metrics", action="store_true", help="job 1: ask for a heartbeat")
    parser.add_argument("--kind", choices=("chat", "text", "embedding"), default="chat")
    parser.add_argument("--model", help="model id (default: the first in [[models]])")
    parser.add_argument("--max-tokens", type=int)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="config file; default: $OPENROUTER_CONFIG")
    parser = argparse.ArgumentParser(
        prog="tangle",
        description="Operator tools for the Tangle blueprint.",
        # A benchmark, so it lives in the bench package beside this one (src/<package>_bench).
        epilog="tangle bench: Tangle jobs per second on a local chain (from a source checkout)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    reg = commands.add_parser("register", parents=[common], help="register this operator")
    reg.add_argument("--rpc-address", help="the address customers reach us at (default: the API)")
    reg.add_argument(
        "--stake",
        type=int,
        help="stake if not yet an operator, in base units of the bond token or wei "
        "(default: the contract's minimum)",
    )

    sub = commands.add_parser("submit-job", parents=[common], help="submit a job as a customer")
    _request_options(sub, metrics=True)
    sub.add_argument("--key-env", default="TANGLE_CUSTOMER_KEY", help="variable with the key")
    sub.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a result")
    sub.add_argument("--no-wait", action="store_true", help="print the call id and exit")

    _request_options(commands.add_parser("price", parents=[common], help="a job's price"))

    st = commands.add_parser("status", parents=[common], help="service, operators, checkpoint")
    st.add_argument("--json", action="store_true")

    imp = commands.add_parser("import-key", parents=[common], help="write a key to the keystore")
    imp.add_argument("--key-env", default="OPERATOR_PRIVATE_KEY", help="variable with the key")

    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "submit-job":
        args.job = 1 if args.metrics else 0
    try:
        settings = load_settings(args.config)
        if args.command == "import-key":
            return import_key(settings, args)
        if args.command == "price":
            return price_command(settings, args)
        handler = {"register": register, "submit-job": submit_job_command, "status": status}
        return asyncio.run(handler[args.command](settings, args))
    except (ConfigError, UsageError, OperatorKeyError, ChainError, OSError) as error:
        print(f"tangle {args.command}: {error}", file=sys.stderr)
        return 1
