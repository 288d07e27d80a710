"""Error bodies for clients: the OpenAI error object, scrubbed of internal detail.

Upstream messages may quote a node's URL, address or key; OpenRouter and its
users must never see those, and neither should our logs.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable

from pydantic import ValidationError
from starlette.responses import Response

from ..llm.errors import InvalidRequestError, LlmError

log = logging.getLogger(__name__)

# Linear in the text: messages echo client input, so a pattern that backtracks
# over a long run (the scheme of a URL that never comes) would stall the event
# loop for everyone.  Each alternative starts only where a run starts (the
# lookbehind) and never gives characters back (possessive `*+`, Python 3.11+).
_ADDRESS = re.compile(
    r"(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*+://[^\s'\"<>]++"  # any URL
    r"|\[(?=[0-9a-f]*+:)[0-9a-f:]++\](?::\d++)?"  # [IPv6]:port
    r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d++)?\b"  # IPv4:port
    r"|\blocalhost:\d++\b",
    re.IGNORECASE,
)
# Longest message a client is sent or a log line carries.  Longer text is cut to
# SCRUBBED characters before scrubbing (a bound on the work), and then loses its
# last `margin` characters, where a secret or an address cut in two could sit.
MAX_MESSAGE = 2000
SCRUBBED = 16 * 1024


class Scrubber:
    """Removes addresses and known secrets from text bound for a client or a log."""

    def __init__(self, secrets: Iterable[str] = (), hosts: Iterable[str] = ()) -> None:
        words = sorted(
            {word for word in (*secrets, *hosts) if len(word) >= 4}, key=len, reverse=True
        )
        self._words = re.compile("|".join(map(re.escape, words))) if words else None
        self._margin = max((len(word) for word in words), default=0) + 64

    def __call__(self, text: str) -> str:
        cut = len(text) > SCRUBBED
        if cut:
            text = text[:SCRUBBED]
        if self._words is not None:
            text = self._words.sub("[redacted]", text)
        text = _ADDRESS.sub("[node]", text)
        if cut:
            text = text[: -self._margin]
        return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " [...]"


def error_response(error: LlmError, scrub: Scrubber) -> Response:
    """The OpenAI error object with the error's status; 429 and 503 carry Retry-After."""
    body = error.to_openai()
    body["error"]["message"] = scrub(error.message)
    headers = {}
    if error.retry_after is not None or error.status_code == 429:
        headers["retry-after"] = str(max(1, round(error.retry_after or 1)))
    return Response(
        json.dumps(body).encode(),
        status_code=error.status_code,
        headers=headers,
        media_type="application/json",
    )


def unexpected(exc: BaseException, scrub: Scrubber) -> LlmError:
    """An error we did not foresee: logged by type and scrubbed text, answered as a plain 500."""
    log.error("unexpected %s: %s", type(exc).__name__, scrub(str(exc)))
    return LlmError("internal error; the request was not completed")


def invalid_body(error: ValidationError) -> InvalidRequestError:
    """A 400 naming the first bad field, or saying the JSON itself is malformed."""
    first = error.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        return InvalidRequestError(f"malformed JSON body: {first['msg']}")
    if first["type"] == "model_type" and not first["loc"]:
        return InvalidRequestError("the body must be a JSON object")
    # A location may be a client's own key (logit_bias): bounded before it reaches any text.
    field = ".".join(_short(str(part)) for part in first["loc"])
    more = error.error_count() - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return InvalidRequestError(f"invalid field {field!r}: {first['msg']}{suffix}", param=field)


def _short(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
