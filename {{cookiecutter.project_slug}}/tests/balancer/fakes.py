"""Fake nodes for the balancer's unit tests: clients whose state each test constructs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from {{ cookiecutter.package_name }}.config import LoadBalancerSettings, ModelSettings, NodeSettings, Settings
from {{ cookiecutter.package_name }}.llm.errors import LlmError, UpstreamUnavailableError
from {{ cookiecutter.package_name }}.llm.interfaces import StreamingLlmClient
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
    ModelInfo,
    NodeMetrics,
    TextCompletionChoice,
    TextCompletionChunk,
    TextCompletionRequest,
    TextCompletionResponse,
)

MODEL = "m"


@dataclass
class Tracker:
    """Counts attempts in flight across every fake of one test."""

    active: int = 0
    most: int = 0

    def enter(self) -> None:
        self.active += 1
        self.most = max(self.most, self.active)

    def leave(self) -> None:
        self.active -= 1


@dataclass
class FakeClient(StreamingLlmClient):
    """A node whose answers the test scripts: errors, a gate to hold requests, gauges."""

    name: str
    tracker: Tracker = field(default_factory=Tracker)
    models: list[ModelInfo] = field(default_factory=list)
    up: bool = True
    fail: list[LlmError] = field(default_factory=list)  # raised by the next attempts, in order
    fail_mid_stream: LlmError | None = None
    gate: asyncio.Event | None = None  # when set, requests wait for it
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    seen_models: list[str] = field(default_factory=list)
    health_checks: int = 0
    closed: bool = False

    def get_supported_models(self) -> list[ModelInfo]:
        return self.models

    def get_metrics(self) -> NodeMetrics:
        return self.metrics

    async def _begin(self, model: str) -> None:
        self.seen_models.append(model)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise self.fail.pop(0)

    async def chat_completion(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        self.tracker.enter()
        try:
            await self._begin(request.model)
            return ChatCompletionResponse(
                model=request.model,
                choices=[
                    ChatCompletionChoice(
                        message=ChatMessage(role="assistant", content=self.name),
                        finish_reason="stop",
                    )
                ],
            )
        finally:
            self.tracker.leave()

    async def text_completion(self, request: TextCompletionRequest) -> TextCompletionResponse:
        self.tracker.enter()
        try:
            await self._begin(request.model)
            return TextCompletionResponse(
                model=request.model, choices=[TextCompletionChoice(text=self.name)]
            )
        finally:
            self.tracker.leave()

    async def embeddings(self, request: EmbeddingRequest) -> EmbeddingResponse:
        self.tracker.enter()
        try:
            await self._begin(request.model)
            return EmbeddingResponse(
                model=request.model,
                data=[EmbeddingData(index=0, embedding=[1.0])],
                usage=EmbeddingUsage(prompt_tokens=1, total_tokens=1),
            )
        finally:
            self.tracker.leave()

    async def stream_chat_completion(
        self, request: ChatCompletionRequest
    ) -> AsyncIterator[ChatCompletionChunk]:
        self.tracker.enter()
        try:
            await self._begin(request.model)
            for index in range(3):
                if index == 1 and self.fail_mid_stream is not None:
                    raise self.fail_mid_stream
                yield ChatCompletionChunk(
                    id="chunk",
                    model=request.model,
                    choices=[ChatCompletionStreamChoice(delta=ChoiceDelta(content=self.name))],
                )
        finally:
            self.tracker.leave()

    async def stream_text_completion(
        self, request: TextCompletionRequest
    ) -> AsyncIterator[TextCompletionChunk]:
        self.tracker.enter()
        try:
            await self._begin(request.model)
            yield TextCompletionChunk(
                id="chunk", model=request.model, choices=[TextCompletionChoice(text=self.name)]
            )
        finally:
            self.tracker.leave()

    async def check_health(self) -> None:
        self.health_checks += 1
        if not self.up:
            raise UpstreamUnavailableError(f"{self.name} is down")

    async def discover_models(self) -> list[ModelInfo]:
        if not self.up:
            raise UpstreamUnavailableError(f"{self.name} is down")
        return self.models

    async def aclose(self) -> None:
        self.closed = True


def read_ago(metrics: NodeMetrics, seconds: float) -> None:
    """Make the server's gauges look read `seconds` ago."""
    metrics.read_at = time.monotonic() - seconds


def lb_settings(**overrides: object) -> LoadBalancerSettings:
    return LoadBalancerSettings.model_validate(overrides)


def settings(*, models: tuple[str, ...] = (MODEL,), **lb: object) -> Settings:
    return Settings(
        nodes=[],
        models=[ModelSettings(id=model) for model in models],
        load_balancer=lb_settings(**lb),
    )


def node_settings(name: str, **overrides: object) -> NodeSettings:
    data: dict[str, object] = {"name": name, "url": f"http://127.0.0.1:9/{name}", "models": [MODEL]}
    data.update(overrides)
    return NodeSettings.model_validate(data)


def chat(model: str = MODEL, text: str = "hello", **extra: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    )
