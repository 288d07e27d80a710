"""Settings: defaults < config file < environment, validated in one pydantic model.

The defaults are the answers given when this project was generated.  A config
file (TOML, or YAML / JSON by extension) comes from `--config` or
`OPENROUTER_CONFIG`.  Environment variables use the seed's `OPENROUTER_*`
names and the Tangle runner's names (see `ENV_OVERRIDES`).  Any invalid value
stops start-up with the key and the reason: there is no silent fallback.
What each setting does is in config.example.toml (tests keep the two in step).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

NodeType = Literal[
{% for name in choices.llm_backend %}
    "{{ name }}",
{% endfor %}
]
Strategy = Literal[
{% for name in choices.balancing_strategy %}
    "{{ name }}",
{% endfor %}
]
Capability = Literal["chat", "completions", "embeddings", "tools", "vision"]
Quantization = Literal[
    "int4", "int8", "fp4", "mxfp4", "nvfp4", "fp6", "fp8", "mxfp8", "fp16", "bf16", "fp32"
]

# The answers given when this project was generated. A free-text answer sits alone on
# its line, so any length stays valid for ruff; the comments stop the formatter from
# joining the lines again.
DEFAULT_NODE_TYPE: NodeType = "{{ cookiecutter.llm_backend }}"
DEFAULT_STRATEGY: Strategy = "{{ cookiecutter.balancing_strategy }}"
DEFAULT_BACKEND_URLS: list[str] = [
{% for url in cookiecutter.backend_urls.split(',') | map('trim') | reject('equalto', '') %}
    {{ url | pystr }},
{% endfor %}
]
DEFAULT_MODEL: str = (  # answer: default_model
    {{ cookiecutter.default_model | pystr }}
)
DEFAULT_HTTP_RPC_URL: str = (  # answer: http_rpc_url
    {{ cookiecutter.http_rpc_url | pystr }}
)
DEFAULT_WS_RPC_URL: str = (  # answer: ws_rpc_url
    {{ cookiecutter.ws_rpc_url | pystr }}
)
DEFAULT_KEYSTORE_URI: str = (  # answer: keystore_uri
    {{ cookiecutter.keystore_uri | pystr }}
)


class ConfigError(Exception):
    """An invalid setting; the message names the key and the reason."""


def mask_url(text: str) -> str:
    """URLs in `text` with what may be a secret masked: user and password, query values
    (`?token=`) and key-like path segments (`/v3/<key>`: 16+ characters with a digit)."""
    return _URL.sub(_mask_one, text)


def _mask_one(match: re.Match[str]) -> str:
    url = _USERINFO.sub(r"\1**********@", match.group())
    url = _QUERY_VALUE.sub(r"\1**********", url)
    return _KEYLIKE.sub("/**********", url)


_URL = re.compile(r"[a-z][a-z0-9+.-]*+://[^\s'\"<>]++", re.IGNORECASE)
_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)
_QUERY_VALUE = re.compile(r"([?&][^=&#]*=)[^&#]*")
_KEYLIKE = re.compile(r"/(?=[^/?#]*\d)(?=[^/?#]*[a-z])[^/?#]{16,}", re.IGNORECASE)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    auth_enabled: bool = True
    api_keys: list[SecretStr] = Field(default_factory=list)
    metrics_key: SecretStr | None = None
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_json_keys: int = Field(default=50_000, ge=100)
    max_json_items: int = Field(default=500_000, ge=100)
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    request_timeout_s: float = Field(default=600.0, gt=0)
    keepalive_interval_s: float = Field(default=5.0, gt=0)
    always_include_usage: bool = True
    listing_format: Literal["v2", "flat"] = "v2"  # OpenRouter's schema 2.4, or its legacy one
    private_media_urls: bool = False

    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiSettings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("set both tls_certfile and tls_keyfile, or neither")
        return self

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value


class LoadBalancerSettings(Section):
    strategy: Strategy = DEFAULT_STRATEGY
    max_retries: int = Field(default=2, ge=0, le=10)
    max_queue: int = Field(default=0, ge=0)
    selection_timeout_s: float = Field(default=0.25, ge=0)
    health_check_interval_s: float = Field(default=5.0, gt=0)
    health_check_timeout_s: float = Field(default=2.0, gt=0)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    read_timeout_s: float = Field(default=120.0, gt=0)
    # aiohttp measured faster (bench transport)
    http_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    health_check_interval_by_type: dict[NodeType, float] = Field(default_factory=dict)
    discovery_interval_s: float = Field(default=60.0, gt=0)
    unhealthy_threshold: int = Field(default=2, ge=1)
    stale_signal_age_s: float = Field(default=15.0, gt=0)
    max_server_waiting: float = Field(default=16, ge=0)
    max_kv_cache_usage: float = Field(default=0.98, gt=0, le=1)
    failover_deadline_s: float = Field(default=30.0, gt=0)
    eject_consecutive_failures: int = Field(default=5, ge=1)
    eject_failure_rate: float = Field(default=0.5, gt=0, le=1)
    failure_window: int = Field(default=20, ge=2)
    failure_window_min: int = Field(default=10, ge=1)
    ejection_base_s: float = Field(default=5.0, gt=0)
    ejection_max_s: float = Field(default=300.0, gt=0)
    retry_after_max_s: float = Field(default=60.0, ge=0)
    failure_latency_penalty: float = Field(default=2.0, ge=1)
    default_latency_ms: float = Field(default=1000.0, gt=0)
    latency_decay_s: float = Field(default=10.0, gt=0)
    prefix_chars: int = Field(default=512, ge=1)
    prefix_epsilon: float = Field(default=0.25, ge=0)
    chars_per_token: float = Field(default=4.0, gt=0)

    @field_validator("strategy", mode="before")
    @classmethod
    def _accept_seed_names(cls, value: Any) -> Any:
        # The seed spelled strategies in CamelCase (LeastLoaded); accept both.
        return re.sub(r"(?<!^)(?=[A-Z])", "_", value).lower() if isinstance(value, str) else value


class NodeModel(Section):
    """A model id as listed, and the node's own name for it when different."""

    id: str = Field(min_length=1)
    backend_model: str | None = None
    # What the node does with the model where its server does not say; unset: everything.
    capabilities: list[Capability] | None = None

    @property
    def upstream_name(self) -> str:
        return self.backend_model or self.id


