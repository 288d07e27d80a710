"""Paid jobs: prices from [job_pricing], the runner's payment check, and signed quotes.

The chain tests run on tnt-core itself: its submitJobFromQuote checks our
EIP-712 signature, and its reverts (decoded) are what refuses a tampered quote.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_abi.abi import decode
from eth_account import Account
from starlette.applications import Starlette

from {{ cookiecutter.package_name }}.api.body import read_body
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.llm.errors import InvalidRequestError
from {{ cookiecutter.package_name }}.tangle.abi import (
    JOB_SUBMITTED,
    JOB_SUBMITTED_FROM_QUOTE,
    PENDING_REWARDS,
    REGISTER_OPERATOR,
    SUBMIT_JOB,
    SUBMIT_JOB_FROM_QUOTE,
    CustomError,
    Function,
)
from {{ cookiecutter.package_name }}.tangle.chain import Chain, Reverted
from {{ cookiecutter.package_name }}.tangle.cli import main as tangle_main
from {{ cookiecutter.package_name }}.tangle.cli import wait_for_result
from {{ cookiecutter.package_name }}.tangle.events import JobCall, decode_job_log
from {{ cookiecutter.package_name }}.tangle.keys import uncompressed_public_key
from {{ cookiecutter.package_name }}.tangle.pricing import JobPrice, model_rate, price_job
from {{ cookiecutter.package_name }}.tangle.quotes import JOB_QUOTE_FIELDS, Quoter

from .conftest import CUSTOMER_KEY, MODEL, OPERATOR, OPERATOR_KEY, OperatorFactory, local_tangle
from .test_e2e import completed, job_input, submit_job

# A blueprint like LocalTestnet's but EventDriven: tnt-core pays operators per job only there.
_JOB = "(string,string,string,bytes,bytes)"
_SOURCE = (
    "(uint8,(string,string,string),(uint8,uint8,string,string),(uint8,string,string),"
    "(string,string,string),(uint8,uint8,string,bytes32)[])"
)
CREATE_BLUEPRINT = Function(
    "createBlueprint((string,bytes32,address,uint32,bool,(uint8,uint8,uint32,uint32,uint256,"
    f"uint64,uint256),(string,string,string,string,string,string,string,string,string),{_JOB}[],"
    f"bytes,bytes,{_SOURCE}[],uint8[]))",
    "uint64",
)
REQUEST_SERVICE = Function(
    "requestService(uint64,address[],bytes,address[],uint64,address,uint256,uint8)", "uint64"
)
APPROVE_SERVICE = Function(
    "approveService((uint64,((uint8,address),uint16)[],uint256[4],uint256[2],"
    "(uint8,bytes32,bytes32,uint64)[]))"
)
ZERO = "0x" + "00" * 20
# What submitJobFromQuote refuses a quote with (tnt-core Errors.sol, SignatureLib.sol).
QUOTE_ERRORS = {
    "0x" + error.selector.hex(): error.name
    for error in map(
        CustomError,
        (
            "QuoteExpired(address,uint64)",
            "InvalidQuoteSignature(address)",
            "QuoteAlreadyUsed(address)",
            "JobQuoteRequesterMismatch(address,address,address)",
            "JobQuoteInputsMismatch(address,bytes32,bytes32)",
        ),
    )
}

# Token prices dominate the floor: "Say hello" is 3 prompt tokens, max_tokens 4.
RATES = {"prompt": 1000, "completion": 2000, "request": 100}
PRICE = 3 * 1000 + 4 * 2000
PRICING = f'\n[job_pricing.models."{MODEL}"]\n' + "".join(f"{k} = {v}\n" for k, v in RATES.items())


def priced(**pricing: Any) -> Settings:
    return Settings.model_validate(
        {
            "nodes": [{"name": "n", "url": "http://127.0.0.1:9", "models": [MODEL]}],
            "models": [{"id": MODEL, "max_output_length": 64}],
            "job_pricing": {"models": {MODEL: RATES}} | pricing,
        }
    )


def chat(content: str, max_tokens: int | None = 4) -> bytes:
    body: dict[str, Any] = {
        "type": "chat.completion",
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return job_input(body)


async def event_driven_service(customer: Chain, operator: Chain, rate: int) -> tuple[int, int]:
    """A new EventDriven blueprint (`rate` a job) and an active service of operator #1 on it."""
    source = (0, ("registry.local", "blueprint", "latest"), (1, 0, "", ""), (0, "", ""))
    source += (("", "", ""), [(5, 1, "blueprint-binary", b"\x12" * 32)])
    metadata = ("paid", "", "", "", "", "", "", "MIT", "")
    definition = ("http://localhost:3333", b"\x01" * 32, ZERO, 0, True, (1, 2, 1, 0, 0, 0, rate))
    definition += (metadata,)
    definition += ([("job", "", "", b"", b"")] * 2, b"", b"", [source], [0, 1])
    sent = await customer.send(customer.tangle, CREATE_BLUEPRINT, definition)
    blueprint = _indexed(sent.receipt["logs"][0], 1)
    await operator.send(
        operator.tangle,
        REGISTER_OPERATOR,
        blueprint,
        uncompressed_public_key(operator.account),  # type: ignore[arg-type]
        "http://operator1.local",
    )
    request = (blueprint, [OPERATOR], b"", [], 0, ZERO, 0, 0)
    sent = await customer.send(customer.tangle, REQUEST_SERVICE, *request)
    request_id = _indexed(sent.receipt["logs"][0], 1)
    sent = await operator.send(
        operator.tangle, APPROVE_SERVICE, (request_id, [], [0] * 4, [0] * 2, [])
    )
    activated = [log for log in sent.receipt["logs"] if len(log["topics"]) == 4]
    return blueprint, _indexed(activated[-1], 1)


