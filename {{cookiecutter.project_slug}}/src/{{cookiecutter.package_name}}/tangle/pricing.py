"""What a job costs in the payment token ([job_pricing]), and whether a call pays it.

A job is priced as the API counts usage: prompt tokens as the balancer estimates them,
plus every completion token it allows (max_tokens, else the model's maximum).  tnt-core
pays a call's `getJobCall(..).payment` (RFQ calls: our signed `getJobQuotedPrice`) out
only on EventDriven services (JobsSubmission.sol); elsewhere a call pays us nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from decimal import Decimal

from ..backoff import backoff_s
from ..config import JobRate, Settings
from ..jobs import JOBS, error_output
from ..llm.errors import InvalidRequestError, LlmError
from ..llm.models import ChatCompletionRequest, EmbeddingRequest, TextCompletionRequest
from .abi import GET_JOB_CALL, GET_SERVICE
from .abi import GET_JOB_QUOTED_PRICE as GET_QUOTED
from .chain import Chain, ChainError
from .events import JobCall

log = logging.getLogger(__name__)
EVENT_DRIVEN = 2  # Types.PricingModel


async def service_terms(chain: Chain, service_id: int) -> tuple[int, int]:
    """The service's pricing model and confidentiality policy (Types.Service)."""
    (service,) = await chain.call(chain.tangle, GET_SERVICE, service_id)
    return int(service[10]), int(service[12])


@dataclass(frozen=True)
class JobPrice:
    model: str
    prompt_tokens: int
    completion_tokens: int
    price: int


def model_rate(settings: Settings, model: str) -> JobRate:
    """[job_pricing.models], else the listing's USD a token x `units_per_usd`, rounded up."""
    pricing = settings.job_pricing
    if model in pricing.models:
        return pricing.models[model]
    units = pricing.units_per_usd
    listed = next((item.pricing for item in settings.models if item.id == model), None)
    if listed is None or not units:
        return JobRate()
    names = ("prompt", "completion", "request")
    return JobRate(**{name: math.ceil(Decimal(getattr(listed, name)) * units) for name in names})


def price_job(settings: Settings, job_index: int, inputs: bytes) -> JobPrice:
    """The price of a call's inputs; an LlmError when they can be neither priced nor answered."""
    job = JOBS.get(job_index)
    limit: int | None
    request = job.decode(inputs, limits=settings.api) if job is not None else None
    if isinstance(request, EmbeddingRequest):
        text, limit = "\n".join(request.inputs()), 0
    elif isinstance(request, ChatCompletionRequest):
        text, limit = request.prompt_text(), request.token_limit()
    elif isinstance(request, TextCompletionRequest):
        text, limit = request.prompt_text(), request.max_tokens
    else:  # job 1, and unknown jobs (answered with an error): no work to pay for
        return JobPrice("", 0, 0, 0)
    rate = model_rate(settings, request.model)
    model = next((item for item in settings.models if item.id == request.model), None)
    if limit is None and model is not None:
        limit = model.max_output_length or model.context_length
    if limit is None and rate.completion:
        why = "set max_tokens: this operator prices a job by the longest answer it allows"
        raise InvalidRequestError(why, param="max_tokens")
    prompt = math.ceil(len(text) / settings.load_balancer.chars_per_token)
    price = max(rate.request, prompt * rate.prompt + (limit or 0) * rate.completion)
    return JobPrice(request.model, prompt, limit or 0, price)


class Payments:
    """The runner's check before a job's work, and the money seen in a term (/metrics)."""

    def __init__(self, settings: Settings, chain: Chain) -> None:
        self.settings, self.chain = settings, chain
        pricing = settings.job_pricing
        self.priced = bool(pricing.models) or pricing.units_per_usd > 0
        self.underpaid = 0
        self.revenue: dict[str, int] = {}
        self._paid: dict[int, tuple[str, int]] = {}
        self._event_driven: bool | None = None

    async def _paying(self, call: JobCall) -> tuple[int, bool]:
        """What the call pays us as the contract recorded it, and whether we quoted it."""
        ids, failures = (call.service_id, call.call_id), 0
        while True:
            try:
                if self._event_driven is None:
                    terms = await service_terms(self.chain, call.service_id)
                    self._event_driven = terms[0] == EVENT_DRIVEN
                if not self._event_driven:
                    return 0, False
                ((*_, rfq, payment),) = await self.chain.call(self.chain.tangle, GET_JOB_CALL, *ids)
                if rfq:
                    us = self.chain.address
                    (payment,) = await self.chain.call(self.chain.tangle, GET_QUOTED, *ids, us)
                return int(payment), bool(rfq)
            except ChainError as error:
                failures += 1
                log.warning("call %d: cannot read its payment (%s)", call.call_id, error)
                await asyncio.sleep(backoff_s(failures, base_s=1.0, cap_s=5.0))

    async def check(self, call: JobCall) -> bytes | None:
        """None: do the work; else the error result to post instead (b"": post nothing)."""
        if not self.priced:
            return None
        try:
            price = price_job(self.settings, call.job_index, call.inputs)
        except LlmError:
            return None  # the job answers its own input error, no work done
        payment, quoted = await self._paying(call)
        if payment >= price.price or (quoted and payment > 0):  # our signature stands
            self._paid[call.call_id] = (price.model, payment)
            return None
        self.underpaid += 1
        message = f"this job costs {price.price} and the call pays {payment}"
        log.warning("call %d underpaid: %s", call.call_id, message)
        if self.settings.job_pricing.on_underpaid == "skip":
            return b""
        return error_output(InvalidRequestError(message, code="underpaid"))

    def answered(self, call_id: int) -> None:
        model, payment = self._paid.pop(call_id, ("", 0))
        if payment:
            self.revenue[model] = self.revenue.get(model, 0) + payment
