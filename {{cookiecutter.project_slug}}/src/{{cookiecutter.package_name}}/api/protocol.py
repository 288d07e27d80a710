"""HTTP/1.1 connection limits uvicorn's httptools protocol does not set.

uvicorn with httptools accepts headers of any size and count, and waits for
ever on a connection that sends nothing, half a header set or half a body.
This subclass of its protocol class (uvicorn's `Config(http=...)` takes one)
bounds each, as nginx does with large_client_header_buffers,
client_header_timeout and client_body_timeout:

- the request line and headers: at most `max_header_bytes` and
  `max_header_count` lines, else 431 and the connection is closed, counted
  before the parser sees the bytes (httptools would keep copying a growing
  header value); bytes that arrive while a request is answered are the next
  (pipelined) request's head and are counted the same way;
- a chunked body's framing (chunk-size lines, extensions, trailers, which
  uvicorn appends to the request's headers): at most `max_header_bytes` plus
  32 bytes a chunk, else 431 and the connection is closed;
- from the connection's start, or the previous answer, to the end of the
  headers: `header_timeout_s`, then the connection is closed;
- from the headers to the end of the body: `body_timeout_s`, then 408 (if no
  answer has started) and the connection is closed;
- a body still arriving after its answer (a 413) is read and dropped until it
  ends, within `body_timeout_s`, so the client can read the answer.

It also tells the app when a client goes away (the `DISCONNECTED` scope
extension), so a request's work is cancelled without a watcher task.  The
signal is the connection's, shared by its requests: a pipelined request's
head may arrive while an earlier request is still answered, and both are
abandoned when the connection goes.

The per-request cost is a few attribute writes, clock reads and one future: each
connection has one timer that wakes at its current deadline, or after the
shorter timeout at the latest, and re-arms itself; a deadline is enforced at
most one such tick late.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD, _BODY, _APP = 0, 1, 2  # reading headers, reading the body, answering
# Framing a chunk may take beyond the head budget: its size line and CRLFs ("1000\r\n...\r\n").
_CHUNK_FRAMING = 32
# An ASGI scope extension, {"future": ...}: resolved when the client (the connection) goes
# away, so the app can stop a request's work without a task watching `receive` per request.
DISCONNECTED = "openrouter.disconnected"


class ThrottledLog(logging.LoggerAdapter[logging.Logger]):
    """uvicorn's protocol log with each warning written at most once per `every_s`.

    uvicorn writes a WARNING for every malformed request or refused upgrade: anyone
    could fill the disk with one line per few bytes sent.  The next line written says
    how many were left out.
    """

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        super().__init__(logger, {})
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    @property
    def level(self) -> int:  # uvicorn reads `logger.level` before its trace lines
        return self.logger.level

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level != logging.WARNING:
            super().log(level, msg, *args, **kwargs)
            return
        key = str(msg)
        now = time.monotonic()
        previous = self._last.get(key)
        if previous is not None and now - previous < self.every_s:
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return
        self._last[key] = now
        left_out = self._left_out.pop(key, 0)
        if left_out:
            msg = f"{msg} (and {left_out} more since the last such line)"
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs


_LOG = ThrottledLog(logging.getLogger("uvicorn.error"))


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int
    max_header_count: int
    header_timeout_s: float
    body_timeout_s: float


def limited_protocol(limits: Limits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class with `limits` applied."""
    return type("LimitedHttpToolsProtocol", (LimitedProtocol,), {"limits": limits})


