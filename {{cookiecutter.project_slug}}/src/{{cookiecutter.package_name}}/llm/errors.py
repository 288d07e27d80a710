"""One error hierarchy for every layer.

Each error knows the HTTP status and OpenAI error object it turns into, and
whether the balancer may retry the request on another node.  Backends map their
server's failures onto these classes and keep the server's own message.
"""

from __future__ import annotations

from typing import Any


class LlmError(Exception):
    """Base class: an internal failure the client cannot fix."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def to_openai(self) -> dict[str, Any]:
        """The body OpenAI clients parse: {"error": {message, type, param, code}}."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(LlmError):
    """The request itself is wrong; no node will accept it."""

    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    code = "context_length_exceeded"


class AuthenticationError(LlmError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFoundError(LlmError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class RequestTimeoutError(InvalidRequestError):
    status_code = 408


class PayloadTooLargeError(LlmError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class OverloadedError(LlmError):
    """The node (or the whole fleet) is at capacity: retry elsewhere or later."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "overloaded"
    retryable = True


class UpstreamError(LlmError):
    """The node answered with a server error (5xx)."""

    status_code = 502
    error_type = "server_error"
    code = "upstream_error"
    retryable = True


class UpstreamCredentialsError(UpstreamError):
    """The node refused the provider's own key for it: the node is unusable until the
    operator fixes the configuration, though its health routes may still answer."""


class UpstreamUnavailableError(LlmError):
    """The node could not be reached or is not ready (connect error, 503 while loading)."""

    status_code = 503
    error_type = "server_error"
    code = "upstream_unavailable"
    retryable = True


class UpstreamTimeoutError(LlmError):
    """The node did not answer in time."""

    status_code = 504
    error_type = "server_error"
    code = "upstream_timeout"
    retryable = True


class NotSupportedError(InvalidRequestError):
    """The node's server has no such operation (embeddings on a chat-only server)."""

    code = "not_supported"
