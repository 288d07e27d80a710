"""A node for `bench overhead` that is never the bottleneck: canned OpenAI answers on raw sockets.

An asyncio protocol on uvloop, with httptools (llhttp, nginx's parser's
successor) reading requests: no framework, no JSON parsing beyond spotting
`"stream"`, and every answer built once at start-up.  It answers
`GET /v1/models`, and `POST /v1/chat/completions` with a 16-token answer or a
100-chunk SSE stream (plus the usage chunk and `[DONE]`), so one core of it
carries several times what one nginx worker can relay.

A stream is chunked, one HTTP chunk per event, and goes out in `sends`
socket writes (1 by default: the whole stream at once).  One send per event
is how a real server paces tokens, but on a shared core each send costs the
node about what relaying it costs nginx, so the node, not the proxy, would
set the pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from typing import cast

import httptools
import uvloop

ANSWER_TOKENS = 16
STREAM_CHUNKS = 100
# `"stream": true` with any spacing, as json.dumps and compact encoders write it.
_STREAM = re.compile(rb'"stream"\s*:\s*true')


def _http(status: str, content_type: bytes, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: ".encode()
        + content_type
        + f"\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )


def canned(model: str, sends: int = 1) -> dict[str, list[bytes]]:
    """Every answer the node gives, as whole HTTP responses."""
    usage = {"prompt_tokens": 8, "completion_tokens": ANSWER_TOKENS, "total_tokens": 24}
    answer = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " word" * ANSWER_TOKENS},
                "finish_reason": "length",
            }
        ],
        "usage": usage,
    }
    frames = []
    for index in range(STREAM_CHUNKS):
        last = index == STREAM_CHUNKS - 1
        frames.append(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": " word"},
                        "finish_reason": "length" if last else None,
                    }
                ],
            }
        )
    frames.append(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 8, "completion_tokens": STREAM_CHUNKS, "total_tokens": 108},
        }
    )
    events = [b"data: " + json.dumps(frame).encode() + b"\n\n" for frame in frames]
    events.append(b"data: [DONE]\n\n")
    parts = [b"%x\r\n%s\r\n" % (len(event), event) for event in events]
    parts[-1] += b"0\r\n\r\n"
    parts[0] = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n" + parts[0]
    )
    per_send = -(-len(parts) // max(1, sends))
    stream = [b"".join(parts[i : i + per_send]) for i in range(0, len(parts), per_send)]
    models = {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "bench"}]}
    not_found = b'{"error": {"message": "not found", "type": "not_found"}}'
    return {
        "answer": [_http("200 OK", b"application/json", json.dumps(answer).encode())],
        "stream": stream,
        "models": [_http("200 OK", b"application/json", json.dumps(models).encode())],
        "missing": [_http("404 Not Found", b"application/json", not_found)],
    }


class _Node(asyncio.Protocol):
    def __init__(self, answers: dict[str, list[bytes]]) -> None:
        self.answers = answers
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        if self.url.startswith(b"/v1/chat/completions"):
            streamed = _STREAM.search(b"".join(self.body)) is not None
            answer = self.answers["stream" if streamed else "answer"]
        elif self.url.startswith(b"/v1/models"):
            answer = self.answers["models"]
        else:
            answer = self.answers["missing"]
        for part in answer:
            self.transport.write(part)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def start(port: int, model: str, sends: int = 1) -> asyncio.Server:
    """The node listening on 127.0.0.1:`port` (0: any free port)."""
    answers = canned(model, sends)
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Node(answers), "127.0.0.1", port, backlog=4096)


async def serve(port: int, model: str, sends: int) -> None:
    async with await start(port, model, sends) as server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    """`python -m ...bench_node PORT MODEL [SENDS]`: serve until interrupted."""
    port, model = int(argv[0]), argv[1]
    sends = int(argv[2]) if len(argv) > 2 else 1
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(port, model, sends))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
