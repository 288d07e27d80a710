"""Turn a server's failure into the shared error hierarchy, keeping its message.

Servers disagree on the error body: OpenAI's `{"error": {"message": ...}}`
(vLLM, llama.cpp, LM Studio), older vLLM's flat `{"object": "error",
"message": ...}`, Ollama's and TGI's `{"error": "..."}`, FastAPI's
`{"detail": ...}`.  `server_message` reads all of them; `error_for_status`
picks the class from the status code and, for context overflow and overload,
from the message.  Node URLs never appear in the messages: they go back to
callers outside the operator's network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import httpx

from ..llm.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    LlmError,
    ModelNotFoundError,
    NotSupportedError,
    OverloadedError,
    PayloadTooLargeError,
    UpstreamCredentialsError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)

# Longest server message passed on; a server may echo a whole prompt back.
MAX_MESSAGE = 1000

# How each server words a prompt that does not fit: vLLM ("maximum context length",
# "max_tokens=... cannot be greater than max_model_len=..."),
# llama.cpp ("exceeds the available context size", type exceed_context_size_error),
# TGI ("`inputs` tokens + `max_new_tokens` must be <=", "`inputs` must have less than"),
# Ollama ("input length exceeds the context length"), OpenAI ("context_length_exceeded").
_CONTEXT_OVERFLOW = re.compile(
    r"context[ _](length|size|window)|maximum context|exceed_context_size"
    r"|tokens \+ `max_new_tokens` must be|`inputs` must have less than"
    r"|too many tokens|prompt is too long|greater than max_model_len",
    re.IGNORECASE,
)
# A 503 that means "full, try again" rather than "down": Ollama's "server busy, please try
# again.  maximum pending requests exceeded", vLLM's "The engine is currently busy and
# cannot accept new requests" and "...reached its prefill token backlog limit" (0.32,
# --max-num-queued-reqs) or "The waiting queue is full" (older), llama.cpp's "no slot
# available".
_BUSY = re.compile(
    r"server busy|overloaded|queue (is )?full|at capacity|no slot available"
    r"|too many (pending|concurrent) requests|currently busy|backlog limit",
    re.IGNORECASE,
)


def server_message(body: bytes, status_code: int) -> str:
    """The server's own words from an error body, or a plain description of the status."""
    text = body.decode("utf-8", errors="replace").strip()
    message: Any = None
    try:
        data = json.loads(text) if text else None
    except json.JSONDecodeError:
        data = None
    if isinstance(data, Mapping):
        error = data.get("error")
        if isinstance(error, Mapping):
            message = error.get("message")
        elif isinstance(error, str):
            message = error
        if not message:
            message = data.get("message") or data.get("detail")
        if message is not None and not isinstance(message, str):
            message = json.dumps(message)
    elif text and not text.startswith("<"):
        # Plain-text bodies (proxies, some servers' 404s) are the message; HTML pages are not.
        message = text
    text = str(message) if message else f"the server answered HTTP {status_code}"
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def _no_route(body: bytes) -> bool:
    """FastAPI's answer for a path it has no route for: vLLM registers /v1/embeddings
    only on a pooling runner and the generation routes only on a generate runner."""
    try:
        return bool(json.loads(body) == {"detail": "Not Found"})
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None  # An HTTP date: rare from LLM servers, and a hint only.


def error_for_status(
    status_code: int, body: bytes, headers: Mapping[str, str] | None = None
) -> LlmError:
    """The error class a failed answer stands for; the message is the server's."""
    message = server_message(body, status_code)
    retry_after = _retry_after(headers or {})
    if status_code in (400, 422):
        if _CONTEXT_OVERFLOW.search(message) or b"context_length_exceeded" in body:
            return ContextLengthExceededError(message)
        return InvalidRequestError(message)
    if status_code in (401, 403):
        # Our key for the node is wrong: the operator's problem, not the caller's,
        # so it must not surface as the caller's authentication failure.
        return UpstreamCredentialsError(f"the node rejected the provider's credentials: {message}")
    if status_code == 404:
        if _no_route(body):
            return NotSupportedError("the server has no such endpoint")
        return ModelNotFoundError(message)
    if status_code == 408:
        return UpstreamTimeoutError(message)
    if status_code == 413:
        return PayloadTooLargeError(message)
    if status_code == 501:
        # llama-server without --embeddings: "This server does not support embeddings".
        return NotSupportedError(message)
    if status_code == 429:
        return OverloadedError(message, retry_after=retry_after)
    if status_code == 503:
        if _BUSY.search(message):
            return OverloadedError(message, retry_after=retry_after)
        return UpstreamUnavailableError(message, retry_after=retry_after)
    if status_code == 504:
        return UpstreamTimeoutError(message)
    if status_code < 400:  # Location is not quoted: it may name an internal host
        return UpstreamError(f"the node redirected the request (HTTP {status_code}); check its url")
    if status_code >= 500 or status_code == 424:
        # TGI answers 424 when generation itself failed.
        return UpstreamError(message)
    return InvalidRequestError(message)


def error_for_transport(error: httpx.HTTPError, node_name: str) -> LlmError:
    """A failure below HTTP: refused or dropped connections and timeouts."""
    cause = error.__cause__
    # httpx-aiohttp reports every aiohttp connection error as a ConnectTimeout: the cause
    # says what happened.  Its text names the node's address, so only its kind is reported.
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return UpstreamError(f"node {node_name!r} closed the connection before answering")
    if isinstance(cause, aiohttp.ClientConnectorError):
        if isinstance(cause.os_error, ConnectionRefusedError):
            return UpstreamUnavailableError(f"node {node_name!r} refused the connection")
        reason = type(cause.os_error).__name__
        return UpstreamUnavailableError(f"node {node_name!r} could not be reached ({reason})")
    if isinstance(error, httpx.ConnectTimeout | httpx.PoolTimeout):
        return UpstreamUnavailableError(f"node {node_name!r} did not accept a connection in time")
    if isinstance(error, httpx.ConnectError):
        return UpstreamUnavailableError(f"node {node_name!r} refused the connection")
    if isinstance(error, httpx.TimeoutException):
        return UpstreamTimeoutError(f"node {node_name!r} sent nothing within the read timeout")
    return UpstreamError(f"node {node_name!r} dropped the connection ({type(error).__name__})")


def error_in_stream(data: Mapping[str, Any]) -> LlmError | None:
    """An error sent in-band after a 200: vLLM, llama.cpp, TGI and Ollama do this mid-stream.

    Shapes: `{"error": {"message", "code"}}`, `{"error": "..."}`, and older vLLM's
    flat `{"object": "error", "message", "code"}`.
    """
    error = data if data.get("object") == "error" else data.get("error")
    if error is None:
        return None
    if isinstance(error, Mapping):
        message = str(error.get("message") or error)
        code = error.get("code")
        if isinstance(code, int) and 400 <= code < 600:
            return error_for_status(code, json.dumps({"error": dict(error)}).encode())
    else:
        message = str(error)
    return UpstreamError(message[:MAX_MESSAGE])
