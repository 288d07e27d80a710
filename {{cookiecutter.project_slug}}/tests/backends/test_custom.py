"""The custom client skeleton: every method says what to write and where."""

from __future__ import annotations

from typing import Any

import pytest

from {{ cookiecutter.package_name }}.backends.custom import CustomClient
from {{ cookiecutter.package_name }}.llm.models import (
    ChatCompletionRequest,
    ChatMessage,
    EmbeddingRequest,
    TextCompletionRequest,
)

from .conftest import client_for

CHAT = ChatCompletionRequest(model="my-model", messages=[ChatMessage(role="user", content="hi")])
TEXT = TextCompletionRequest(model="my-model", prompt="hi")
CALLS: list[tuple[str, Any]] = [
    ("chat_completion", CHAT),
    ("text_completion", TEXT),
    ("embeddings", EmbeddingRequest(model="my-model", input="hi")),
    ("stream_chat_completion", CHAT),
    ("stream_text_completion", TEXT),
    ("check_health", None),
    ("list_models", None),
    ("discover_models", None),
]


@pytest.mark.parametrize(("method", "argument"), CALLS)
async def test_each_method_names_what_to_implement(method: str, argument: Any) -> None:
    client = client_for("custom", "http://127.0.0.1:9", ["my-model"])
    try:
        assert isinstance(client, CustomClient)
        call = getattr(client, method)
        with pytest.raises(NotImplementedError) as caught:
            result = call() if argument is None else call(argument)
            await result
        message = str(caught.value)
        name = "list_models" if method == "discover_models" else method
        assert f"CustomClient.{name}" in message
        assert "backends/custom.py" in message and "openai_compatible.py" in message
    finally:
        await client.aclose()


async def test_shared_parts_work_before_anything_is_written() -> None:
    client = client_for("custom", "http://127.0.0.1:9", ["my-model"])
    try:
        assert [model.id for model in client.get_supported_models()] == ["my-model"]
        assert client.get_metrics().server_signals_age_s is None
    finally:
        await client.aclose()