class NodeSettings(Section):
    name: str = Field(min_length=1)
    url: str
    type: NodeType = DEFAULT_NODE_TYPE
    models: list[NodeModel] = Field(default_factory=list)
    weight: float = Field(default=1.0, gt=0)
    max_concurrency: int = Field(default=8, ge=1)
    api_key: SecretStr | None = None
    extra_fields: list[str] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"expected an http:// or https:// URL, got {mask_url(value)!r}")
        if "@" in value.split("://", 1)[1].split("/", 1)[0]:
            # Credentials in a URL end up in tables, logs and error messages.
            raise ValueError("credentials in a node URL are not accepted; set the node's api_key")
        return value.rstrip("/")

    @field_validator("models", mode="before")
    @classmethod
    def _plain_ids(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"id": item} if isinstance(item, str) else item for item in value]
        return value


def _decimal_string(value: Any) -> str:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"expected a decimal string such as '0.0000005', got {value!r}") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"expected a non-negative decimal, got {value!r}")
    return str(value)


class Pricing(Section):
    """USD per token (prompt, completion, cache, reasoning), per request, per image: decimals."""

    prompt: str = "0"
    completion: str = "0"
    request: str = "0"
    image: str = "0"
    input_cache_read: str = "0"
    input_cache_write: str = "0"
    internal_reasoning: str = "0"

    @field_validator("*", mode="before")
    @classmethod
    def _check(cls, value: Any) -> str:
        return _decimal_string(value)


class Datacenter(Section):
    country_code: str = Field(pattern=r"^[A-Z]{2}$")
    region: str | None = None


