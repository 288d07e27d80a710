"""Signed job quotes: what a customer passes to `submitJobFromQuote`.

POST /tangle/quote {"requester": "0x..", "job_index": 0, "inputs": "0x.."} (or "request":
an LlmRequest object, encoded here as job 0's `(string)`) answers tnt-core's
JobQuoteDetails priced by `price_job`, bound to keccak256(inputs) and the requester,
valid `quote_ttl_s`, with the operator's EIP-712 signature (domain TangleQuote 1 on
the Tangle contract: tnt-core src/libraries/SignatureLib.sol).  Quotes are rate-limited
(`quotes_per_s`, else 429) so that a flood cannot take the event loop from the jobs.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable
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

BodyReader = Callable[[Request, int, float], Awaitable[bytes]]  # api.body.read_body

# SignatureLib.JOB_QUOTE_TYPEHASH's type string, as eth-account's typed-data fields.
JOB_QUOTE_TYPE = (
    "address requester,uint64 serviceId,uint8 jobIndex,uint256 price,uint64 timestamp,"
    "uint64 expiry,uint8 confidentiality,bytes32 inputsHash"
)
JOB_QUOTE_FIELDS = [
    dict(zip(("type", "name"), item.split(), strict=True)) for item in JOB_QUOTE_TYPE.split(",")
]


class Quoter:
    """Prices and signs job quotes with the operator's key."""

    def __init__(self, settings: Settings, chain: Chain, service_id: int) -> None:
        self.settings, self.chain, self.service_id = settings, chain, service_id
        self._terms: tuple[int, int, int] | None = None  # chain id, pricing, confidentiality
        self._free_at = 0.0

    async def quote(
        self, requester: str, job_index: int, inputs: bytes, *, now: int | None = None
    ) -> dict[str, Any]:
        price = price_job(self.settings, job_index, inputs)
        if self._terms is None:
            terms = await service_terms(self.chain, self.service_id)
            self._terms = (await self.chain.chain_id(), *terms)
        chain_id, pricing, confidentiality = self._terms
        if pricing != EVENT_DRIVEN:  # the contract would keep the payment (JobsSubmission.sol)
            raise InvalidRequestError(f"service {self.service_id} does not pay operators per job")
        if self.chain.account is None:
            raise ChainError("no operator key loaded")
        timestamp = int(time.time()) if now is None else now
        expiry = timestamp + self.settings.job_pricing.quote_ttl_s
        values: tuple[Any, ...] = (to_checksum_address(requester), self.service_id, job_index)
        values += (price.price, timestamp, expiry, confidentiality, "0x" + keccak(inputs).hex())
        names = [item["name"] for item in JOB_QUOTE_FIELDS]
        details: dict[str, Any] = dict(zip(names, values, strict=True))
        domain = {"name": "TangleQuote", "version": "1", "chainId": chain_id}
        domain["verifyingContract"] = self.chain.tangle
        types = {"JobQuoteDetails": JOB_QUOTE_FIELDS}
        signed = self.chain.account.sign_message(encode_typed_data(domain, types, details))
        return {
            "details": details | {"price": str(price.price)},  # JSON numbers are doubles
            "signature": signed.signature.to_0x_hex(),
            "operator": self.chain.address,
            "inputs": "0x" + inputs.hex(),
            **vars(price),
            "price": str(price.price),
        }

    def _take_slot(self) -> None:
        """A token bucket: `quotes_per_s`, in bursts of one second's worth."""
        now, step = time.monotonic(), 1.0 / self.settings.job_pricing.quotes_per_s
        if max(self._free_at, now) + step - now > 1.0 + step:
            raise OverloadedError("too many quote requests; retry shortly", retry_after=1.0)
        self._free_at = max(self._free_at, now) + step

    async def endpoint(self, request: Request, read_body: BodyReader) -> Response:
        limits = self.settings.api
        try:
            raw = await read_body(request, limits.max_body_bytes + 1024, limits.body_timeout_s)
            check_json_size(raw, limits.max_json_keys, limits.max_json_items)
            body = from_json(raw)
            requester = body.get("requester") if isinstance(body, dict) else None
            if not isinstance(requester, str) or not is_address(requester):
                raise InvalidRequestError("requester: expected an address", param="requester")
            job_index = body.get("job_index", 0)
            if type(job_index) is not int or job_index not in JOBS:
                raise InvalidRequestError(f"job_index: one of {sorted(JOBS)}", param="job_index")
            inputs = bytes.fromhex(str(body.get("inputs", "")).removeprefix("0x"))
            if "request" in body:
                inputs = encode(["string"], [json.dumps(body["request"])])
            self._take_slot()
            return JSONResponse(await self.quote(requester, job_index, inputs))
        except LlmError as error:
            return JSONResponse(error.to_openai(), status_code=error.status_code)
        except ValueError as error:  # not JSON, or inputs not hex
            return JSONResponse(InvalidRequestError(str(error)).to_openai(), status_code=400)
        except ChainError:
            unreachable = OverloadedError("the chain is unreachable; retry shortly")
            return JSONResponse(unreachable.to_openai(), status_code=503)

    def route(self, read_body: BodyReader) -> Route:
        """Mounted by the API beside the jobs, which lends its bounded body reader."""
        endpoint = functools.partial(self.endpoint, read_body=read_body)
        return Route("/tangle/quote", endpoint, methods=["POST"])
