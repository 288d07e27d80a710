"""The V2 listing against OpenRouter's own published schema, for generated configs.

api/provider-monitor-schema-v2.openapi.json is OpenRouter's file, unchanged:
OpenRouterTeam/docs, assets/provider-monitor-schema-v2.openapi.json (schema 2.4, commit
c26125a5fa92cb52ac67f0c75b717229567db716).  The schema cannot say that price entries are
unique per modality or that a per-image price sits on the image modality; those rules
are checked here on the served documents, and by the listing's own check (api/v2.py).
"""

from __future__ import annotations

import copy
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.api import v2
from {{ cookiecutter.package_name }}.api.listing import build_listing, check_listing
from {{ cookiecutter.package_name }}.balancer import ListedModel
from {{ cookiecutter.package_name }}.config import ModelSettings, Pricing

from .conftest import make_settings

SPEC = json.loads(
    files("{{ cookiecutter.package_name }}.api").joinpath("provider-monitor-schema-v2.openapi.json").read_text()
)
OPENROUTER = Draft202012Validator(
    {"$ref": "#/components/schemas/ModelDocumentV2", "components": SPEC["components"]}
)
MODEL_FIELDS = ModelSettings.model_fields


def literals(field: str) -> list[str]:
    annotation = MODEL_FIELDS[field].annotation
    return list(annotation.__args__[0].__args__)  # type: ignore[union-attr]


def openrouter_errors(document: dict[str, Any]) -> list[str]:
    return [error.message for error in OPENROUTER.iter_errors(document)]


prices = st.one_of(
    st.sampled_from(["0", "0.0", "5e-7", "0.000001", "1", "12.5", "1E+2", "0.00000000001"]),
    st.decimals(min_value=0, max_value=1000, allow_nan=False, places=9).map(str),
)
optional_text = st.none() | st.text(max_size=40)
dates = st.one_of(
    st.dates().map(lambda day: day.isoformat()),
    st.datetimes().map(lambda moment: moment.strftime("%Y-%m-%dT%H:00:00Z")),
)
models = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=40),
        "pricing": st.fixed_dictionaries({key: prices for key in Pricing.model_fields}),
        "input_modalities": st.lists(
            st.sampled_from(["text", "image", "file", "audio", "video"]), min_size=1
        ),
        "output_modalities": st.lists(
            st.sampled_from(
                [
                    "text",
                    "image",
                    "embeddings",
                    "audio",
                    "video",
                    "rerank",
                    "speech",
                    "transcription",
                ]
            ),
            min_size=1,
        ),
        "supported_sampling_parameters": st.lists(
            st.sampled_from(literals("supported_sampling_parameters"))
        ),
        "supported_features": st.lists(st.sampled_from(literals("supported_features"))),
    },
    optional={
        "name": optional_text,
        "description": optional_text,
        "hugging_face_id": st.text(max_size=40),
        "tokenizer": optional_text,
        "created": st.none() | st.integers(),
        "context_length": st.none() | st.integers(min_value=1, max_value=2**60),
        "max_output_length": st.none() | st.integers(min_value=1, max_value=2**60),
        "capacity_tpm": st.none() | st.integers(min_value=1, max_value=2**60),
        "quantization": st.none()
        | st.sampled_from(["int4", "int8", "fp4", "mxfp4", "nvfp4", "fp6", "fp8", "bf16"]),
        "deprecation_date": st.none() | dates,
        "is_ready": st.none() | st.booleans(),
        "is_free": st.none() | st.booleans(),
        "discount_to_user": st.none() | st.floats(max_value=1),
        "service_tier": st.none() | st.sampled_from(["flex", "priority", "fast", "ultrafast"]),
        "datacenters": st.lists(
            st.fixed_dictionaries(
                {"country_code": st.from_regex(r"\A[A-Z]{2}\Z")}, optional={"region": st.text()}
            ),
            max_size=3,
        ),
    },
)


@settings(
    max_examples=150,
    derandomize=True,  # the same examples on every run: CI fails or passes for a reason
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    raw=models,
    node_context=st.none() | st.integers(min_value=1, max_value=2**40),
    healthy=st.booleans(),
)
def test_every_config_a_user_can_write_lists_valid_v2(
    raw: dict[str, Any], node_context: int | None, healthy: bool
) -> None:
    try:
        model = ModelSettings.model_validate(raw)
    except ValidationError:
        assume(False)  # start-up refuses it, with the key and the reason
        raise
    fleet = [
        ListedModel(settings=model, nodes=["n1"], context_length=node_context, healthy=healthy)
    ]
    (document,) = build_listing(make_settings(), fleet, created=1)["data"]
    assert openrouter_errors(document) == []
    # What the schema cannot say, checked on what is served:
    for modality in document["input_modalities"] + document["output_modalities"]:
        kinds = [price["type"] for price in modality.get("pricing", [])]
        assert len(kinds) == len(set(kinds)), modality
    text_in = document["input_modalities"][0]
    assert text_in["type"] == "text"
    assert {price["unit"] for price in text_in.get("pricing", [])} <= {"token"}
    images = [m for m in document["input_modalities"] if m["type"] == "image"]
    if float(model.pricing.image) and "image" in model.input_modalities:
        assert images[0]["pricing"] == [
            {"type": "prompt", "unit": "image", "cost_usd": v2.decimal(model.pricing.image)}
        ]
    assert document.get("is_ready", True) is (healthy and model.is_ready is not False)
    flat = build_listing(make_settings(listing_format="flat"), fleet, created=1)["data"][0]
    assert flat["is_ready"] is document["is_ready"]