# OpenRouter's value sets: a listing with anything else is rejected.
JSON_INT = 2**53 - 1  # the largest integer OpenRouter's schema (and JavaScript) takes exactly
InputModality = Literal["text", "image", "file", "audio", "video"]
OutputModality = Literal[
    "text", "image", "embeddings", "audio", "video", "rerank", "speech", "transcription"
]
SamplingParameter = Literal[
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "top_a",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "stop",
    "seed",
    "max_tokens",
    "logit_bias",
]
Feature = Literal["tools", "json_mode", "structured_outputs", "logprobs", "web_search", "reasoning"]


class ModelSettings(Section):
    id: str = Field(min_length=1)
    name: str | None = None
    hugging_face_id: str = ""
    description: str | None = None
    created: int | None = Field(default=None, ge=-JSON_INT, le=JSON_INT)
    context_length: int | None = Field(default=None, ge=1, le=JSON_INT)
    max_output_length: int | None = Field(default=None, ge=1, le=JSON_INT)
    quantization: Quantization | None = None
    pricing: Pricing = Field(default_factory=Pricing)
    # pydantic copies a mutable default for each instance.
    input_modalities: list[InputModality] = Field(default=["text"], min_length=1)
    output_modalities: list[OutputModality] = Field(default=["text"], min_length=1)
    supported_sampling_parameters: list[SamplingParameter] = [
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "seed",
        "max_tokens",
        "frequency_penalty",
        "presence_penalty",
    ]
    supported_features: list[Feature] = ["tools", "json_mode"]
    is_ready: bool | None = None  # false hides it; unset: listed ready while a node is up
    is_free: bool | None = None
    tokenizer: str | None = None
    datacenters: list[Datacenter] = Field(default_factory=list)
    capacity_tpm: int | None = Field(default=None, ge=1, le=JSON_INT)
    service_tier: Literal["flex", "priority", "fast", "ultrafast"] | None = None
    discount_to_user: float | None = Field(default=None, lt=1, allow_inf_nan=False)
    deprecation_date: str | None = Field(
        default=None, pattern=r"^\d{4}-\d{2}-\d{2}(T\d{2}:00:00Z)?$"
    )

    @field_validator("deprecation_date")
    @classmethod
    def _real_date(cls, value: str | None) -> str | None:
        if value:  # a real day (and hour), as OpenRouter's schema checks
            datetime.strptime(value, "%Y-%m-%dT%H:00:00Z" if "T" in value else "%Y-%m-%d")
        return value


EvmAddress = Annotated[str, Field(pattern=r"^(0x[0-9a-fA-F]{40})?$")]  # unset: empty


class TangleSettings(Section):
    http_rpc_url: str = DEFAULT_HTTP_RPC_URL
    ws_rpc_url: str = DEFAULT_WS_RPC_URL
    keystore_uri: str = DEFAULT_KEYSTORE_URI
    keystore_password: SecretStr | None = None
    operator_private_key: SecretStr | None = None
    data_dir: str = "./data"
    chain: Literal["local_testnet", "local_mainnet", "testnet", "mainnet"] = {{ cookiecutter.chain | tojson }}
    protocol: Literal["tangle", "tangle-evm"] = "tangle"
    blueprint_id: int = Field(default={{ cookiecutter.blueprint_id }}, ge=0, lt=2**64)
    service_id: int | None = Field(default={{ cookiecutter.service_id }}, ge=0, lt=2**64)
    tangle_contract: EvmAddress = {{ cookiecutter.tangle_contract | tojson }}
    staking_contract: EvmAddress = {{ cookiecutter.staking_contract | tojson }}
    status_registry_contract: EvmAddress = {{ cookiecutter.status_registry_contract | tojson }}
    poll_interval_s: float = Field(default=2.0, gt=0)
    confirmations: int | None = Field(default=None, ge=0)
    max_block_range: int = Field(default=500, ge=1)
    start_block: int | None = Field(default=None, ge=0)
    lookback_blocks: int = Field(default=10, ge=0)
    max_concurrent_jobs: int = Field(default=64, ge=1)
    batch_max: int = Field(default=16, ge=1, le=256)
    heartbeat_interval_s: float = Field(default=120.0, ge=0)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    rpc_timeout_s: float = Field(default=10.0, gt=0)
    max_fee_gwei: float = Field(default=100.0, gt=0)
    priority_fee_gwei: float | None = Field(default=None, ge=0)
    replace_after_s: float = Field(default=30.0, gt=0)

    @property
    def confirmation_depth(self) -> int:
        if self.confirmations is not None:
            return self.confirmations
        return 0 if self.chain.startswith("local") else 2


