"""`create_app(config)`: the ASGI app of one simulated server."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from .config import SimConfig
from .dialect import Dialect
from .engine import Simulator
from .wire import DropMiddleware


def _dialect(sim: Simulator) -> Dialect:
    name = sim.config.dialect
    if name == "vllm":
        from .vllm import VllmServer

        return VllmServer(sim)
    if name == "llamacpp":
        from .llamacpp import LlamaCppServer

        return LlamaCppServer(sim)
    if name == "tgi":
        from .tgi import TgiServer

        return TgiServer(sim)
    if name == "ollama":
        from .ollama import OllamaServer

        return OllamaServer(sim)
    from .openai_compat import OpenAICompatible

    return OpenAICompatible(sim)


def create_app(config: SimConfig, sim: Simulator | None = None) -> Starlette:
    """An app speaking `config.dialect`; its `Simulator` is `app.state.sim`."""
    sim = sim or Simulator(config)
    dialect = _dialect(sim)
    app = Starlette(
        routes=dialect.routes(),
        middleware=[Middleware(DropMiddleware)],
        exception_handlers=dialect.exception_handlers(),
    )
    app.state.sim = sim
    return app
