"""The blueprint's jobs: what a Tangle job call asks for and what goes back on chain.

Each job has an index (the `jobIndex` the customer submits), typed decode and
encode of its Solidity ABI values, and a handler that uses the same context
and balancer as the HTTP API.  A job always produces a result: bad input, an
unknown model or a full fleet become an error result the customer can read,
never a silent drop.  To add a job, subclass `Job` and list it in `JOBS`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from eth_abi.abi import decode, encode
from pydantic import ValidationError
from pydantic_core import from_json

from .balancer.admission import patience
from .config import ApiSettings
from .context import Context
from .llm.errors import (
    InvalidRequestError,
    LlmError,
    PayloadTooLargeError,
    UpstreamTimeoutError,
)
from .llm.limits import check_json_size
from .llm.models import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    TextCompletionRequest,
    TextCompletionResponse,
)

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")

LlmRequest = ChatCompletionRequest | TextCompletionRequest | EmbeddingRequest
LlmResponse = ChatCompletionResponse | TextCompletionResponse | EmbeddingResponse

# The seed's internally tagged LlmRequest/LlmResponse: `type` beside the OpenAI fields.
REQUEST_TYPES: dict[str, type[LlmRequest]] = {
    "chat.completion": ChatCompletionRequest,
    "text.completion": TextCompletionRequest,
    "embedding": EmbeddingRequest,
}
RESPONSE_TAGS: dict[type[LlmResponse], str] = {
    ChatCompletionResponse: "chat.completion",
    TextCompletionResponse: "text.completion",
    EmbeddingResponse: "embedding",
}


@dataclass(frozen=True)
class JobEnv:
    """What a handler may use: the shared context, the call, and the chain's heartbeat."""

    context: Context
    service_id: int
    call_id: int
    caller: str
    # Posts this operator's metrics to OperatorStatusRegistry; returns the tx hash
    # (None in --dry-run).  Injected by the runner so jobs need no chain code.
    heartbeat: Callable[[], Awaitable[str | None]]
    # Wraps the (synchronous) decoding of the input, so that the runner can tell
    # which call was being read if that kills the process (see tangle/poison.py).
    reading_input: Callable[[], AbstractContextManager[None]] = field(
        default=contextlib.nullcontext
    )


def error_output(error: LlmError) -> bytes:
    """OpenAI's error object, tagged like every result, as the `(string)` every job answers."""
    return encode(["string"], [json.dumps({"type": "error", **error.to_openai()})])


