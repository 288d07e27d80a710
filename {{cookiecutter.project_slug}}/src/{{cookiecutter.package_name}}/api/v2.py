"""OpenRouter's Provider Monitor Schema V2 (`schema_version` "2.x"), as closed pydantic models.

OpenRouter drops a whole V2 document for one key it does not know, and hides
endpoints it already served, so every object here forbids extra keys and a
document is validated before it is served.  Shapes follow OpenRouter's
"for providers" guide (schema 2.4).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..config import ModelSettings

SCHEMA_VERSION = "2.4"

InputType = Literal["text", "image", "video", "audio", "file"]
OutputType = Literal[
    "text", "image", "video", "speech", "transcription", "embeddings", "rerank", "audio"
]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Limit(Closed):
    value: int = Field(ge=1)
    unit: Literal["token", "character", "second", "byte", "item"] = "token"


class Price(Closed):
    type: Literal[
        "prompt",
        "cached_prompt",
        "cache_write",
        "completion",
        "internal_reasoning",
        "request",
        "web_search",
    ]
    unit: Literal["token", "image", "request", "search", "second", "character"]
    cost_usd: str = Field(pattern=r"^\d+(\.\d+)?$")


class Capacity(Closed):
    type: str
    unit: str
    per: Literal["minute", "hour", "day"] | None = None
    value: int = Field(ge=0)


class Descriptor(Closed):
    """How a request parameter may be set: its kind and bounds."""

    type: Literal["range", "integer", "boolean", "enum", "array", "object", "unknown"]
    min: float | None = None
    max: float | None = None
    unit: str | None = None
    values: list[str] | None = None
    max_items: int | None = None


class SupportedInputs(Closed):
    max_context_length: Limit | None = None
    max_prompt_length: Limit | None = None
    sources: Descriptor | None = None


class InputModality(Closed):
    type: InputType
    supported_inputs: SupportedInputs | None = None
    pricing: list[Price] | None = None
    capacity: list[Capacity] | None = None


class OutputModality(Closed):
    type: OutputType
    max_length: Limit | None = None
    streaming: bool | None = None
    supported_parameters: dict[str, Descriptor]
    pricing: list[Price] | None = None


class Slug(Closed):
    slug: str


class Datacenter(Closed):
    country_code: str = Field(pattern=r"^[A-Z]{2}$")
    region: str | None = None


class ModelDocument(Closed):
    schema_version: str = Field(default=SCHEMA_VERSION, pattern=r"^2\.\d+$")
    id: str = Field(min_length=1)
    name: str | None = None
    hugging_face_id: str = ""
    created: int | None = None
    quantization: str | None = None
    tokenizer: str | None = None
    description: str | None = None
    input_modalities: list[InputModality] = Field(min_length=1)
    output_modalities: list[OutputModality] = Field(min_length=1)
    pricing: list[Price] | None = None
    capacity: list[Capacity] | None = None
    passthrough_parameters: dict[str, Descriptor] | None = None
    deprecation_date: str | None = None
    is_ready: bool | None = None
    is_free: bool | None = None
    discount_to_user: float | None = None
    openrouter: Slug | None = None
    datacenters: list[Datacenter] | None = None
    deployment_region: str | None = None


class Document(Closed):
    data: list[ModelDocument]


# The descriptor each plain sampling parameter is declared with.
_SAMPLING: dict[str, Descriptor] = {
    "temperature": Descriptor(type="range", min=0, max=2),
    "top_p": Descriptor(type="range", min=0, max=1),
    "top_k": Descriptor(type="integer", min=0),
    "min_p": Descriptor(type="range", min=0, max=1),
    "top_a": Descriptor(type="range", min=0, max=1),
    "frequency_penalty": Descriptor(type="range", min=-2, max=2),
    "presence_penalty": Descriptor(type="range", min=-2, max=2),
    "repetition_penalty": Descriptor(type="range", min=0, max=2),
    "stop": Descriptor(type="array", max_items=4),
    "seed": Descriptor(type="integer"),
    "logit_bias": Descriptor(type="object"),
}
# Capability flags: OpenRouter enables these only after its own tests pass.
_FEATURES = {"tools", "structured_outputs", "reasoning", "logprobs"}


def model_document(
    model: ModelSettings, *, context_length: int | None, max_output: int | None, created: int
) -> ModelDocument:
    """One model in V2 form, from the same settings and limits as the flat listing."""
    parameters: dict[str, Descriptor] = {
        name: _SAMPLING[name] for name in model.supported_sampling_parameters if name in _SAMPLING
    }
    if "max_tokens" in model.supported_sampling_parameters:
        parameters["max_tokens"] = Descriptor(type="integer", min=1, max=max_output, unit="token")
    for feature in model.supported_features:
        if feature in _FEATURES:
            parameters[feature] = Descriptor(type="boolean")
        elif feature == "json_mode":
            parameters["response_format"] = Descriptor(type="enum", values=["text", "json_object"])
    pricing = model.pricing
    prompt = _prices(("prompt", "token", pricing.prompt), ("prompt", "image", pricing.image))
    text_in = InputModality(
        type="text",
        supported_inputs=(
            SupportedInputs(max_context_length=Limit(value=context_length))
            if context_length
            else None
        ),
        pricing=prompt,
    )
    outputs = [
        OutputModality(
            type=kind,
            max_length=Limit(value=max_output) if max_output and kind == "text" else None,
            streaming=True if kind == "text" else None,
            supported_parameters=parameters if kind == "text" else {},
            pricing=_prices(("completion", "token", pricing.completion))
            if kind == "text"
            else None,
        )
        for kind in model.output_modalities
    ]
    return ModelDocument(
        id=model.id,
        name=model.name or model.id,
        hugging_face_id=model.hugging_face_id,
        created=model.created or created,
        quantization=model.quantization,
        description=model.description,
        input_modalities=[
            text_in,
            *(InputModality(type=kind) for kind in model.input_modalities if kind != "text"),
        ],
        output_modalities=outputs,
        pricing=_prices(("request", "request", pricing.request)),
        deprecation_date=model.deprecation_date,
        is_ready=model.is_ready,
        is_free=model.is_free,
    )


def decimal(value: str) -> str:
    """A price as a plain decimal string ('5e-7' becomes '0.0000005'), as OpenRouter reads them."""
    return format(Decimal(value).normalize(), "f")


def validate(document: dict[str, Any]) -> Document:
    """Check a whole V2 document as OpenRouter would; raises pydantic's ValidationError."""
    return Document.model_validate(document)


def _prices(*entries: tuple[str, str, str]) -> list[Price] | None:
    # OpenRouter asks not to zero-stuff: a SKU that is not billed is left out.
    prices = [
        Price.model_validate({"type": kind, "unit": unit, "cost_usd": decimal(cost)})
        for kind, unit, cost in entries
        if Decimal(cost) != 0
    ]
    return prices or None