async def local_paid_service(rpc_url: str, rate: int = 0) -> tuple[int, int]:
    """README, Getting paid: such a service on a local testnet; (blueprint id, service id)."""
    customer = Chain(local_tangle(rpc_url), Account.from_key(CUSTOMER_KEY))
    operator = Chain(local_tangle(rpc_url), Account.from_key(OPERATOR_KEY))
    try:
        return await event_driven_service(customer, operator, rate)
    finally:
        await customer.aclose()
        await operator.aclose()


def quote_tuple(quote: dict[str, Any]) -> tuple[Any, ...]:
    """A quote from the endpoint as `submitJobFromQuote` takes it."""
    fields = [quote["details"][item["name"]] for item in JOB_QUOTE_FIELDS]
    fields[3], fields[7] = int(fields[3]), bytes.fromhex(fields[7][2:])
    return (tuple(fields), bytes.fromhex(quote["signature"][2:]), quote["operator"])


def _indexed(log: Any, index: int) -> int:
    topic = log["topics"][index]
    return int(topic, 16) if isinstance(topic, str) else int.from_bytes(bytes(topic), "big")


async def submitted(sent: Any) -> JobCall:
    (call,) = [decode_job_log(log) for log in sent.receipt["logs"] if _topic0(log) in JOB_TOPICS]
    return call


async def answer_of(customer: Chain, service_id: int, call: JobCall) -> dict[str, Any]:
    _operator, output = await wait_for_result(
        customer, service_id, call.call_id, call.block_number, timeout_s=30
    )
    value: dict[str, Any] = json.loads(decode(["string"], output)[0])
    return value


# --- prices --------------------------------------------------------------------------


def test_a_jobs_price_is_its_prompt_tokens_and_the_completion_it_allows() -> None:
    settings = priced()
    assert price_job(settings, 0, chat("Say hello")) == JobPrice(MODEL, 3, 4, PRICE)
    # 400 characters are 100 tokens at 4 a token; without max_tokens, the model's maximum.
    assert price_job(settings, 0, chat("x" * 400, None)) == JobPrice(
        MODEL, 100, 64, 100 * 1000 + 64 * 2000
    )
    embedding = job_input({"type": "embedding", "model": MODEL, "input": ["abcd", "efg"]})
    assert price_job(settings, 0, embedding) == JobPrice(MODEL, 2, 0, 2 * 1000)
    floor = priced(models={MODEL: RATES | {"request": 10**6}})
    assert price_job(floor, 0, chat("Say hello")).price == 10**6
    assert price_job(settings, 1, b"anything").price == 0  # report_metrics


def test_prices_follow_the_listing_when_a_model_has_no_line() -> None:
    # Native ETH at 3,000 USD: 10**18 / 3000 wei a dollar.
    listing = {"prompt": "0.0000005", "completion": "0.0000015", "request": "0.001"}
    settings = Settings.model_validate(
        {
            "nodes": [{"name": "n", "url": "http://127.0.0.1:9", "models": [MODEL]}],
            "models": [{"id": MODEL, "pricing": listing}],
            "job_pricing": {"units_per_usd": "333333333333333"},
        }
    )
    rate = model_rate(settings, MODEL)  # rounded up: never below the listing
    assert (rate.prompt, rate.completion, rate.request) == (166666667, 500000000, 333333333334)
    with pytest.raises(InvalidRequestError) as caught:  # no bound on the answer: no price
        price_job(settings, 0, chat("Say hello", None))
    assert caught.value.param == "max_tokens"


