"""Log lines for operators: INFO and above on stderr, as text, logfmt or JSON lines, each
with the `request_id` of its HTTP request or on-chain call (`-`: neither)."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from typing import Literal

request_id: ContextVar[str] = ContextVar("request_id", default="-")
_FORMATS = {
    "text": "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s",
    "logfmt": "time=%(asctime)s level=%(levelname)s logger=%(name)s "
    "request_id=%(request_id)s msg=%(message)r",
}
# Libraries that log every HTTP or RPC call: -vv shows them.
_CHATTY = ("web3", "httpx", "httpcore", "aiohttp", "asyncio", "uvicorn.access")


def _tag(record: logging.LogRecord) -> bool:
    record.request_id = request_id.get()
    return True


class _Json(logging.Formatter):
    """One object a line, with the keys log shippers (Loki, Vector, Fluent Bit) index."""

    def format(self, record: logging.LogRecord) -> str:
        keys = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name}
        line = keys | {
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(style: Literal["text", "logfmt", "json"], verbosity: int = 0) -> None:
    """One stderr handler for the process; DEBUG with -v, the chatty libraries with -vv."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_tag)
    handler.setFormatter(_Json() if style == "json" else logging.Formatter(_FORMATS[style]))
    logging.basicConfig(
        level=logging.DEBUG if verbosity else logging.INFO, handlers=[handler], force=True
    )
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if verbosity > 1 else logging.WARNING)
