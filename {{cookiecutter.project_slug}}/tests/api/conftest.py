"""Fixtures for the HTTP API: a real Granian server on 127.0.0.1, over a fake or a real fleet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from {{ cookiecutter.package_name }}.api.app import create_app
from {{ cookiecutter.package_name }}.api.server import serving
from {{ cookiecutter.package_name }}.balancer import ListedModel
from {{ cookiecutter.package_name }}.config import ModelSettings, Settings
from {{ cookiecutter.package_name }}.llm.errors import ModelNotFoundError
from {{ cookiecutter.package_name }}.llm.models import (
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChatMessage,
    ChoiceDelta,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    TextCompletionChoice,
    TextCompletionChunk,
    TextCompletionRequest,
    TextCompletionResponse,
    Usage,
)

KEY = "sk-test-key-one"
MODEL = "acme/test-model"
UPSTREAM = "sim-model"


def make_settings(load_balancer: dict[str, Any] | None = None, **api: Any) -> Settings:
    """Settings with one model on one (unused) node; `api` overrides [api] keys."""
    return Settings.model_validate(
        {
            "api": {"api_keys": [KEY], **api},
            "load_balancer": load_balancer or {},
            "nodes": [
                {
                    "name": "n1",
                    "url": "http://10.9.8.7:8000",
                    "type": "openai_compatible",
                    "models": [MODEL],
                }
            ],
            "models": [{"id": MODEL, "context_length": 4096, "max_output_length": 512}],
        }
    )


def fleet(url: str, *, max_concurrency: int = 2, **sections: Any) -> Settings:
    """Settings with one node at `url` serving MODEL as UPSTREAM; `sections` override."""
    return Settings.model_validate(
        {
            "api": {"api_keys": [KEY], **sections.get("api", {})},
            "load_balancer": {
                "max_retries": 0,
                "health_check_interval_s": 30,
                **sections.get("load_balancer", {}),
            },
            "nodes": [
                {
                    "name": "node-1",
                    "url": url,
                    "type": "openai_compatible",
                    "max_concurrency": max_concurrency,
                    "models": [{"id": MODEL, "backend_model": UPSTREAM}],
                    **sections.get("node", {}),
                }
            ],
            "models": [{"id": MODEL}],
        }
    )


@dataclass
class FakeBalancer:
    """Answers like the balancer would, from a script the test sets."""

    words: list[str] = field(default_factory=lambda: ["Hello", " there", "!"])
    delay_s: float = 0.0
    first_delay_s: float = 0.0
    first_gate: asyncio.Event | None = None  # when given, the first chunk waits for it
    fail_with: Exception | None = None
    fail_after: int | None = None
    requests: list[Any] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    healthy: bool = True
    health_checks_running: bool = True

    def _check(self, model: str) -> None:
        if model != MODEL:
            raise ModelNotFoundError(f"model {model!r} is not served")
        if self.fail_with is not None and self.fail_after is None:
            raise self.fail_with

    async def chat_completion(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        self.requests.append(request)
        self._check(request.model)
        await asyncio.sleep(self.delay_s)
        message = ChatMessage(role="assistant", content="".join(self.words))
        return ChatCompletionResponse(
            model=request.model,
            choices=[ChatCompletionChoice(message=message, finish_reason="stop")],
            usage=Usage.of(5, len(self.words)),
        )

    async def stream_chat_completion(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        self.requests.append(request)
        try:
            self._check(request.model)
            await asyncio.sleep(self.first_delay_s)
            if self.first_gate is not None:
                await self.first_gate.wait()
            for index, word in enumerate(self.words):
                if self.fail_after is not None and index == self.fail_after:
                    assert self.fail_with is not None
                    raise self.fail_with
                if index:
                    await asyncio.sleep(self.delay_s)
                delta = ChoiceDelta(role="assistant" if index == 0 else None, content=word)
                yield ChatCompletionChunk(
                    id="chatcmpl-1",
                    model=request.model,
                    choices=[ChatCompletionStreamChoice(delta=delta)],
                )
            yield ChatCompletionChunk(
                id="chatcmpl-1",
                model=request.model,
                choices=[ChatCompletionStreamChoice(delta=ChoiceDelta(), finish_reason="stop")],
            )
            yield ChatCompletionChunk(
                id="chatcmpl-1", model=request.model, choices=[], usage=Usage.of(5, len(self.words))
            )
        finally:
            self.closed.set()

    async def text_completion(self, request: TextCompletionRequest) -> TextCompletionResponse:
        self.requests.append(request)
        self._check(request.model)
        choice = TextCompletionChoice(text="".join(self.words), finish_reason="stop")
        return TextCompletionResponse(
            model=request.model, choices=[choice], usage=Usage.of(5, len(self.words))
        )

    async def stream_text_completion(
        self, request: TextCompletionRequest
    ) -> AsyncIterator[TextCompletionChunk]:
        self.requests.append(request)
        self._check(request.model)
        for word in self.words:
            yield TextCompletionChunk(
                id="cmpl-1", model=request.model, choices=[TextCompletionChoice(text=word)]
            )

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        self._check(request.model)
        return EmbeddingResponse(
            model=request.model,
            data=[
                EmbeddingData(index=i, embedding=[0.5, 0.25])
                for i, _ in enumerate(request.inputs())
            ],
            usage=EmbeddingUsage(prompt_tokens=2, total_tokens=2),
        )

    def listed_models(self) -> list[ListedModel]:
        model = ModelSettings(id=MODEL, context_length=4096, max_output_length=512)
        return [
            ListedModel(settings=model, nodes=["n1"], context_length=2048, healthy=self.healthy)
        ]


@dataclass
class FakeContext:
    settings: Settings
    balancer: FakeBalancer
    metrics_registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    fleet: None = None


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[str]:
    """Serve `app` as `serve` does (Granian with the [api] limits) on a free 127.0.0.1 port."""
    async with serving(app, app.state.api.settings.api, "127.0.0.1", 0) as url:
        yield url


Serve = Callable[..., Any]


@pytest.fixture
def fake() -> FakeBalancer:
    return FakeBalancer()


@pytest.fixture
async def fake_api(fake: FakeBalancer) -> AsyncIterator[Callable[..., Any]]:
    """`async with fake_api(**api_settings) as url`: the app over the fake balancer."""

    @asynccontextmanager
    async def start(**api: Any) -> AsyncIterator[str]:
        settings = make_settings(**api)

        @asynccontextmanager
        async def open_context(settings: Settings) -> AsyncIterator[FakeContext]:
            yield FakeContext(settings=settings, balancer=fake)

        async with running(create_app(settings, open_context=open_context)) as url:
            yield url

    yield start