class JobRate(Section):
    """A model's job prices in the payment token's smallest unit (wei when native)."""

    prompt: int = Field(default=0, ge=0)
    completion: int = Field(default=0, ge=0)
    request: int = Field(default=0, ge=0)


class JobPricingSettings(Section):
    """What a Tangle job costs (config.example.toml); all zero answers every call."""

    units_per_usd: Decimal = Field(default=Decimal(0), ge=0)
    models: dict[str, JobRate] = Field(default_factory=dict)
    on_underpaid: Literal["error", "skip"] = "error"
    quote_ttl_s: int = Field(default=300, ge=10, le=3600)  # tnt-core: 1 h at most
    quotes_per_s: float = Field(default=50.0, gt=0)


class ClusterSettings(Section):
    """Replicas sharing node state through Redis; off (one process alone) by default."""

    redis_url: SecretStr | None = None
    key_prefix: str = Field(
        default="openrouter", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$"
    )
    replicas: int = Field(default=1, ge=1, le=1024)
    lease_ttl_s: float = Field(default=3.0, ge=1, le=600)
    sync_interval_s: float = Field(default=0.25, gt=0, le=5)
    redis_timeout_s: float = Field(default=0.5, gt=0, le=30)
    leader_lease_s: float = Field(default=10.0, ge=1, le=600)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^(rediss?|unix)://", value.get_secret_value()):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @model_validator(mode="after")
    def _timing(self) -> ClusterSettings:
        # Renewed every third of their life: one renewal may time out before the end.
        if self.leader_lease_s < 5 * self.redis_timeout_s or self.lease_ttl_s < 2 * (
            self.redis_timeout_s
        ):
            raise ValueError("leader_lease_s >= 5 x and lease_ttl_s >= 2 x redis_timeout_s")
        # A standby leads >= 2/3 lease after the last renewal: find the dead one's slots free.
        if 3 * self.lease_ttl_s > 2 * self.leader_lease_s:
            raise ValueError("lease_ttl_s must be at most 2/3 of leader_lease_s")
        return self


def _default_nodes() -> list[NodeSettings]:
    return [
        NodeSettings(name=f"node-{index}", url=url, models=[NodeModel(id=DEFAULT_MODEL)])
        for index, url in enumerate(DEFAULT_BACKEND_URLS, start=1)
    ]


# Environment variable -> path in the settings (a string; the fields parse it).
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "OPENROUTER_API_HOST": ("api", "host"),
    "OPENROUTER_API_PORT": ("api", "port"),
    "OPENROUTER_API_AUTH_ENABLED": ("api", "auth_enabled"),
    "OPENROUTER_API_KEY": ("api", "api_keys"),
    "OPENROUTER_METRICS_KEY": ("api", "metrics_key"),
    "OPENROUTER_API_MAX_BODY_BYTES": ("api", "max_body_bytes"),
    "OPENROUTER_LOAD_BALANCER_STRATEGY": ("load_balancer", "strategy"),
    "OPENROUTER_LOAD_BALANCER_MAX_RETRIES": ("load_balancer", "max_retries"),
    "OPENROUTER_REDIS_URL": ("cluster", "redis_url"),
    "OPENROUTER_CLUSTER_REPLICAS": ("cluster", "replicas"),
    "OPENROUTER_LOG_JSON": ("log_json",),
    "HTTP_RPC_URL": ("tangle", "http_rpc_url"),
    "WS_RPC_URL": ("tangle", "ws_rpc_url"),
    "KEYSTORE_URI": ("tangle", "keystore_uri"),
    "KEYSTORE_PASSWORD": ("tangle", "keystore_password"),
    "OPERATOR_PRIVATE_KEY": ("tangle", "operator_private_key"),
    "DATA_DIR": ("tangle", "data_dir"),
    "CHAIN": ("tangle", "chain"),
    "PROTOCOL": ("tangle", "protocol"),
    "BLUEPRINT_ID": ("tangle", "blueprint_id"),
    "SERVICE_ID": ("tangle", "service_id"),
    "TANGLE_CONTRACT": ("tangle", "tangle_contract"),
    "STAKING_CONTRACT": ("tangle", "staking_contract"),
    "STATUS_REGISTRY_CONTRACT": ("tangle", "status_registry_contract"),
}


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"config file {path}: {error.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as error:
        raise ConfigError(f"config file {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a table at the top level")
    return data


