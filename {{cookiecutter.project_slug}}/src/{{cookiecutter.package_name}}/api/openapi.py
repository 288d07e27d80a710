"""The OpenAPI document, generated once from the request and answer models.

Written out rather than collected from route declarations, so the routes stay
plain Starlette and the document says what the API really answers: every
error status with OpenAI's error object, SSE for streams, the Bearer key on
every path but /health and /ready.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel

from ..llm.models import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    TextCompletionRequest,
    TextCompletionResponse,
)

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ERRORS = {
    "400": "The request is malformed or names a bad value",
    "401": "Missing or wrong API key",
    "404": "Unknown model or path",
    "405": "Method not allowed (see Allow)",
    "408": "The body did not arrive in time",
    "413": "The body is over the limit",
    "429": "Every node is busy (see Retry-After)",
    "500": "Internal error",
    "502": "The node failed",
    "503": "No node can serve (see Retry-After)",
    "504": "The node or the request deadline timed out",
}
_OPEN = ("/health", "/ready")


def build_document(title: str, version: str, models: Sequence[str] = ()) -> dict[str, Any]:
    """The whole document (OpenAPI 3.1); `models`, when given, are the ids `model` may name."""
    schemas: dict[str, Any] = {"Error": ERROR}

    def ref(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
        for name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    paths: dict[str, Any] = {}
    for path, summary, request, answer, streams in (
        (
            "/v1/chat/completions",
            "Chat completion",
            ChatCompletionRequest,
            ChatCompletionResponse,
            True,
        ),
        ("/v1/completions", "Text completion", TextCompletionRequest, TextCompletionResponse, True),
        ("/v1/embeddings", "Embeddings", EmbeddingRequest, EmbeddingResponse, False),
    ):
        content = {"application/json": {"schema": ref(answer, "serialization")}}
        if streams:
            # `data: {chunk}` events ending with `data: [DONE]` (README: Streaming).
            content["text/event-stream"] = {}
        body = ref(request, "validation")
        if models:
            schemas[request.__name__]["properties"]["model"]["enum"] = list(models)
        paths[path] = {
            "post": {
                "summary": summary,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                },
                "responses": {"200": {"description": "The answer", "content": content}}
                | _errors(
                    "400", "401", "404", "405", "408", "413", "429", "500", "502", "503", "504"
                ),
            }
        }
    listing = {"type": "object", "required": ["data"], "properties": {"data": {"type": "array"}}}
    paths["/v1/models"] = _get("The provider listing", _json(listing), "401")
    paths["/v1/models/{model_id}"] = _get("One model", _json({"type": "object"}), "401", "404")
    paths["/v1/models/{model_id}"]["get"]["parameters"] = [
        {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    status = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    }
    paths["/health"] = _get("The process is up", _json(status))
    paths["/ready"] = _get("Every model has a healthy node", _json(status), "503")
    paths["/ready"]["get"]["responses"]["503"]["content"] = _json(status)
    text = {"text/plain": {"schema": {"type": "string"}}}
    paths["/metrics"] = _get("Prometheus metrics", text, "401")
    paths["/openapi.json"] = _get("This document", _json({"type": "object"}), "401")
    for path in _OPEN:
        paths[path]["get"]["security"] = []
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "summary": "OpenAI-compatible completions and OpenRouter's provider model listing.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*codes: str) -> dict[str, Any]:
    error = _json({"$ref": "#/components/schemas/Error"})
    return {code: {"description": _ERRORS[code], "content": error} for code in codes}


def _get(summary: str, content: dict[str, Any], *errors: str) -> dict[str, Any]:
    responses = {"200": {"description": summary, "content": content}}
    return {"get": {"summary": summary, "responses": responses | _errors(*errors, "405")}}