def all_fields() -> dict[str, Any]:
    return {
        "id": "acme/m",
        "input_modalities": ["text", "image"],
        "supported_sampling_parameters": list(literals("supported_sampling_parameters")),
        "supported_features": list(literals("supported_features")),
        "pricing": {
            "prompt": "0.000001",
            "completion": "0.000002",
            "image": "0.004",
            "request": "0.0001",
            "input_cache_read": "0.0000001",
            "input_cache_write": "0.0000012",
            "internal_reasoning": "0.000003",
        },
        "tokenizer": "Llama3",
        "datacenters": [{"country_code": "DE", "region": "fsn1"}],
        "capacity_tpm": 1_000_000,
        "service_tier": "flex",
        "discount_to_user": 0.1,
        "deprecation_date": "2027-02-28T13:00:00Z",
    }


def served(listing_format: str = "v2", **model: Any) -> dict[str, Any]:
    fleet = [
        ListedModel(
            settings=ModelSettings(**{"id": "acme/m", **model}),
            nodes=["n1"],
            context_length=8192,
            healthy=True,
        )
    ]
    listing = build_listing(make_settings(listing_format=listing_format), fleet, created=1)
    document: dict[str, Any] = listing["data"][0]
    return document


def test_every_field_lands_where_openrouter_reads_it() -> None:
    document = served(**all_fields())
    assert openrouter_errors(document) == []
    text_in, image_in = document["input_modalities"]
    assert [p["type"] for p in text_in["pricing"]] == ["prompt", "cached_prompt", "cache_write"]
    assert image_in["pricing"] == [{"type": "prompt", "unit": "image", "cost_usd": "0.004"}]
    assert text_in["capacity"] == [
        {"type": "prompt", "unit": "token", "per": "minute", "value": 1_000_000}
    ]
    text_out = document["output_modalities"][0]
    assert [p["type"] for p in text_out["pricing"]] == ["completion", "internal_reasoning"]
    assert text_out["supported_parameters"]["logit_bias"] == {"type": "unknown"}
    assert document["tokenizer"] == "Llama3"
    assert document["passthrough_parameters"] == {
        "service_tier": {"type": "enum", "values": ["flex"]}
    }
    assert document["discount_to_user"] == 0.1 and document["is_ready"] is True
    flat = served("flat", **all_fields())
    assert flat["pricing"]["input_cache_read"] == "0.0000001"
    assert flat["pricing"]["internal_reasoning"] == "0.000003"
    assert flat["capacity_tpm"] == 1_000_000 and flat["service_tier"] == "flex"
    assert flat["datacenters"] == [{"country_code": "DE", "region": "fsn1"}]


def test_the_old_logit_bias_descriptor_fails_openrouter_and_our_models() -> None:
    document = served(supported_sampling_parameters=["logit_bias"])
    broken = copy.deepcopy(document)
    broken["output_modalities"][0]["supported_parameters"]["logit_bias"] = {"type": "object"}
    assert openrouter_errors(broken)
    with pytest.raises(ValueError, match="'properties' is a required property"):
        v2.validate({"data": [broken]})


@pytest.mark.parametrize(
    ("where", "entry"),
    [
        ("text", {"type": "prompt", "unit": "image", "cost_usd": "0.004"}),  # image price on text
        ("text", {"type": "prompt", "unit": "token", "cost_usd": "0.2"}),  # a second prompt price
    ],
)
def test_what_the_schema_lets_through_our_models_refuse(where: str, entry: dict[str, str]) -> None:
    document = served(pricing={"prompt": "0.000001"})
    document["input_modalities"][0]["pricing"].append(entry)
    assert openrouter_errors(document) == []  # OpenRouter's schema alone accepts it...
    with pytest.raises(ValueError, match=where):
        v2.validate({"data": [document]})  # ...its prose (and our check) do not


def test_is_ready_follows_the_fleet() -> None:
    fleet = [
        ListedModel(
            settings=ModelSettings(id="acme/m"), nodes=["n1"], context_length=None, healthy=False
        )
    ]
    for listing_format in ("v2", "flat"):
        listing = build_listing(make_settings(listing_format=listing_format), fleet, created=1)
        assert listing["data"][0]["is_ready"] is False


def test_check_command_names_what_openrouter_would_reject(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"data": [served(**all_fields())]}))
    bad = tmp_path / "bad.json"
    document = served(**all_fields())
    document["surprise"] = 1
    bad.write_text(json.dumps({"data": [document]}))
    assert check_listing(str(good)) == 0
    assert check_listing(str(bad)) == 1
    assert "surprise" in capsys.readouterr().err
