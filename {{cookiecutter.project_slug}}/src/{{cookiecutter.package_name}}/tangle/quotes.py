"""Signed job quotes: what a customer passes to `submitJobFromQuote`.

POST /tangle/quote with {"requester": "0x..", "job_index": 0, "inputs": "0x.."} (or, for
job 0, "request": an LlmRequest object, encoded here as the job's `(string)` input).
The answer is tnt-core's JobQuoteDetails, priced by `pricing.price_job`, bound to
keccak256(inputs) and the requester, valid for `quote_ttl_s`, and the operator's
EIP-712 signature over it (domain TangleQuote version 1 on the Tangle contract;
tnt-core src/libraries/SignatureLib.sol).  Signing is rate-limited (`quotes_per_s`,
429 beyond) so that a flood of quote requests cannot take the event loop from the jobs.
"""

from __future__ import annotations

import json
import time
from typing import Any

from eth_abi.abi import encode
from eth_account.messages import encode_typed_data
from eth_utils.address import is_address, to_checksum_address
from eth_utils.crypto import keccak
from pydantic_core import from_json
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..config import Settings
from ..jobs import JOBS
from ..llm.errors import InvalidRequestError, LlmError, OverloadedError
from ..llm.limits import check_json_size
from .chain import Chain, ChainError
from .pricing import EVENT_DRIVEN, price_job, service_terms

JOB_QUOTE_TYPES = {
    "JobQuoteDetails": [
        {"name": "requester", "type": "address"},
        {"name": "serviceId", "type": "uint64"},
        {"name": "jobIndex", "type": "uint8"},
        {"name": "price", "type": "uint256"},
        {"name": "timestamp", "type": "uint64"},
        {"name": "expiry", "type": "uint64"},
        {"name": "confidentiality", "type": "uint8"},
        {"name": "inputsHash", "type": "bytes32"},
    ]
}


def quote_tuple(quote: dict[str, Any]) -> tuple[Any, ...]:
    """A quote as `submitJobFromQuote` takes it (abi.JOB_QUOTE)."""
    details = quote["details"]
    fields = [details[item["name"]] for item in JOB_QUOTE_TYPES["JobQuoteDetails"]]
    fields[3] = int(fields[3])  # the price travels as a decimal string (JSON numbers are doubles)
    fields[7] = bytes.fromhex(fields[7][2:])
    return (tuple(fields), bytes.fromhex(quote["signature"][2:]), quote["operator"])


class Quoter:
    """Prices and signs job quotes with the operator's key."""

    def __init__(self, settings: Settings, chain: Chain, service_id: int) -> None:
        self.settings = settings
        self.chain = chain
        self.service_id = service_id
        self._service: tuple[int, int, int] | None = None  # chain id, pricing, confidentiality
        self._free_at = 0.0

    async def quote(
        self, requester: str, job_index: int, inputs: bytes, *, now: int | None = None
    ) -> dict[str, Any]:
        price = price_job(self.settings, job_index, inputs)
        service_id = self.service_id
        if self._service is None:
            terms = await service_terms(self.chain, service_id)
            self._service = (await self.chain.chain_id(), *terms)
        chain_id, pricing, confidentiality = self._service
        if pricing != EVENT_DRIVEN:  # the contract would keep the payment (JobsSubmission.sol)
            raise InvalidRequestError(f"service {service_id} does not pay operators per job")
        timestamp = int(time.time()) if now is None else now
        details = {
            "requester": to_checksum_address(requester),
            "serviceId": service_id,
            "jobIndex": job_index,
            "price": price.price,
            "timestamp": timestamp,
            "expiry": timestamp + self.settings.job_pricing.quote_ttl_s,
            "confidentiality": confidentiality,
            "inputsHash": "0x" + keccak(inputs).hex(),
        }
        domain = {
            "name": "TangleQuote",
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": self.chain.tangle,
        }
        signer = self.chain.account
        if signer is None:
            raise ChainError("no operator key loaded")
        signature = signer.sign_message(encode_typed_data(domain, JOB_QUOTE_TYPES, details))
        return {
            "details": {**details, "price": str(price.price)},
            "signature": signature.signature.to_0x_hex(),
            "operator": self.chain.address,
            "inputs": "0x" + inputs.hex(),
            "model": price.model,
            "prompt_tokens": price.prompt_tokens,
            "completion_tokens": price.completion_tokens,
        }

    def _take_slot(self) -> None:
        """A token bucket: `quotes_per_s` a second, bursts of one second's worth."""
        now, step = time.monotonic(), 1.0 / self.settings.job_pricing.quotes_per_s
        free_at = max(self._free_at, now) + step
        if free_at - now > 1.0 + step:
            raise OverloadedError("too many quote requests; retry shortly", retry_after=1.0)
        self._free_at = free_at

    async def endpoint(self, request: Request) -> Response:
        from ..api.body import read_body

        limits = self.settings.api
        try:
            raw = await read_body(request, limits.max_body_bytes + 1024)
            check_json_size(raw, limits.max_json_keys, limits.max_json_items)
            body = from_json(raw)
            requester = body.get("requester") if isinstance(body, dict) else None
            if not isinstance(requester, str) or not is_address(requester):
                raise InvalidRequestError("requester: expected an address", param="requester")
            job_index = body.get("job_index", 0)
            if "request" in body:
                inputs = encode(["string"], [json.dumps(body["request"])])
            else:
                inputs = bytes.fromhex(str(body.get("inputs", "")).removeprefix("0x"))
            if job_index not in JOBS or isinstance(job_index, bool):
                raise InvalidRequestError(f"job_index: one of {sorted(JOBS)}", param="job_index")
            self._take_slot()
            return JSONResponse(await self.quote(requester, job_index, inputs))
        except LlmError as error:
            return JSONResponse(error.to_openai(), status_code=error.status_code)
        except ValueError as error:  # not JSON, or inputs not hex
            return JSONResponse(InvalidRequestError(str(error)).to_openai(), status_code=400)
        except ChainError:
            message = "the chain is unreachable; retry shortly"
            return JSONResponse(OverloadedError(message).to_openai(), status_code=503)

    def route(self) -> Route:
        return Route("/tangle/quote", self.endpoint, methods=["POST"])