class Settings(Section):
    """Everything the process needs; one instance is shared through the context."""

    api: ApiSettings = Field(default_factory=ApiSettings)
    load_balancer: LoadBalancerSettings = Field(default_factory=LoadBalancerSettings)
    nodes: list[NodeSettings] = Field(default_factory=_default_nodes)
    models: list[ModelSettings] = Field(default_factory=lambda: [ModelSettings(id=DEFAULT_MODEL)])
    tangle: TangleSettings = Field(default_factory=TangleSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    job_pricing: JobPricingSettings = Field(default_factory=JobPricingSettings)
    log_json: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        names = [node.name for node in self.nodes]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"node names must be unique; repeated: {', '.join(duplicates)}")
        listed = {model.id for model in self.models}
        for node in self.nodes:
            unknown = [model.id for model in node.models if model.id not in listed]
            if unknown:
                raise ValueError(
                    f"node {node.name!r} serves {', '.join(unknown)}, "
                    "which is not in [[models]]; add it there"
                )
        return self

    def masked(self) -> dict[str, Any]:
        """The effective settings as JSON data, secrets and URL passwords shown as '**********'."""
        masked: dict[str, Any] = _mask_urls(self.model_dump(mode="json"))
        return masked


def _mask_urls(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _mask_urls(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_mask_urls(value) for value in data]
    return mask_url(data) if isinstance(data, str) else data


# Values under these keys never appear in error messages.
SECRET_KEYS = {
    "api_keys",
    "metrics_key",
    "api_key",
    "keystore_password",
    "operator_private_key",
    "redis_url",
}


def _shown(item: ErrorDetails) -> str:
    """The rejected value, only when it is one plain value under no secret key.

    A model-level validator's input is the whole document (every key in it),
    so containers are never shown.
    """
    value = item["input"]
    if item["type"] == "missing" or SECRET_KEYS & {str(part) for part in item["loc"]}:
        return ""
    if isinstance(value, bool | int | float):
        return f" (got {value!r})"
    if isinstance(value, str):
        return f" (got {mask_url(value)[:200]!r})"
    return ""


def _describe(error: ValidationError, environ: Mapping[str, str]) -> str:
    by_path = {".".join(path): name for name, path in ENV_OVERRIDES.items() if name in environ}
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        origin = by_path.get(key)
        where = f"{key} (from ${origin})" if origin else key
        lines.append(f"{where}: {mask_url(item['msg'])}{_shown(item)}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(
    config_path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """The config file named by `--config` or OPENROUTER_CONFIG, with the environment
    names of ENV_OVERRIDES placed over it at their nested keys; or ConfigError naming
    each bad key and why."""
    env = os.environ if environ is None else environ
    path = config_path or env.get("OPENROUTER_CONFIG")
    data: dict[str, Any] = read_config_file(Path(path)) if path else {}
    for name, keys in ENV_OVERRIDES.items():
        if name in env:
            table = data
            for key in keys[:-1]:
                if not isinstance(table.get(key), dict):
                    table[key] = {}
                table = table[key]
            table[keys[-1]] = env[name]
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, env)) from None
