"""OpenAI-shaped data: requests, responses, stream chunks, and node descriptions.

Requests keep unknown fields (`extra="allow"`) but `wire()` sends a node only
the fields of OpenAI's and OpenRouter's APIs: server-specific fields such as
vLLM's `chat_template` or `logits_processors` reach a node only when its
`extra_fields` allow them, since several have been remote-code-execution or
SSRF vectors in inference servers.  Responses are built by backends from the
server's own answer and dumped with `wire()`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..config import Capability
from .errors import InvalidRequestError
from .limits import collector_paused


def new_id(prefix: str) -> str:
    """An OpenAI-style id such as `chatcmpl-3f2a...`."""
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class OpenAIModel(BaseModel):
    """Base for wire objects: unknown fields are kept, not rejected."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def wire(self) -> dict[str, Any]:
        """The JSON body, without fields that were never given a value."""
        return self.model_dump(mode="json", exclude_none=True)


# --- shared pieces -------------------------------------------------------------


class FunctionCall(OpenAIModel):
    name: str
    arguments: str = Field(description="The arguments as a JSON string, as OpenAI sends them.")


class ToolCall(OpenAIModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionCallDelta(OpenAIModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(OpenAIModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


class PromptTokensDetails(OpenAIModel):
    cached_tokens: int = 0


class CompletionTokensDetails(OpenAIModel):
    reasoning_tokens: int = 0


class Usage(OpenAIModel):
    """Token counts, always taken from the server's own figures."""

    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None

    @classmethod
    def of(
        cls,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        cached_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            prompt_tokens_details=(
                None if cached_tokens is None else PromptTokensDetails(cached_tokens=cached_tokens)
            ),
            completion_tokens_details=(
                CompletionTokensDetails(reasoning_tokens=reasoning_tokens)
                if reasoning_tokens is not None
                else None
            ),
        )


class StreamOptions(OpenAIModel):
    include_usage: bool = False


# Request fields of OpenAI's and OpenRouter's APIs that the models below do not spell out:
# a node is sent these besides the modelled ones (OpenAI's CreateChatCompletionRequest,
# OpenRouter's parameter list).  Any other field is dropped unless the node allows it.
STANDARD_EXTRA_FIELDS = frozenset(
    {
        "audio",
        "metadata",
        "modalities",
        "prediction",
        "prompt_cache_key",
        "reasoning_effort",
        "safety_identifier",
        "service_tier",
        "store",
        "top_a",
        "verbosity",
        "web_search_options",
    }
)


class RequestModel(OpenAIModel):
    """A request body: unknown fields are kept for the API's checks but not sent on.

    NaN and infinities are refused: they are not JSON, and a node would be sent them.
    """

    model_config = ConfigDict(allow_inf_nan=False)

    def wire(self, extra_fields: Collection[str] = ()) -> dict[str, Any]:
        """The body for a node: modelled and standard fields, plus `extra_fields` it allows.

        Dropped fields are never encoded, and a field that cannot be (nested too deep)
        is the caller's 400: no node has seen the request, so none may be blamed.
        """
        extra = self.__pydantic_extra__
        dropped = (
            {
                name
                for name in extra
                if name not in STANDARD_EXTRA_FIELDS and name not in extra_fields
            }
            if extra
            else None
        )
        try:
            with collector_paused():
                return self.model_dump(mode="json", exclude_none=True, exclude=dropped)
        except ValueError as error:  # pydantic-core's depth limit, or a value JSON cannot hold
            raise InvalidRequestError(f"the request cannot be encoded as JSON: {error}") from None


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call", "error"]


# Longest model id a request may name: ids are short, and error messages quote them.
MAX_MODEL_ID = 256
# Bounds on lists whose items a node handles one by one (OpenAI allows 4 stop sequences).
MAX_STOP = 32
MAX_LOGIT_BIAS = 1024
# A token id as a logit_bias key: digits, so a key is never a megabyte of text.
TokenId = Annotated[str, Field(max_length=12, pattern=r"^\d+$")]
# Validation stops at a list's first bad item: one error, not one per item of a million.
_FAIL_FAST = Field(fail_fast=True)


class SamplingParams(RequestModel):
    """Parameters shared by chat and text completions."""

    model: str = Field(max_length=MAX_MODEL_ID)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = None
    min_p: float | None = None
    n: int | None = Field(default=None, ge=1, le=1, description="Only one choice per request.")
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP, fail_fast=True)] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = None
    logit_bias: dict[TokenId, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        default=None, max_length=MAX_LOGIT_BIAS
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def wants_usage_chunk(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


# --- chat ----------------------------------------------------------------------


class ChatMessage(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | Annotated[list[dict[str, Any]], _FAIL_FAST] | None = None
    name: str | None = None
    tool_calls: Annotated[list[ToolCall], _FAIL_FAST] | None = None
    tool_call_id: str | None = None
    reasoning: str | None = Field(
        default=None, description="The model's thinking, as OpenRouter names it."
    )

    def text(self) -> str:
        """The message's text, joining text parts of multi-part content."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(
            str(part.get("text", "")) for part in self.content if part.get("type") == "text"
        )


class ChatCompletionRequest(SamplingParams):
    messages: list[ChatMessage] = Field(min_length=1, fail_fast=True)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: Annotated[list[dict[str, Any]], _FAIL_FAST] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    reasoning: dict[str, Any] | None = None

    def token_limit(self) -> int | None:
        """max_completion_tokens wins over the deprecated max_tokens, as in OpenAI's API."""
        return (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else self.max_tokens
        )

    def prompt_text(self) -> str:
        return "\n".join(message.text() for message in self.messages)


class ChatCompletionChoice(OpenAIModel):
    index: int = 0
    message: ChatMessage
    finish_reason: FinishReason | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionResponse(OpenAIModel):
    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ChoiceDelta(OpenAIModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatCompletionStreamChoice(OpenAIModel):
    index: int = 0
    delta: ChoiceDelta
    finish_reason: FinishReason | None = None
    logprobs: dict[str, Any] | None = None


class _Chunk(OpenAIModel):
    def wire(self) -> dict[str, Any]:
        # OpenAI's chunks always carry finish_reason, null until the last one.
        body = super().wire()
        for choice in body["choices"]:
            choice.setdefault("finish_reason", None)
        return body


class ChatCompletionChunk(_Chunk):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatCompletionStreamChoice]
    usage: Usage | None = None


# --- text ----------------------------------------------------------------------


class TextCompletionRequest(SamplingParams):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)] = Field(
        description="One prompt per request (one choice per answer); token-id prompts are not "
        "accepted."
    )
    suffix: str | None = None
    echo: bool | None = None
    best_of: int | None = None
    logprobs: int | None = None

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else "\n".join(self.prompt)


class TextCompletionChoice(OpenAIModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None = None
    logprobs: dict[str, Any] | None = None


class TextCompletionResponse(OpenAIModel):
    id: str = Field(default_factory=lambda: new_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[TextCompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class TextCompletionChunk(_Chunk):
    """OpenAI streams text completions as `text_completion` objects too."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[TextCompletionChoice]
    usage: Usage | None = None


# --- embeddings ----------------------------------------------------------------


class EmbeddingRequest(RequestModel):
    model: str = Field(max_length=MAX_MODEL_ID)
    input: str | Annotated[list[str], Field(min_length=1, fail_fast=True)] = Field(
        description="Token-id inputs are not accepted."
    )
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingData(OpenAIModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(OpenAIModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(OpenAIModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage | None = Field(
        default=None, description="None when the server reports no counts: never invented."
    )


# --- nodes ---------------------------------------------------------------------


class ModelInfo(BaseModel):
    """A model as one node serves it."""

    id: str = Field(description="The node's own name for the model.")
    context_length: int | None = None
    capabilities: dict[Capability, bool] = Field(
        default_factory=dict, description="What the server says it does; absent: it does not say."
    )
    loaded: bool | None = Field(default=None, description="Warm in memory, where the server says.")
    parameters: dict[str, str] = Field(default_factory=dict)


@dataclass(slots=True)
class NodeMetrics:
    """A node's server gauges as last read: one object per client, updated in place.

    The balancer reads it several times per request, so it is a plain object, not a
    validated model.  A gauge is None where the server publishes none; `read_at`
    (time.monotonic()) says how fresh they are, and a stale gauge is unknown.  The
    balancer keeps its own in-flight counts and latencies.
    """

    server_running: float | None = None
    server_waiting: float | None = None
    server_kv_cache_usage: float | None = None  # 0 to 1
    server_capacity: int | None = None
    read_at: float | None = None

    @property
    def server_signals_age_s(self) -> float | None:
        return None if self.read_at is None else time.monotonic() - self.read_at

    def set_signals(
        self,
        *,
        running: float | None = None,
        waiting: float | None = None,
        kv_cache_usage: float | None = None,
        capacity: int | None = None,
    ) -> None:
        """Store the gauges a client just read, in place: the balancer holds this object."""
        self.server_running = running
        self.server_waiting = waiting
        # A gauge outside [0, 1] is the server's rounding; clamp rather than reject.
        self.server_kv_cache_usage = (
            None if kv_cache_usage is None else min(max(kv_cache_usage, 0.0), 1.0)
        )
        self.server_capacity = capacity
        self.read_at = time.monotonic()
