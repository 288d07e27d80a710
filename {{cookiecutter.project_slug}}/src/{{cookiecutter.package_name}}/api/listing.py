"""The model listing OpenRouter reads from GET /v1/models.

Which models: every model in `[[models]]` that at least one node serves.
Limits: `context_length` is the smallest of the configured value and every
serving node's discovered value, so a request OpenRouter routes here fits
whichever node gets it; `max_output_length` likewise (and it is the cap on
`max_tokens`).  A limit nobody knows is left out rather than guessed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..config import ModelSettings, Settings
from ..llm.models import ModelInfo
from . import v2


def smallest(*values: int | None) -> int | None:
    known = [value for value in values if value is not None]
    return min(known) if known else None


def limits(model: ModelSettings, infos: Iterable[ModelInfo]) -> tuple[int | None, int | None]:
    """(context_length, max_output_length) the listing promises for one model."""
    infos = list(infos)
    context = smallest(model.context_length, *(info.context_length for info in infos))
    output = smallest(model.max_output_length, *(info.max_output_length for info in infos))
    return context, smallest(output, context) if output is not None else None


def flat_document(
    model: ModelSettings, *, context_length: int | None, max_output: int | None, created: int
) -> dict[str, Any]:
    """One model in the flat ("legacy") provider format."""
    pricing = model.pricing
    document: dict[str, Any] = {
        "id": model.id,
        "hugging_face_id": model.hugging_face_id,
        "name": model.name or model.id,
        "created": model.created or created,
        "input_modalities": model.input_modalities,
        "output_modalities": model.output_modalities,
        "quantization": model.quantization,
        "context_length": context_length,
        "max_output_length": max_output,
        "pricing": {
            "prompt": v2.decimal(pricing.prompt),
            "completion": v2.decimal(pricing.completion),
            "image": v2.decimal(pricing.image),
            "request": v2.decimal(pricing.request),
        },
        "supported_sampling_parameters": model.supported_sampling_parameters,
        "supported_features": model.supported_features,
        "description": model.description,
        "deprecation_date": model.deprecation_date,
        "is_ready": model.is_ready,
        "is_free": model.is_free,
    }
    return {key: value for key, value in document.items() if value is not None}


def build_listing(
    settings: Settings, served: Mapping[str, Sequence[ModelInfo]], *, created: int
) -> dict[str, Any]:
    """The whole `{"data": [...]}` document in the configured format.

    `served` maps each listed model id to what its nodes report about it; a
    V2 document is validated before it is returned (ValidationError if not).
    """
    data = []
    for model in settings.models:
        if model.id not in served:
            continue
        context, output = limits(model, served[model.id])
        if settings.api.listing_format == "v2":
            document = v2.model_document(
                model, context_length=context, max_output=output, created=created
            ).model_dump(mode="json", exclude_none=True)
        else:
            document = flat_document(
                model, context_length=context, max_output=output, created=created
            )
        data.append(document)
    listing = {"data": data}
    if settings.api.listing_format == "v2":
        v2.validate(listing)
    return listing


def print_models(settings: Settings) -> int:
    """`models`: the listing the API would serve now, after one discovery round."""
    print(json.dumps(asyncio.run(_discover_listing(settings)), indent=2))
    return 0


async def _discover_listing(settings: Settings) -> dict[str, Any]:
    from ..context import Context

    async with Context.open(settings) as context:
        return build_listing(settings, served_models(context), created=int(time.time()))


def served_models(context: Any) -> dict[str, list[ModelInfo]]:
    """Listed id -> what each serving node reports, from the balancer."""
    return dict(context.balancer.listed_models())
