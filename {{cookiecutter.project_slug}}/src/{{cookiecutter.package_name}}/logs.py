"""Log lines an operator can read or ship: INFO and above to stderr, as text or JSON lines.

Every line carries `request_id`: the HTTP request's (its `X-Request-Id`) or the on-chain
call's, so one request's node attempts, retries and errors can be found together.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from typing import Literal

request_id: ContextVar[str] = ContextVar("request_id", default="-")

LogStyle = Literal["text", "logfmt", "json"]
_FORMATS = {
    "text": "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s",
    "logfmt": "time=%(asctime)s level=%(levelname)s logger=%(name)s "
    "request_id=%(request_id)s msg=%(message)r",
}
# Libraries that log every HTTP or RPC call: -vv shows them.
_CHATTY = ("web3", "httpx", "httpcore", "aiohttp", "asyncio", "uvicorn.access")


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonLines(logging.Formatter):
    """One JSON object a line, the keys log shippers (Loki, Vector, Fluent Bit) index on."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(style: LogStyle, verbosity: int = 0) -> None:
    """Replace the root handlers with one on stderr; DEBUG from -v, chatty libraries from -vv."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestId())
    handler.setFormatter(JsonLines() if style == "json" else logging.Formatter(_FORMATS[style]))
    level = logging.DEBUG if verbosity > 0 else logging.INFO
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if verbosity > 1 else logging.WARNING)
