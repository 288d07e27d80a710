"""Ollama's native API: request mapping, thinking, warm models."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from {{ cookiecutter.package_name }}.backends.ollama import OllamaClient
from {{ cookiecutter.package_name }}.llm.errors import InvalidRequestError
from {{ cookiecutter.package_name }}.llm.models import (
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    TextCompletionRequest,
    ToolCall,
)

from .conftest import ClientFactory, client_for

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest.fixture
async def offline() -> AsyncIterator[OllamaClient]:
    """A client for building request bodies; it never connects."""
    client = client_for("ollama", "http://127.0.0.1:9", ["llama3.2:3b"])
    assert isinstance(client, OllamaClient)
    yield client
    await client.aclose()


def request(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_sampling_fields_become_options(offline: OllamaClient) -> None:
    body = offline.chat_body(
        request(
            max_completion_tokens=50,
            max_tokens=10,
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            min_p=0.05,
            seed=7,
            stop="END",
            presence_penalty=0.5,
            frequency_penalty=0.25,
            repetition_penalty=1.1,
        ),
        stream=False,
    )
    assert body["options"] == {
        "num_predict": 50,  # max_completion_tokens wins, as in OpenAI's API
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "seed": 7,
        "stop": ["END"],
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "repeat_penalty": 1.1,
    }
    assert body["model"] == "llama3.2:3b" and body["stream"] is False
    assert body["truncate"] is False


def test_response_format_becomes_format(offline: OllamaClient) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    as_json = offline.chat_body(request(response_format={"type": "json_object"}), stream=True)
    assert as_json["format"] == "json"
    structured = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert offline.chat_body(request(response_format=structured), stream=True)["format"] == schema
    assert "format" not in offline.chat_body(request(response_format={"type": "text"}), stream=True)


@pytest.mark.parametrize(
    ("fields", "think"),
    [
        ({"reasoning": {"effort": "high"}}, "high"),
        ({"reasoning": {"enabled": True}}, True),
        ({"reasoning": {"enabled": False}}, False),
        ({"reasoning_effort": "none"}, False),
        ({}, None),
    ],
)
def test_reasoning_becomes_think(offline: OllamaClient, fields: dict, think: object) -> None:
    assert offline.chat_body(request(**fields), stream=False).get("think") == think


def test_messages_in_ollamas_shape(offline: OllamaClient) -> None:
    call = ToolCall(id="call_9", function=FunctionCall(name="lookup", arguments='{"q": "x"}'))
    image = "data:image/png;base64,iVBORw0KGgo="
    body = offline.chat_body(
        ChatCompletionRequest(
            model="llama3.2:3b",
            tools=TOOLS,
            messages=[
                ChatMessage(role="developer", content="be brief"),
                ChatMessage(
                    role="user",
                    content=[
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": image}},
                    ],
                ),
                ChatMessage(role="assistant", content=None, tool_calls=[call], reasoning="hmm"),
                ChatMessage(role="tool", tool_call_id="call_9", content="a cat"),
            ],
        ),
        stream=False,
    )
    system, user, assistant, tool = body["messages"]
    assert system == {"role": "system", "content": "be brief"}
    assert user == {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="]}
    # Arguments travel as an object; the tool result is matched by the tool's name.
    assert assistant["tool_calls"] == [{"function": {"name": "lookup", "arguments": {"q": "x"}}}]
    assert assistant["thinking"] == "hmm"
    assert tool == {"role": "tool", "content": "a cat", "tool_name": "lookup"}
    assert body["tools"] == TOOLS


def test_tool_choice_none_offers_no_tools(offline: OllamaClient) -> None:
    assert "tools" not in offline.chat_body(request(tools=TOOLS, tool_choice="none"), stream=False)


def test_bad_input_is_refused_before_sending(offline: OllamaClient) -> None:
    url_image = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(InvalidRequestError, match="base64"):
        offline.chat_body(request(messages=[{"role": "user", "content": url_image}]), stream=False)
    broken = ToolCall(id="c", function=FunctionCall(name="lookup", arguments="{not json"))
    messages = [ChatMessage(role="assistant", tool_calls=[broken])]
    with pytest.raises(InvalidRequestError, match="not JSON"):
        offline.chat_body(request(messages=messages), stream=False)


def test_text_completion_is_raw(offline: OllamaClient) -> None:
    plain = TextCompletionRequest(model="llama3.2:3b", prompt="abc", max_tokens=3)
    assert offline.generate_body(plain, stream=False)["raw"] is True
    infill = TextCompletionRequest(model="llama3.2:3b", prompt="def f(", suffix="):")
    body = offline.generate_body(infill, stream=True)
    assert body["suffix"] == "):" and "raw" not in body


async def test_thinking_becomes_reasoning(make_client: ClientFactory) -> None:
    client, server = await make_client("ollama", reasoning_tokens=4, output_tokens=3)
    ask = request(model=server.sim.config.model_names()[0], reasoning={"enabled": True})
    whole = await client.chat_completion(ask)
    message = whole.choices[0].message
    assert message.reasoning is not None and len(message.reasoning.split()) == 4
    assert len(message.text().split()) == 3
    streamed = [chunk async for chunk in client.stream_chat_completion(ask)]
    reasoning = "".join(c.choices[0].delta.reasoning or "" for c in streamed if c.choices)
    assert reasoning == message.reasoning
    assert whole.usage is not None and whole.usage.completion_tokens == 7


async def test_discovery_reports_warm_models_and_details(make_client: ClientFactory) -> None:
    client, _ = await make_client("ollama", context_length=8192)
    (model,) = await client.discover_models()
    assert model.loaded is True
    assert model.context_length == 8192
    assert model.parameters["quantization_level"] == "Q4_K_M"
    assert model.capabilities["chat"] and "embeddings" not in model.capabilities
    await client.check_health()
    assert client.get_supported_models()[0].loaded is True


async def test_tool_arguments_become_a_string(make_client: ClientFactory) -> None:
    client, server = await make_client("ollama")
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"n": {"type": "number"}}},
            },
        }
    ]
    answer = await client.chat_completion(
        request(model=server.sim.config.model_names()[0], tools=tools)
    )
    (call,) = answer.choices[0].message.tool_calls or []
    assert isinstance(call.function.arguments, str)
    assert json.loads(call.function.arguments) == {"n": 1.5}
