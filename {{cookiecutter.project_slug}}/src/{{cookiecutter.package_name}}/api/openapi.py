"""The OpenAPI document, generated once from the request and answer models.

Written out rather than collected from route declarations, so the routes stay plain Starlette and
the document says what the API really answers: every error status with OpenAI's error object, SSE
for streams, the Bearer key on every path but /health and /ready.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
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


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class Error(BaseModel):
    """OpenAI's error object, the body of every refusal."""

    error: ErrorDetail


# Every status a completion or embedding request can get besides 200; 429 and 503 say
# when to retry in Retry-After, 405 which methods the path takes in Allow.
_REFUSALS = (400, 401, 404, 405, 408, 413, 429, 500, 502, 503, 504)
_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_OBJECT = {"application/json": {"schema": {"type": "object"}}}
_STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}


def build_document(title: str, version: str, models: Sequence[str] = ()) -> dict[str, Any]:
    """The whole document (OpenAPI 3.1); `models`, when given, are the ids `model` may name."""
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
        for name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error = _json(ref(Error, "serialization"))

    def operation(
        method: str, summary: str, content: dict[str, Any], *statuses: int, **more: Any
    ) -> dict[str, Any]:
        refusals = {
            str(s): {"description": HTTPStatus(s).phrase, "content": error} for s in statuses
        }
        answer = {"200": {"description": summary, "content": content}}
        return {method: {"summary": summary, "responses": answer | refusals, **more}}

    def post(summary: str, request: type[BaseModel], answer: type[BaseModel]) -> dict[str, Any]:
        content = _json(ref(answer, "serialization"))
        if answer is not EmbeddingResponse:
            # `data: {chunk}` events ending with `data: [DONE]` (README: Streaming).
            content["text/event-stream"] = {}
        body = {"required": True, "content": _json(ref(request, "validation"))}
        if models:
            schemas[request.__name__]["properties"]["model"]["enum"] = list(models)
        return operation("post", summary, content, *_REFUSALS, requestBody=body)

    def get(summary: str, content: dict[str, Any], *statuses: int, **more: Any) -> dict[str, Any]:
        return operation("get", summary, content, *statuses, 405, **more)

    model_id = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
    listing = {"type": "object", "required": ["data"], "properties": {"data": {"type": "array"}}}
    paths = {
        "/v1/chat/completions": post(
            "Chat completion", ChatCompletionRequest, ChatCompletionResponse
        ),
        "/v1/completions": post("Text completion", TextCompletionRequest, TextCompletionResponse),
        "/v1/embeddings": post("Embeddings", EmbeddingRequest, EmbeddingResponse),
        "/v1/models": get("The provider listing", _json(listing), 401),
        "/v1/models/{model_id}": get("One model", _OBJECT, 401, 404, parameters=[model_id]),
        "/health": get("The process is up", _json(_STATUS), security=[]),
        "/ready": get("Every model has a healthy node", _json(_STATUS), 503, security=[]),
        "/metrics": get("Prometheus metrics", _TEXT, 401),
        "/openapi.json": get("This document", _OBJECT, 401),
    }
    # Not ready answers with its status too, naming what is missing.
    paths["/ready"]["get"]["responses"]["503"]["content"] = _json(_STATUS)
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
