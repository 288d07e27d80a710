"""Generated requests: a property pass over the request models (hypothesis) and a
schema-driven run against a served app (schemathesis), both with fixed seeds and
bounded sizes.  Whatever arrives: no 5xx, no stack trace, every error OpenAI-shaped.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from {{ cookiecutter.package_name }}.api.app import create_app
from {{ cookiecutter.package_name }}.api.openapi import build_document
from {{ cookiecutter.package_name }}.llm.models import (
    ChatCompletionRequest,
    EmbeddingRequest,
    TextCompletionRequest,
)
from {{ cookiecutter.package_name }}_sim import SimConfig, SimHandle

from .conftest import KEY, MODEL, UPSTREAM, FakeBalancer, FakeContext, fleet, make_settings, running

AUTH = {"authorization": f"Bearer {KEY}"}
FIXED = settings(
    derandomize=True,  # a fixed seed: the same cases on every run
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def openai_error(response: httpx.Response) -> None:
    """The shape every refusal must have."""
    assert "Traceback" not in response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert error.get("param") is None or isinstance(error["param"], str)


# --- hypothesis: the request models ---------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
content_parts = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url", "input_audio"])},
        optional={"text": values, "image_url": values},
    ),
    max_size=2,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "robot"]) | values},
        optional={"content": st.text(max_size=20) | content_parts | values, "name": values},
    ),
    max_size=3,
)


def bodies(model: type[BaseModel], **shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """JSON objects using the model's own field names, with any values (some well typed)."""
    optional = {name: values for name in model.model_fields if name not in {"model", *shaped}}
    known = st.fixed_dictionaries(
        {"model": st.sampled_from([MODEL, "nope/none", ""]) | values, **shaped},
        optional=optional | {"surprise_field": values},
    )
    return known | values


ENDPOINTS = [
    (
        "/v1/chat/completions",
        ChatCompletionRequest,
        bodies(ChatCompletionRequest, messages=messages),
    ),
    (
        "/v1/completions",
        TextCompletionRequest,
        bodies(TextCompletionRequest, prompt=st.text(max_size=20) | values),
    ),
    ("/v1/embeddings", EmbeddingRequest, bodies(EmbeddingRequest, input=st.text() | values)),
]


@pytest.mark.parametrize(("path", "model", "strategy"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_any_json_body_gets_an_answer_or_an_openai_error(
    path: str, model: type[BaseModel], strategy: st.SearchStrategy[Any]
) -> None:
    app = create_app(make_settings())
    fake = FakeBalancer()
    app.state.api.attach(FakeContext(settings=app.state.api.settings, balancer=fake))
    loop = asyncio.new_event_loop()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test")

    @settings(FIXED, max_examples=100)
    @given(body=strategy)
    def check(body: Any) -> None:
        raw = json.dumps(body).encode()
        response = loop.run_until_complete(client.post(path, content=raw, headers=AUTH))
        assert response.status_code in (200, 400, 404), response.text
        if response.status_code != 200:
            openai_error(response)
            return
        # Accepted only what the model accepts, strictly, naming a served model.
        parsed = model.model_validate_json(raw, strict=True)
        assert getattr(parsed, "model", None) == MODEL

    try:
        check()
        # Both ways: a body the model accepts for the served model is answered.
        valid = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        with pytest.raises(ValidationError):
            model.model_validate_json(b"{}", strict=True)
        if model is ChatCompletionRequest:
            response = loop.run_until_complete(client.post(path, json=valid, headers=AUTH))
            assert response.status_code == 200
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


# --- schemathesis: the served app against its own document ------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    """The app over the real balancer and a simulated node, served in a thread of its own
    (schemathesis calls it synchronously)."""
    ready: list[str] = []
    started = threading.Event()
    stop: list[asyncio.Event] = []

    async def main() -> None:
        node = SimHandle(SimConfig(dialect="openai", models=[UPSTREAM], embedding_dim=4))
        await node.start()
        stop.append(asyncio.Event())
        try:
            async with running(create_app(fleet(node.url, max_concurrency=8))) as url:
                ready.append(url)
                started.set()
                await stop[0].wait()
        finally:
            await node.stop()
            started.set()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(30) and ready, "the app did not start"
    yield ready[0]
    loop.call_soon_threadsafe(stop[0].set)
    thread.join(30)


DOCUMENT = build_document("test", "0", [MODEL])
OPERATIONS = [
    result.ok() for result in schemathesis.openapi.from_dict(DOCUMENT).get_all_operations()
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_the_served_app_keeps_to_its_openapi_document(served: str, operation: Any) -> None:
    @settings(FIXED, max_examples=25)
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        response = case.call(base_url=served, headers=AUTH, timeout=30)
        case.validate_response(response, checks=CHECKS)
        assert "Traceback" not in response.text
        if response.status_code >= 400:
            openai_error(httpx.Response(response.status_code, content=response.content))

    check()
