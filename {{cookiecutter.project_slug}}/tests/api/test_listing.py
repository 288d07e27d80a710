"""The listing documents themselves: limits, omissions, and strict V2 validation."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.api import v2
from {{ cookiecutter.package_name }}.api.listing import build_listing
from {{ cookiecutter.package_name }}.balancer import ListedModel
from {{ cookiecutter.package_name }}.config import ModelSettings

from .conftest import make_settings


def fleet(**model: Any) -> list[ListedModel]:
    settings = ModelSettings(id="acme/m", **model)
    return [
        ListedModel(settings=settings, nodes=["n1"], context_length=8192, healthy=True),
        ListedModel(
            settings=ModelSettings(id="acme/unserved"), nodes=[], context_length=None, healthy=False
        ),
    ]


def v2_document(**model: Any) -> dict[str, Any]:
    settings = make_settings(listing_format="v2")
    return build_listing(settings, fleet(**model), created=1)


def test_flat_listing_limits_prices_and_omissions() -> None:
    listing = build_listing(
        make_settings(listing_format="flat"),
        fleet(context_length=32768, max_output_length=100000, pricing={"prompt": "5e-7"}),
        created=1,
    )
    (model,) = listing["data"]  # the model no node serves is not listed
    assert model["context_length"] == 8192  # the node's smaller window
    assert model["max_output_length"] == 8192  # never above the context
    assert model["pricing"]["prompt"] == "0.0000005"
    assert "quantization" not in model and "description" not in model


def test_v2_document_passes_its_own_validation() -> None:
    listing = v2_document(
        pricing={"prompt": "0.000001", "completion": "0.000002"}, quantization="fp8"
    )
    (model,) = listing["data"]
    assert model["schema_version"] == "2.4"
    assert model["quantization"] == "fp8"
    assert model["input_modalities"][0]["pricing"] == [
        {"type": "prompt", "unit": "token", "cost_usd": "0.000001"}
    ]
    assert "pricing" not in model  # no zero-priced request SKU is stuffed in
    v2.validate(listing)


@pytest.mark.parametrize(
    "path",
    [
        (),  # at the root of a model
        ("input_modalities", 0),
        ("output_modalities", 0, "supported_parameters", "temperature"),
    ],
)
def test_v2_rejects_an_unknown_key_anywhere(path: tuple[Any, ...]) -> None:
    listing = copy.deepcopy(v2_document())
    target = listing["data"][0]
    for step in path:
        target = target[step]
    target["surprise"] = True
    with pytest.raises(ValueError, match="'surprise' was unexpected"):
        v2.validate(listing)


def test_v2_rejects_bad_values() -> None:
    listing = v2_document()
    listing["data"][0]["schema_version"] = "1.0"
    with pytest.raises(ValueError, match="schema_version"):
        v2.validate(listing)


def test_values_openrouter_would_reject_stop_start_up() -> None:
    with pytest.raises(ValidationError, match="input_modalities"):
        ModelSettings(id="acme/m", input_modalities=["pdf"])
    with pytest.raises(ValidationError, match="deprecation_date"):
        ModelSettings(id="acme/m", deprecation_date="next June")
