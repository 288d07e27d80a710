"""A minimal pass-through proxy for `bench overhead`: Starlette and aiohttp, nothing else.

It forwards the body and the content type to the node and relays the answer
as it comes, on uvicorn (uvloop, httptools) like the provider.  No auth, no
parsing, no limits, no metrics: the row shows what Python and these libraries
cost on their own, so the provider's row can be read as that plus its own work.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def create_app(node_url: str) -> Starlette:
    session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal session
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(node_url, connector=connector) as opened:
            session = opened
            yield

    async def forward(request: Request) -> Response:
        assert session is not None
        upstream = await session.request(
            request.method,
            request.url.path,
            data=await request.body(),
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for data in upstream.content.iter_any():
                    yield data
            finally:
                upstream.release()

        return StreamingResponse(
            relay(), upstream.status, media_type=upstream.headers.get("content-type")
        )

    routes = [Route("/{path:path}", forward, methods=["GET", "POST"])]
    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: list[str]) -> int:
    """`python -m ...bench_proxy PORT NODE_URL`: serve until interrupted."""
    port, node_url = int(argv[0]), argv[1]
    uvicorn.run(
        create_app(node_url),
        host="127.0.0.1",
        port=port,
        http="httptools",
        loop="uvloop",
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
