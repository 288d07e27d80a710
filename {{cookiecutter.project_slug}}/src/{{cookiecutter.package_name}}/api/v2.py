"""OpenRouter's Provider Monitor Schema V2 (`schema_version` "2.4"): building and checking.

OpenRouter drops a whole V2 document for one key it does not know, and hides endpoints it already
served, so each document is checked before it is served: against OpenRouter's own published schema
(provider-monitor-schema-v2.openapi.json beside this file, unchanged from OpenRouterTeam/docs,
assets/, schema 2.4, commit c26125a5) and against the rules its guide states in prose only: price
and capacity entries unique within their scope, and a text input priced per token, not per image.
"""

from __future__ import annotations

import json
from decimal import Decimal
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match

from ..config import ModelSettings

_SPEC = json.loads(
    files(__package__).joinpath("provider-monitor-schema-v2.openapi.json").read_bytes()
)
_SCHEMA = Draft202012Validator(
    {"$ref": "#/components/schemas/ModelDocumentV2", "components": _SPEC["components"]}
)


def check(document: dict[str, Any]) -> None:
    """Raise ValueError naming the first thing OpenRouter would reject in one model's document."""
    error = best_match(_SCHEMA.iter_errors(document))
    if error is not None:
        error = _leaf(error)
        raise ValueError(f"{error.json_path}: {error.message}")
    scopes = [("input", document["input_modalities"]), ("output", document["output_modalities"])]
    for where, modalities in scopes:
        _unique(f"{where} modality", [modality["type"] for modality in modalities])
        for modality in modalities:
            place = f"the {modality['type']} {where}"
            # "Entries must be unique by type together with the qualifier fields" (none used).
            _unique(f"{place}'s price", [price["type"] for price in modality.get("pricing", [])])
            slots = [(c["type"], c["unit"], c.get("per")) for c in modality.get("capacity", [])]
            _unique(f"{place}'s capacity", slots)
            units = {price["unit"] for price in modality.get("pricing", [])}
            if modality["type"] == "text" and units - {"token", "character"}:
                raise ValueError(f"{place} is priced per {sorted(units)}: per token only")
    _unique("request price", [price["type"] for price in document.get("pricing", [])])


def validate(listing: Any) -> None:
    """Check a whole `{"data": [...]}` listing; raises ValueError."""
    if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
        raise ValueError('expected {"data": [model documents]}')
    for index, document in enumerate(listing["data"]):
        try:
            check(document)
        except ValueError as error:
            raise ValueError(f"data[{index}] {error}") from None


def _leaf(error: ValidationError) -> ValidationError:
    # Inside a oneOf, the branch of the entry's own `type` says what is wrong with it.
    while error.context:
        wrong_type = {sub.schema_path[0] for sub in error.context if list(sub.path) == ["type"]}
        own = [sub for sub in error.context if sub.schema_path[0] not in wrong_type]
        error = max(own or error.context, key=lambda sub: len(sub.absolute_path))
    return error


def _unique(what: str, keys: list[Any]) -> None:
    if len(keys) != len(set(keys)):
        raise ValueError(f"each {what} must be unique, got {keys}")


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
) -> dict[str, Any]:
    """One model in V2 form, checked, from the same settings and limits as the flat listing."""
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
    image = {"pricing": _prices(("prompt", "image", price.image))}
    kinds = dict.fromkeys(model.input_modalities)
    media = [
        {"type": kind, **(image if kind == "image" else {})} for kind in kinds if kind != "text"
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
        "schema_version": "2.4",
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
        "datacenters": [c.model_dump(exclude_none=True) for c in model.datacenters] or None,
    }
    checked: dict[str, Any] = _pruned(document)
    check(checked)
    return checked


def decimal(value: str) -> str:
    """A price as a plain decimal string ('5e-7' becomes '0.0000005'), as OpenRouter reads them."""
    return format(Decimal(value).normalize(), "f")


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