def _abi_string(data: bytes, what: str, limit: int) -> str:
    # The ABI head and length word add 64 bytes to the text; beyond that, refuse before decoding.
    if len(data) > limit + 64:
        raise PayloadTooLargeError(f"{what} exceeds the limit of {limit} bytes")
    try:
        (text,) = decode(["string"], data)
    except Exception:  # eth-abi raises several unrelated types on bad input
        raise InvalidRequestError(
            f"{what}: expected ABI-encoded (string) holding JSON, got {len(data)} bytes"
        ) from None
    return str(text)


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "(body)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_llm_request(text: str, *, limits: ApiSettings) -> LlmRequest:
    """An LlmRequest JSON (`type` plus the OpenAI body) as a typed request.

    The text comes from anyone who can submit a job: it is bounded in size and in
    JSON values as the HTTP API's bodies are (validation holds the event loop that
    serves the API too), and parsed by pydantic-core, which is linear and refuses deep nesting with
    ValueError.  (json.loads is not safe here: web3's dependency py_ecc raises the
    recursion limit, and the C decoder then overflows the stack on deep input.)
    """
    if len(text) > limits.max_body_bytes:
        raise PayloadTooLargeError(f"request exceeds the limit of {limits.max_body_bytes} bytes")
    raw = text.encode()
    check_json_size(raw, limits.max_json_keys, limits.max_json_items)
    try:
        body = from_json(raw)
    except ValueError as error:
        raise InvalidRequestError(f"request is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("request must be a JSON object")
    kind = body.pop("type", None)
    request_type = REQUEST_TYPES.get(kind) if isinstance(kind, str) else None
    if request_type is None:
        raise InvalidRequestError(
            f"request type must be one of {', '.join(REQUEST_TYPES)}; got {kind!r}",
            param="type",
        )
    try:
        request = request_type.model_validate(body)
    except ValidationError as error:
        raise InvalidRequestError(f"invalid {kind} request: {_validation_message(error)}") from None
    if isinstance(request, (ChatCompletionRequest, TextCompletionRequest)) and request.stream:
        # A job has one result; the answer is collected whole.
        request = request.model_copy(update={"stream": False, "stream_options": None})
    return request


class Job(abc.ABC, Generic[In, Out]):
    """One job: typed ABI codec plus handler.  `run` turns any failure into an error result."""

    index: ClassVar[int]
    name: ClassVar[str]

    @abc.abstractmethod
    def decode(self, inputs: bytes, *, limits: ApiSettings) -> In:
        """The job's input; raise InvalidRequestError naming what is wrong.

        The input is untrusted: hold it to the HTTP API's `limits` (`max_body_bytes`;
        JSON through `check_json_size`) and parse JSON with `pydantic_core.from_json`,
        never `json.loads`.
        """

    @abc.abstractmethod
    def encode(self, output: Out) -> bytes:
        """The bytes submitted on chain."""

    @abc.abstractmethod
    async def handle(self, env: JobEnv, request: In) -> Out:
        """Do the work; LlmError subclasses become error results."""

    def encode_error(self, error: LlmError) -> bytes:
        return error_output(error)

    async def run(self, env: JobEnv, inputs: bytes, *, timeout_s: float) -> bytes:
        try:
            with env.reading_input():
                request = self.decode(inputs, limits=env.context.settings.api)
            async with asyncio.timeout(timeout_s):
                with patience(timeout_s):  # paid for: it waits its turn, no early 429
                    output = await self.handle(env, request)
            return self.encode(output)
        except LlmError as error:
            return self.encode_error(error)
        except TimeoutError:
            return self.encode_error(UpstreamTimeoutError(f"no answer within {timeout_s:g} s"))
        except Exception as error:
            # The customer still gets an answer; the traceback only at -v (it may name hosts).
            log.error("job %s call %d failed: %s", self.name, env.call_id, type(error).__name__)
            log.debug("job %s call %d failed", self.name, env.call_id, exc_info=True)
            return self.encode_error(LlmError("internal error while running the job"))


class ProcessLlmRequest(Job[LlmRequest, LlmResponse]):
    """Job 0: an OpenAI-style request through the balancer, answered on chain."""

    index = 0
    name = "process_llm_request"

    def decode(self, inputs: bytes, *, limits: ApiSettings) -> LlmRequest:
        text = _abi_string(inputs, "job input", limits.max_body_bytes)
        return parse_llm_request(text, limits=limits)

    def encode(self, output: LlmResponse) -> bytes:
        body = {"type": RESPONSE_TAGS[type(output)], **output.wire()}
        return encode(["string"], [json.dumps(body)])

    async def handle(self, env: JobEnv, request: LlmRequest) -> LlmResponse:
        balancer = env.context.balancer
        if isinstance(request, ChatCompletionRequest):
            return await balancer.chat_completion(request)
        if isinstance(request, TextCompletionRequest):
            return await balancer.text_completion(request)
        return await balancer.embeddings(request)


def fleet_metrics(context: Context) -> dict[str, int]:
    """This operator's load, as whole numbers (the status registry stores uint256)."""
    nodes = context.balancer.node_states()
    latencies = [node.latency_ms for node in nodes if node.latency_ms is not None]
    return {
        "nodes_total": len(nodes),
        "nodes_healthy": sum(1 for node in nodes if node.healthy),
        "in_flight": sum(node.in_flight for node in nodes),
        "requests_total": sum(node.requests_total for node in nodes),
        "errors_total": sum(node.errors_total for node in nodes),
        "avg_latency_ms": round(sum(latencies) / len(latencies)) if latencies else 0,
    }


class ReportMetrics(Job[None, dict[str, Any]]):
    """Job 1: send a heartbeat with this operator's node metrics, and return them."""

    index = 1
    name = "report_metrics"

    def decode(self, inputs: bytes, *, limits: ApiSettings) -> None:
        # The job takes no input; whatever the caller sent is ignored.
        return None

    def encode(self, output: dict[str, Any]) -> bytes:
        return encode(["string"], [json.dumps(output)])

    async def handle(self, env: JobEnv, request: None) -> dict[str, Any]:
        tx = await env.heartbeat()
        return {"type": "metrics", "metrics": fleet_metrics(env.context), "heartbeat_tx": tx}


JOBS: dict[int, Job[Any, Any]] = {job.index: job for job in (ProcessLlmRequest(), ReportMetrics())}


async def run_job(env: JobEnv, job_index: int, inputs: bytes, *, timeout_s: float) -> bytes:
    """The result bytes for one call; an unknown job index is an error result too."""
    job = JOBS.get(job_index)
    if job is None:
        error = InvalidRequestError(
            f"unknown job index {job_index}; this blueprint has jobs {sorted(JOBS)}",
            code="unknown_job",
        )
        return error_output(error)
    return await job.run(env, inputs, timeout_s=timeout_s)