def test_tangle_price_prints_a_jobs_price(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[nodes]]\nname = "n"\nurl = "http://127.0.0.1:9"\nmodels = ["{MODEL}"]\n'
        f'[[models]]\nid = "{MODEL}"\n' + PRICING
    )
    argv = ["price", "--config", str(config), "--prompt", "Say hello", "--max-tokens", "4"]
    assert tangle_main(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["price"], shown["prompt_tokens"], shown["rate"]) == (PRICE, 3, RATES)
    assert tangle_main(argv[:-2]) == 1  # no max_tokens and no model maximum
    assert "max_tokens" in capsys.readouterr().err


# --- the quote endpoint ----------------------------------------------------------------


async def test_the_quote_endpoint_refuses_bad_input_and_floods(
    customer: Chain, operator: Chain
) -> None:
    _blueprint, service_id = await event_driven_service(customer, operator, 0)
    settings = priced(quotes_per_s=0.01)  # one quote, then none for 100 s
    settings.api = settings.api.model_copy(update={"max_body_bytes": 4096})
    app = Starlette(routes=[Quoter(settings, operator, service_id).route(read_body)])
    good = {"requester": OPERATOR, "inputs": "0x" + chat("Say hello").hex()}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://quote") as client:

        async def post(body: Any) -> httpx.Response:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            return await client.post("/tangle/quote", content=content)

        refused = [
            await post(good | {"requester": "0x1234"}),
            await post(good | {"inputs": "0xnot-hex"}),
            await post(good | {"job_index": 9}),
            await post(good | {"job_index": 0.0}),
            await post(b"[" * 3000),  # deep nesting
            await post(good | {"inputs": "0x" + "00" * (settings.api.max_body_bytes + 4096)}),
        ]
        assert [r.status_code for r in refused] == [400, 400, 400, 400, 400, 413]
        assert refused[0].json()["error"]["param"] == "requester"
        first, second = await post(good), await post(good)
    assert first.status_code == 200, first.text
    assert first.json()["details"]["price"] == str(PRICE)
    assert first.json()["details"]["serviceId"] == service_id
    assert second.status_code == 429


async def test_no_quote_for_a_service_that_does_not_pay_per_job(operator: Chain) -> None:
    quoter = Quoter(priced(), operator, 0)
    with pytest.raises(InvalidRequestError) as caught:  # service 0 is PayOnce
        await quoter.quote(OPERATOR, 0, chat("Say hello"))
    assert caught.value.message == "service 0 does not pay operators per job"
    with pytest.raises(InvalidRequestError) as caught:  # not a job input: never priced
        await quoter.quote(OPERATOR, 0, chat("Say hello")[:-32])
    assert "expected ABI-encoded (string)" in caught.value.message


# --- on the chain ----------------------------------------------------------------------

JOB_TOPICS = {"0x" + topic.hex() for topic in (JOB_SUBMITTED, JOB_SUBMITTED_FROM_QUOTE)}


def _topic0(log: Any) -> str:
    topic = log["topics"][0]
    return topic if isinstance(topic, str) else "0x" + bytes(topic).hex()


async def test_a_call_paying_less_than_its_price_gets_the_underpaid_error(
    start_operator: OperatorFactory, customer: Chain, operator: Chain
) -> None:
    rate = PRICE - 1  # what every call of this service pays (getJobEventRate)
    blueprint, service_id = await event_driven_service(customer, operator, rate)
    ids = {"BLUEPRINT_ID": str(blueprint), "SERVICE_ID": str(service_id)}
    run = await start_operator(tangle=PRICING, **ids)
    calls = []
    for inputs in (chat("Say hello"), chat("Hi", 1)):  # costs PRICE, then 1,000 + 2,000
        sent = await customer.send(customer.tangle, SUBMIT_JOB, service_id, 0, inputs, value=rate)
        calls.append(await submitted(sent))
    underpaid, paid = [await answer_of(customer, service_id, call) for call in calls]
    assert underpaid["error"]["code"] == "underpaid"
    assert underpaid["error"]["message"] == f"this job costs {PRICE} and the call pays {rate}"
    assert paid["type"] == "chat.completion"
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{run.api_port}/metrics")).text
    assert "tangle_calls_underpaid_total 1.0" in metrics
    assert "tangle_revenue_total{model=" + f'"{MODEL}"' + f"}} {float(rate)}" in metrics
    assert await run.stop() == 0