class LimitedProtocol(HttpToolsProtocol):
    limits: Limits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _LOG  # type: ignore[assignment]  # it only calls Logger's methods
        self._phase = _HEAD
        self._since = 0.0
        self._head_bytes = 0
        self._head_lines = 0
        self._body_bytes = 0  # body bytes the parser delivered (on_body), to tell framing apart
        self._framing = 0  # a body's bytes that were not body data: chunk lines, trailers
        self._chunks = 0
        self._timer: asyncio.TimerHandle | None = None
        self._gone: asyncio.Future[None] = self.loop.create_future()
        self._close_when_read = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = self.loop.time()
        self._arm(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self._gone.done():
            self._gone.set_result(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == _BODY:
            self._receive_body(data)
            return
        # Reading a head, or answering while a pipelined request's head may arrive.
        end = data.find(b"\r\n\r\n")
        size = len(data) if end < 0 else end
        self._head_bytes += size
        self._head_lines += data.count(b"\n", 0, size)
        limits = self.limits
        if self._head_bytes > limits.max_header_bytes:
            self._refuse(431, f"request headers exceed {limits.max_header_bytes} bytes")
            return
        if self._head_lines > limits.max_header_count:
            self._refuse(431, f"more than {limits.max_header_count} header lines")
            return
        super().data_received(data)

    def _receive_body(self, data: bytes) -> None:
        # The parser buffers a trailer's value until its line ends, and uvicorn keeps every
        # trailer: without this count one unauthenticated upload held 600 MB after 8 s.
        delivered = self._body_bytes
        super().data_received(data)
        self._framing += len(data) - (self._body_bytes - delivered)
        limit = self.limits.max_header_bytes + _CHUNK_FRAMING * self._chunks
        if self._framing > limit and not self.transport.is_closing():
            self._refuse(431, f"chunk framing and trailers exceed {limit} bytes")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self._head_bytes = self._head_lines = 0
        self._framing = self._chunks = 0
        self._since = self.loop.time()
        self.scope["extensions"] = {DISCONNECTED: {"future": self._gone}}
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and not cycle.keep_alive and self.scope["http_version"] == "1.1":
            # `Connection: close`: uvicorn would close as soon as the answer is written,
            # resetting a client still sending its body; close once the body is read.
            self._close_when_read = True
            cycle.keep_alive = True

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:
            # Answered before its body was read (a 413): the rest was read and dropped so
            # the client, which writes before it reads, sees the answer rather than a reset
            # (nginx's lingering close, bounded by the body timeout).  The connection stays
            # usable, as the answer promised: the next request starts here.
            self._phase = _HEAD
            self._since = self.loop.time()
            if self._close_when_read:
                self.transport.close()
        else:
            self._phase = _APP

    def on_response_complete(self) -> None:
        if self._phase == _APP and not self.pipeline:  # a pipelined request is answered next
            self._phase = _HEAD
            self._since = self.loop.time()
        super().on_response_complete()
        if self._close_when_read and self._phase != _BODY:
            self.transport.close()

    # --- the timer -------------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        # Never longer than the shorter timeout: the phase may change before the timer wakes,
        # so a deadline is enforced at most one such tick late.
        tick = min(self.limits.header_timeout_s, self.limits.body_timeout_s)
        self._timer = self.loop.call_later(min(max(delay, 0.01), tick), self._check)

    def _check(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        limits = self.limits
        elapsed = self.loop.time() - self._since
        if self._phase == _HEAD:
            if elapsed >= limits.header_timeout_s:
                self.transport.close()
                return
            self._arm(limits.header_timeout_s - elapsed)
        elif self._phase == _BODY:
            if elapsed >= limits.body_timeout_s:
                self._refuse(408, "the request body did not arrive in time")
                return
            self._arm(limits.body_timeout_s - elapsed)
        else:
            self._arm(limits.header_timeout_s)

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with an OpenAI error body and close; only close if the answer slot
        is taken (a started answer, or a request the app is answering: a pipelined head)."""
        started = self.cycle is not None and self.cycle.response_started
        if self._phase == _HEAD or (self._phase == _BODY and not started):
            reason = {408: "Request Timeout", 431: "Request Header Fields Too Large"}[status]
            body = json.dumps(
                {
                    "error": {
                        "message": message,
                        "type": "invalid_request_error",
                        "param": None,
                        "code": str(status),
                    }
                }
            ).encode()
            self.transport.write(
                f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
        self.transport.close()
