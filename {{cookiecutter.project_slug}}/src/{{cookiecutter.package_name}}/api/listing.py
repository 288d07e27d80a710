"""The model listing OpenRouter reads from GET /v1/models.

Which models: every model in `[[models]]` that at least one node serves.
Limits: `context_length` is the smallest of the configured value and every
serving node's discovered value, so a request OpenRouter routes here fits
whichever node gets it.  `max_output_length` is the configured value (never
above the context); it is also the cap the API enforces on `max_tokens`.  A
limit nobody knows is left out rather than guessed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from ..balancer import ListedModel
from ..config import ModelSettings, Settings
from . import v2


def smallest(*values: int | None) -> int | None:
    known = [value for value in values if value is not None]
    return min(known) if known else None


def limits(listed: ListedModel) -> tuple[int | None, int | None]:
    """(context_length, max_output_length) the listing promises for one model."""
    context = smallest(listed.settings.context_length, listed.context_length)
    return context, smallest(listed.settings.max_output_length, context)


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
    settings: Settings, fleet: Sequence[ListedModel], *, created: int
) -> dict[str, Any]:
    """The whole `{"data": [...]}` document in the configured format.

    `fleet` is the balancer's view of each listed model; a model no node serves
    is left out.  A V2 document is validated before it is returned
    (pydantic's ValidationError if it does not pass).
    """
    data = []
    for listed in fleet:
        if not listed.nodes:
            continue
        context, output = limits(listed)
        if settings.api.listing_format == "v2":
            document = v2.model_document(
                listed.settings, context_length=context, max_output=output, created=created
            ).model_dump(mode="json", exclude_none=True)
        else:
            document = flat_document(
                listed.settings, context_length=context, max_output=output, created=created
            )
        data.append(document)
    listing = {"data": data}
    if settings.api.listing_format == "v2":
        v2.validate(listing)
    return listing


def unready(fleet: Sequence[ListedModel]) -> list[str]:
    """Listed models whose nodes are all unhealthy, ejected or draining."""
    return [listed.settings.id for listed in fleet if listed.nodes and not listed.healthy]


def print_models(settings: Settings) -> int:
    """`models`: the listing the API would serve now, after one discovery round."""
    print(json.dumps(asyncio.run(_discover_listing(settings)), indent=2))
    return 0


async def _discover_listing(settings: Settings) -> dict[str, Any]:
    from ..context import Context

    async with Context.open(settings) as context:
        return build_listing(settings, context.balancer.listed_models(), created=int(time.time()))
