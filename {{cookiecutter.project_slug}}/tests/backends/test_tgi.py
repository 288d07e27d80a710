"""TGI: /generate parameters, grammars, /info limits and its flat errors."""

from __future__ import annotations

import pytest

from {{ cookiecutter.package_name }}.backends.tgi import TgiClient, generate_parameters, grammar
from {{ cookiecutter.package_name }}.llm.errors import ContextLengthExceededError, NotSupportedError
from {{ cookiecutter.package_name }}.llm.models import (
    ChatCompletionRequest,
    ChatMessage,
    TextCompletionRequest,
)

from .conftest import ClientFactory, client_for

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}


def text(**fields: object) -> TextCompletionRequest:
    return TextCompletionRequest.model_validate({"model": "tgi", "prompt": "abc", **fields})


def test_generate_parameters() -> None:
    params = generate_parameters(
        text(max_tokens=9, temperature=0.7, top_p=0.9, top_k=5, seed=1, stop=["x"])
    )
    assert params == {
        "details": True,
        "do_sample": True,
        "max_new_tokens": 9,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 5,
        "seed": 1,
        "stop": ["x"],
    }


def test_greedy_and_defaults_stay_within_tgis_rules() -> None:
    # TGI refuses temperature 0 and top_p 1: greedy is do_sample false, top_p 1 is no top_p.
    greedy = generate_parameters(text(temperature=0, top_p=1))
    assert greedy == {"details": True, "do_sample": False}
    # OpenAI samples by default; TGI would decode greedily unless told.
    assert generate_parameters(text())["do_sample"] is True


def test_response_format_becomes_a_grammar() -> None:
    structured = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}
    assert grammar(structured) == {"type": "json", "value": SCHEMA}
    assert grammar({"type": "json_object"}) == {"type": "json", "value": {"type": "object"}}
    assert grammar({"type": "text"}) is None
    assert generate_parameters(text(response_format=structured))["grammar"]["value"] == SCHEMA
    with pytest.raises(NotSupportedError, match="suffix"):
        generate_parameters(text(suffix="end"))


async def test_chat_grammar_goes_to_the_server() -> None:
    client = client_for("tgi", "http://127.0.0.1:9", ["tgi"])
    try:
        assert isinstance(client, TgiClient)
        request = ChatCompletionRequest(
            model="tgi",
            messages=[ChatMessage(role="user", content="json please")],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}},
        )
        body = client.chat_body(request, stream=False)
        assert body["response_format"] == {"type": "json", "value": SCHEMA}
    finally:
        await client.aclose()


async def test_info_gives_context_and_capacity(make_client: ClientFactory) -> None:
    client, server = await make_client("tgi", context_length=1024, max_concurrency=2, max_queue=3)
    (model,) = await client.discover_models()
    assert (model.id, model.context_length) == (server.sim.config.model_names()[0], 1024)
    await client.check_health()
    assert client.get_metrics().server_capacity == 5


async def test_flat_errors_keep_tgis_words(make_client: ClientFactory) -> None:
    client, _ = await make_client("tgi", context_length=16)
    request = TextCompletionRequest(model="tgi", prompt="word " * 20, max_tokens=2)
    with pytest.raises(ContextLengthExceededError, match="Input validation error"):
        await client.text_completion(request)