async def test_unpaid_calls_on_a_service_that_does_not_pay_per_job(
    start_operator: OperatorFactory, customer: Chain
) -> None:
    run = await start_operator(tangle=PRICING + "\n[job_pricing]\non_underpaid = 'skip'\n")
    # Service 0 is PayOnce: its calls pay nothing per job; `skip` posts no result at all.
    call_id, _block = await submit_job(customer, 0, 0, chat("Say hello"))
    await run.wait_for_log(f"call {call_id} underpaid: this job costs {PRICE} and the call pays 0")
    assert await run.stop() == 0
    assert "stopped; 0 calls answered" in run.output()
    assert not await completed(customer, call_id)


async def _refusal(
    customer: Chain, service_id: int, inputs: bytes, quote: dict[str, Any], value: int
) -> str:
    with pytest.raises(Reverted) as caught:
        args = (service_id, 0, inputs, [quote_tuple(quote)])
        await customer.send(customer.tangle, SUBMIT_JOB_FROM_QUOTE, *args, value=value)
    name = caught.value.revert.name
    return QUOTE_ERRORS.get(name[:10], name)


async def test_a_quoted_job_is_paid_and_answered_and_a_changed_quote_is_refused(
    start_operator: OperatorFactory, customer: Chain, operator: Chain
) -> None:
    blueprint, service_id = await event_driven_service(customer, operator, 0)
    ids = {"BLUEPRINT_ID": str(blueprint), "SERVICE_ID": str(service_id)}
    run = await start_operator(tangle=PRICING, **ids)
    await run.wait_for_log("scanning for jobs")
    inputs = chat("Say hello")
    url = f"http://127.0.0.1:{run.api_port}/tangle/quote"
    async with httpx.AsyncClient() as client:
        body = {"requester": customer.address, "request": json.loads(decode(["string"], inputs)[0])}
        response = await client.post(url, json=body)
        stranger = Account.create().address
        for_stranger = await client.post(url, json=body | {"requester": stranger})
    quote = response.json()
    assert response.status_code == 200, quote
    assert quote["inputs"] == "0x" + inputs.hex()
    assert (quote["details"]["price"], quote["operator"]) == (str(PRICE), OPERATOR)

    cheaper = {**quote, "details": {**quote["details"], "price": str(PRICE - 1)}}
    refusals = [
        await _refusal(customer, service_id, inputs, cheaper, PRICE - 1),
        await _refusal(customer, service_id, chat("Say hello!"), quote, PRICE),
        await _refusal(customer, service_id, inputs, for_stranger.json(), PRICE),
    ]
    stale = await Quoter(priced(), operator, service_id).quote(
        customer.address, 0, inputs, now=int(time.time()) - 3600
    )
    refusals.append(await _refusal(customer, service_id, inputs, stale, PRICE))
    assert refusals == [
        "InvalidQuoteSignature",
        "JobQuoteInputsMismatch",
        "JobQuoteRequesterMismatch",
        "QuoteExpired",
    ]

    (rewards_before,) = await customer.call(customer.tangle, PENDING_REWARDS, OPERATOR)
    args = (service_id, 0, inputs, [quote_tuple(quote)])
    sent = await customer.send(customer.tangle, SUBMIT_JOB_FROM_QUOTE, *args, value=PRICE)
    call = await submitted(sent)
    assert call.from_quote
    answer = await answer_of(customer, service_id, call)
    assert answer["type"] == "chat.completion"
    (rewards_after,) = await customer.call(customer.tangle, PENDING_REWARDS, OPERATOR)
    earned = rewards_after - rewards_before
    assert 0 < earned <= PRICE
    assert await _refusal(customer, service_id, inputs, quote, PRICE) == "QuoteAlreadyUsed"

    # A price this operator signed is honoured, even below what it charges now.
    cheap = priced(models={MODEL: {"prompt": 10, "completion": 20, "request": 100}})
    old = await Quoter(cheap, operator, service_id).quote(customer.address, 0, inputs)
    assert old["details"]["price"] == "110"
    args = (service_id, 0, inputs, [quote_tuple(old)])
    sent = await customer.send(customer.tangle, SUBMIT_JOB_FROM_QUOTE, *args, value=110)
    honoured = await answer_of(customer, service_id, await submitted(sent))
    assert honoured["type"] == "chat.completion"

    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{run.api_port}/metrics")).text
    assert "tangle_revenue_total{model=" + f'"{MODEL}"' + f"}} {float(PRICE + 110)}" in metrics
    assert "tangle_calls_underpaid_total 0.0" in metrics
    assert await run.stop() == 0
    gas = [line for line in metrics.splitlines() if line.startswith("tangle_gas_per_result_wei")]
    print(f"\npaid job: price {PRICE}, paid {PRICE}, operator's rewards +{earned}; {gas}")
