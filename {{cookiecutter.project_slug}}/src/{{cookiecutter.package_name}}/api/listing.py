"""The model listing OpenRouter reads from GET /v1/models (README: "Listing on OpenRouter").

Every model in `[[models]]` that at least one node serves.  `context_length` is the smallest
of the configured value and every serving node's discovered one, so a request OpenRouter
routes here fits whichever node gets it; `max_output_length` (never above the context) is
also the cap the API enforces on `max_tokens`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..balancer import ListedModel
from ..config import ModelSettings, Settings
from . import v2


def smallest(*values: int | None) -> int | None:
    known = [value for value in values if value is not None]
    return min(known) if known else None


def flat_document(
    model: ModelSettings,
    *,
    context_length: int | None,
    max_output: int | None,
    created: int,
    ready: bool,
) -> dict[str, Any]:
    """One model in the flat ("legacy") provider format."""
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
        # The four prices of OpenRouter's example always; cache and reasoning ones when set.
        "pricing": {
            key: v2.decimal(value)
            for key, value in model.pricing
            if key in ("prompt", "completion", "image", "request") or Decimal(value)
        },
        "supported_sampling_parameters": model.supported_sampling_parameters,
        "supported_features": model.supported_features,
        "description": model.description,
        "deprecation_date": model.deprecation_date,
        "is_ready": ready,
        "is_free": model.is_free,
        "discount_to_user": model.discount_to_user,
        "capacity_tpm": model.capacity_tpm,
        "service_tier": model.service_tier,
        "datacenters": [c.model_dump(exclude_none=True) for c in model.datacenters] or None,
    }
    return {key: value for key, value in document.items() if value is not None}


def build_listing(
    settings: Settings, fleet: Sequence[ListedModel], *, created: int
) -> dict[str, Any]:
    """The whole `{"data": [...]}` document in the configured format.

    `fleet` is the balancer's view of each listed model; a model no node serves
    is left out.  Each V2 document is checked as it is built (ValueError if
    OpenRouter would reject it).
    """
    build = v2.model_document if settings.api.listing_format == "v2" else flat_document
    data = []
    for listed in (listed for listed in fleet if listed.nodes):
        context = smallest(listed.settings.context_length, listed.context_length)
        data.append(
            build(
                listed.settings,
                context_length=context,
                max_output=smallest(listed.settings.max_output_length, context),
                created=created,
                ready=listed.healthy and listed.settings.is_ready is not False,
            )
        )
    return {"data": data}


def unready(fleet: Sequence[ListedModel]) -> list[str]:
    """Listed models whose nodes are all unhealthy, ejected or draining."""
    return [listed.settings.id for listed in fleet if listed.nodes and not listed.healthy]


def print_models(settings: Settings) -> int:
    """`models`: the listing the API would serve now, after one discovery round."""
    print(json.dumps(asyncio.run(_discover_listing(settings)), indent=2))
    return 0


def check_listing(path: str) -> int:
    """`models --check FILE`: what OpenRouter would reject in a V2 listing, before it sees it."""
    try:
        v2.validate(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:  # json's and v2's errors are ValueErrors
        print(f"{path}: not a valid V2 listing: {error}", file=sys.stderr)
        return 1
    print(f"{path}: a valid V2 listing (schema 2.4)")
    return 0


async def _discover_listing(settings: Settings) -> dict[str, Any]:
    from ..context import Context

    async with Context.open(settings) as context:
        return build_listing(settings, context.balancer.listed_models(), created=int(time.time()))
