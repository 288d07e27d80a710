"""What every simulated server does the same way; subclasses give it each server's shapes.

The request pipeline is fixed: gate (auth, loading), parse, model and context
checks, fault draw, admission, then generation in a slot.  A dialect supplies
routes, its error bodies and how it renders a plan.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from .engine import Fault, Piece, Plan, Simulator
from .wire import answer, json_response, stream

Handler = Callable[[Request], Awaitable[Response]]


class RequestError(Exception):
    """A request the server refuses; `response` is the server's own answer."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class Dialect:
    """Base class: one simulated server type."""

    # Paths served without the API key (health probes).
    public_paths: frozenset[str] = frozenset()
    # Whether a whole (non-streamed) answer stops when its client leaves.
    stops_whole_answers = True

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    # --- what a dialect defines ------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    def exception_handlers(self) -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
        """How the server's framework answers a path it has no route for (Starlette's own
        plain-text answers unless a dialect says otherwise)."""
        return {}

    def error(
        self, status: int, message: str, kind: str = "", param: str | None = None
    ) -> Response:
        """An error in this server's shape; `kind` is its error type, where it has one."""
        raise NotImplementedError

    def server_error(self) -> Response:
        return self.error(500, "simulated internal error", "server_error")

    def overloaded(self) -> Response:
        return self.error(503, "server is at capacity", "server_error")

    def unauthorized(self) -> Response:
        return self.error(401, "invalid API key", "authentication_error")

    def loading(self) -> Response:
        return self.error(503, "model is loading", "unavailable_error")

    # --- shared pipeline -------------------------------------------------------------

    def endpoint(self, handler: Handler) -> Handler:
        """Gate the request, and turn a refusal into the server's own answer."""

        async def wrapped(request: Request) -> Response:
            try:
                self.gate(request)
                return await handler(request)
            except RequestError as refusal:
                return refusal.response

        return wrapped

    def gate(self, request: Request) -> None:
        """Refuse requests without the API key, or while the model is loading."""
        key = self.sim.config.api_key
        if key and request.url.path not in self.public_paths:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                raise RequestError(self.unauthorized())
        if not self.sim.ready and request.url.path not in self.public_paths:
            raise RequestError(self.loading())

    def models(self) -> list[str]:
        return self.sim.config.model_names()

    def bad_request(self, message: str, param: str | None = None) -> RequestError:
        return RequestError(self.error(400, message, "invalid_request_error", param))

    async def generate(
        self,
        request: Request,
        *,
        plan: Plan,
        prompt_tokens: int,
        stream_body: Callable[[Plan, AsyncIterator[Piece]], AsyncGenerator[bytes, None]] | None,
        body: Callable[[Plan], Any],
        media_type: str = "text/event-stream",
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Admit, run and answer one generation; `stream_body=None` answers in one body."""
        sim = self.sim
        sim.requests_total += 1
        fault: Fault | None = sim.draw_fault()
        if fault == "error":
            sim.errors_total += 1
            return self.server_error()
        if sim.full():
            sim.rejected_total += 1
            return self.overloaded()

        if stream_body is not None:
            render = stream_body

            async def chunks() -> AsyncGenerator[bytes, None]:
                async with sim.slot(prompt_tokens) as slot:
                    if fault == "hang":
                        await sim.hang()
                    pieces = sim.pieces(plan, slot, drop=fault == "drop")
                    async for chunk in render(plan, pieces):
                        yield chunk
                sim.completed_total += 1

            return stream(sim, chunks(), media_type, headers)

        async def work() -> Response:
            async with sim.slot(prompt_tokens) as slot:
                if fault == "hang":
                    await sim.hang()
                async for _ in sim.pieces(plan, slot, drop=fault == "drop"):
                    pass
            sim.completed_total += 1
            return json_response(body(plan), headers=headers)

        return await (answer(request, sim, work) if self.stops_whole_answers else work())

    async def embed_admission(self, tokens: int) -> Response | None:
        """Embeddings take a slot and may fail like any request, but have no tokens to pace."""
        sim = self.sim
        sim.requests_total += 1
        if sim.draw_fault() == "error":
            sim.errors_total += 1
            return self.server_error()
        if sim.full():
            sim.rejected_total += 1
            return self.overloaded()
        async with sim.slot(tokens):
            pass
        sim.completed_total += 1
        return None


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def as_stop_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ValueError("stop must be a string or a list of strings")


def positive_int(value: Any, name: str) -> int | None:
    """An optional positive integer field; a ValueError names the field."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer")
    return value
