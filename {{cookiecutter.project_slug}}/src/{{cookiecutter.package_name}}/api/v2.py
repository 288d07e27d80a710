"""OpenRouter's Provider Monitor Schema V2 (`schema_version` "2.4"), as closed pydantic models.

OpenRouter drops a whole V2 document for one key it does not know, and hides
endpoints it already served, so every object here forbids extra keys and a
document is validated before it is served.  Shapes follow OpenRouter's
published schema (OpenRouterTeam/docs, assets/provider-monitor-schema-v2.openapi.json,
2.4), plus rules its guide states in prose only: price and capacity entries are
unique within their scope, and a text input is priced per token, not per image.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import Datacenter, ModelSettings

Unit = Literal["second", "pixel", "byte", "token", "character"]
InputUnit = Literal["token", "image", "megapixel", "second", "character"]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Limit(Closed):
    value: int = Field(ge=1)
    unit: Unit = "token"


class InputPrice(Closed):
    type: Literal["prompt", "cached_prompt", "cache_write"]
    unit: InputUnit
    cost_usd: str = Field(pattern=r"^\d+(\.\d+)?$")


class OutputPrice(Closed):
    type: Literal["completion", "internal_reasoning"]
    unit: Literal[InputUnit, "request"]
    cost_usd: str = Field(pattern=r"^\d+(\.\d+)?$")


class RequestPrice(Closed):
    type: Literal["request", "web_search"]
    unit: Literal["request", "search"]
    cost_usd: str = Field(pattern=r"^\d+(\.\d+)?$")


class Capacity(Closed):
    type: Literal["prompt", "cached_prompt", "cache_write"]
    unit: InputUnit
    per: Literal["minute", "hour", "day"]
    value: int = Field(ge=1)


class Descriptor(Closed):
    """How a request parameter may be set: its kind and bounds."""

    type: Literal["range", "integer", "boolean", "enum", "array", "object", "unknown"]
    min: float | None = None
    max: float | None = None
    unit: Unit | None = None
    values: list[str | float] | None = None
    max_items: int | None = Field(default=None, ge=1)
    properties: dict[str, Descriptor] | None = None

    @model_validator(mode="after")
    def _keys_of_its_kind(self) -> Self:
        # The schema's if/then rules: each kind carries its own keys; enum and object need them.
        own = _OWN_KEYS.get(self.type, set())
        given = {key for key in self.model_fields_set - {"type"} if getattr(self, key) is not None}
        if given - own or (self.type in ("enum", "object") and not given):
            raise ValueError(f"a {self.type!r} descriptor takes {sorted(own) or 'no keys'}")
        return self


_OWN_KEYS = {
    "range": {"min", "max", "unit"},
    "integer": {"min", "max", "unit"},
    "enum": {"values"},
    "array": {"max_items"},
    "object": {"properties"},
}


def _unique(what: str, keys: list[Any]) -> None:
    if len(keys) != len(set(keys)):
        raise ValueError(f"{what} entries must be unique, got {keys}")


class SupportedInputs(Closed):
    max_context_length: Limit | None = None


class InputModality(Closed):
    type: Literal["text", "image", "video", "audio", "file"]
    supported_inputs: SupportedInputs | None = None
    pricing: list[InputPrice] | None = None
    capacity: list[Capacity] | None = None

    @model_validator(mode="after")
    def _prose_rules(self) -> Self:
        # "Entries must be unique by type together with the qualifier fields" (none used here).
        _unique(f"{self.type} pricing", [price.type for price in self.pricing or []])
        _unique(f"{self.type} capacity", [(c.type, c.unit, c.per) for c in self.capacity or []])
        media = {price.unit for price in self.pricing or []} - {"token", "character"}
        if self.type == "text" and media:
            raise ValueError(f"a text input is not priced per {sorted(media)}")
        if self.type != "text" and self.supported_inputs is not None:
            raise ValueError("only the text input has a context length")
        return self


class OutputModality(Closed):
    type: Literal[
        "text", "image", "video", "speech", "transcription", "embeddings", "rerank", "audio"
    ]
    max_length: Limit | None = None
    streaming: bool | None = None
    supported_parameters: dict[str, Descriptor]
    pricing: list[OutputPrice] | None = None

    @model_validator(mode="after")
    def _prose_rules(self) -> Self:
        _unique(f"{self.type} pricing", [price.type for price in self.pricing or []])
        return self


class ModelDocument(Closed):
    schema_version: Literal["2.4"] = "2.4"
    id: str = Field(min_length=1)
    name: str
    hugging_face_id: str | None = None
    created: int | None = None
    quantization: str | None = None
    tokenizer: str | None = None
    description: str | None = None
    input_modalities: list[InputModality] = Field(min_length=1)
    output_modalities: list[OutputModality] = Field(min_length=1)
    pricing: list[RequestPrice] | None = None
    passthrough_parameters: dict[str, Descriptor] | None = None
    deprecation_date: str | None = None
    is_ready: bool | None = None
    is_free: bool | None = None
    discount_to_user: float | None = Field(default=None, lt=1)
    datacenters: list[Datacenter] | None = None

    @model_validator(mode="after")
    def _unique_modalities(self) -> Self:
        _unique("input modality", [modality.type for modality in self.input_modalities])
        _unique("output modality", [modality.type for modality in self.output_modalities])
        _unique("request pricing", [price.type for price in self.pricing or []])
        return self


class Document(Closed):
    data: list[ModelDocument]


# The descriptor each plain sampling parameter is declared with.  logit_bias maps any token
# id to a bias: no fixed `properties` describe it, so it is declared `unknown`.
_SAMPLING: dict[str, dict[str, Any]] = {
    "temperature": {"type": "range", "min": 0, "max": 2},
    "top_p": {"type": "range", "min": 0, "max": 1},
    "top_k": {"type": "integer", "min": 0},
    "min_p": {"type": "range", "min": 0, "max": 1},
    "top_a": {"type": "range", "min": 0, "max": 1},
    "frequency_penalty": {"type": "range", "min": -2, "max": 2},
    "presence_penalty": {"type": "range", "min": -2, "max": 2},
    "repetition_penalty": {"type": "range", "min": 0, "max": 2},
    "stop": {"type": "array", "max_items": 4},
    "seed": {"type": "integer"},
    "logit_bias": {"type": "unknown"},
}
# Capability flags: OpenRouter enables these only after its own tests pass.
_FEATURES = {"tools", "structured_outputs", "reasoning", "logprobs"}


def model_document(
    model: ModelSettings,
    *,
    context_length: int | None,
    max_output: int | None,
    created: int,
    ready: bool,
) -> ModelDocument:
    """One model in V2 form, from the same settings and limits as the flat listing."""
    parameters: dict[str, dict[str, Any]] = {
        name: _SAMPLING[name] for name in model.supported_sampling_parameters if name in _SAMPLING
    }
    if "max_tokens" in model.supported_sampling_parameters:
        parameters["max_tokens"] = {"type": "integer", "min": 1, "max": max_output, "unit": "token"}
    for feature in model.supported_features:
        if feature in _FEATURES:
            parameters[feature] = {"type": "boolean"}
        elif feature == "json_mode":
            parameters["response_format"] = {"type": "enum", "values": ["text", "json_object"]}
    price = model.pricing
    text_in = {
        "type": "text",
        "supported_inputs": {"max_context_length": _limit(context_length)},
        "pricing": _prices(
            ("prompt", "token", price.prompt),
            ("cached_prompt", "token", price.input_cache_read),
            ("cache_write", "token", price.input_cache_write),
        ),
        "capacity": [{"type": "prompt", "unit": "token", "per": "minute", "value": tpm}]
        if (tpm := model.capacity_tpm)
        else None,
    }
    media = [
        {
            "type": kind,
            "pricing": _prices(("prompt", "image", price.image) if kind == "image" else None),
        }
        for kind in dict.fromkeys(model.input_modalities)
        if kind != "text"
    ]
    text_out = {
        "max_length": _limit(max_output),
        "streaming": True,
        "supported_parameters": parameters,
        "pricing": _prices(
            ("completion", "token", price.completion),
            ("internal_reasoning", "token", price.internal_reasoning),
        ),
    }
    document = {
        "id": model.id,
        "name": model.name or model.id,
        "hugging_face_id": model.hugging_face_id,
        "created": model.created or created,
        "quantization": model.quantization,
        "tokenizer": model.tokenizer,
        "description": model.description,
        "input_modalities": [text_in, *media],
        "output_modalities": [
            {"type": kind, **(text_out if kind == "text" else {"supported_parameters": {}})}
            for kind in dict.fromkeys(model.output_modalities)
        ],
        "pricing": _prices(("request", "request", price.request)),
        # A tier endpoint takes `service_tier` on the request; this declares the one it is.
        "passthrough_parameters": {"service_tier": {"type": "enum", "values": [tier]}}
        if (tier := model.service_tier)
        else None,
        "deprecation_date": model.deprecation_date,
        "is_ready": ready,
        "is_free": model.is_free,
        "discount_to_user": model.discount_to_user,
        "datacenters": [center.model_dump(exclude_none=True) for center in model.datacenters]
        or None,
    }
    return ModelDocument.model_validate(_pruned(document))


def decimal(value: str) -> str:
    """A price as a plain decimal string ('5e-7' becomes '0.0000005'), as OpenRouter reads them."""
    return format(Decimal(value).normalize(), "f")


def validate(document: dict[str, Any]) -> Document:
    """Check a whole V2 document as OpenRouter would; raises pydantic's ValidationError."""
    return Document.model_validate(document)


def _limit(value: int | None) -> dict[str, Any] | None:
    return {"value": value, "unit": "token"} if value else None


def _prices(*entries: tuple[str, str, str] | None) -> list[dict[str, str]] | None:
    # OpenRouter asks not to zero-stuff: a SKU that is not billed is left out.
    prices = [
        {"type": kind, "unit": unit, "cost_usd": decimal(cost)}
        for kind, unit, cost in filter(None, entries)
        if Decimal(cost) != 0
    ]
    return prices or None


def _pruned(value: Any) -> Any:
    """Without None values and objects left empty by them (not `supported_parameters: {}`)."""
    if isinstance(value, dict):
        kept = {key: _pruned(item) for key, item in value.items() if item is not None}
        return {key: item for key, item in kept.items() if item != {} or key.endswith("parameters")}
    if isinstance(value, list):
        return [_pruned(item) for item in value]
    return value
