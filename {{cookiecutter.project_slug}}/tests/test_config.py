"""config.py: defaults from the generation answers, file < environment, clear errors."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from {{ cookiecutter.package_name }}.config import (
    DEFAULT_BACKEND_URLS,
    DEFAULT_MODEL,
    ENV_OVERRIDES,
    ConfigError,
    Settings,
    load_settings,
)

PROJECT = Path(__file__).resolve().parents[1]
EXAMPLE = PROJECT / "config.example.toml"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_generation_answers() -> None:
    settings = load_settings(environ={})
    assert settings.load_balancer.strategy == "{{ cookiecutter.balancing_strategy }}"
    expected_urls = [url.rstrip("/") for url in DEFAULT_BACKEND_URLS]
    assert [node.url for node in settings.nodes] == expected_urls
    assert {node.type for node in settings.nodes} == {"{{ cookiecutter.llm_backend }}"}
    assert [model.id for model in settings.models] == [DEFAULT_MODEL]
    assert all(node.models[0].id == DEFAULT_MODEL for node in settings.nodes)
    assert settings.tangle.chain == "{{ cookiecutter.chain }}"
    assert settings.tangle.blueprint_id == {{ cookiecutter.blueprint_id }}


def test_file_overrides_defaults_and_environment_overrides_file(tmp_path: Path) -> None:
    text = '[api]\nport = 9000\n[load_balancer]\nstrategy = "round_robin"\n'
    path = write(tmp_path, "c.toml", text)
    assert load_settings(path, environ={}).api.port == 9000
    both = load_settings(path, environ={"OPENROUTER_API_PORT": "9100"})
    assert both.api.port == 9100
    assert both.load_balancer.strategy == "round_robin"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", "[api]\nport = 9001\n")
    assert load_settings(environ={"OPENROUTER_CONFIG": str(path)}).api.port == 9001


@pytest.mark.parametrize(
    ("name", "text"),
    [("c.yaml", "api:\n  port: 9002\n"), ("c.json", json.dumps({"api": {"port": 9002}}))],
)
def test_yaml_and_json_files(tmp_path: Path, name: str, text: str) -> None:
    assert load_settings(write(tmp_path, name, text), environ={}).api.port == 9002


def test_runner_environment_names_reach_tangle_settings() -> None:
    settings = load_settings(
        environ={
            "HTTP_RPC_URL": "http://10.0.0.5:8545",
            "BLUEPRINT_ID": "7",
            "SERVICE_ID": "3",
            "CHAIN": "testnet",
            "OPENROUTER_API_KEY": "k1, k2",
        }
    )
    assert settings.tangle.http_rpc_url == "http://10.0.0.5:8545"
    assert (settings.tangle.blueprint_id, settings.tangle.service_id) == (7, 3)
    assert settings.tangle.chain == "testnet"
    assert [key.get_secret_value() for key in settings.api.api_keys] == ["k1", "k2"]


def test_seed_camel_case_strategy_names() -> None:
    settings = load_settings(environ={"OPENROUTER_LOAD_BALANCER_STRATEGY": "LeastLoaded"})
    assert settings.load_balancer.strategy == "least_loaded"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"OPENROUTER_API_PORT": "not-a-port"}, "api.port (from $OPENROUTER_API_PORT)"),
        ({"BLUEPRINT_ID": "-1"}, "tangle.blueprint_id (from $BLUEPRINT_ID)"),
        ({"TANGLE_CONTRACT": "0x1234"}, "tangle.tangle_contract"),
        ({"OPENROUTER_LOAD_BALANCER_STRATEGY": "fastest"}, "load_balancer.strategy"),
        ({"CHAIN": "moon"}, "tangle.chain"),
    ],
)
def test_bad_environment_values_name_the_key(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    message = str(caught.value)
    assert expected in message
    assert next(iter(environ.values())) in message  # the bad value is shown


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[api]\nprot = 1\n", "api.prot"),
        ('[[nodes]]\nname = "a"\nurl = "ftp://x"\n', "nodes.0.url"),
        (
            '[[nodes]]\nname = "a"\nurl = "http://a:1"\n[[nodes]]\nname = "a"\nurl = "http://b:1"\n',
            "repeated: a",
        ),
        (
            '[[nodes]]\nname = "a"\nurl = "http://a:1"\nmodels = ["unlisted"]\n',
            "not in [[models]]",
        ),
        ('[[models]]\nid = "m"\npricing = { prompt = "-1" }\n', "models.0.pricing.prompt"),
    ],
)
def test_bad_file_values_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_settings(write(tmp_path, "c.toml", text), environ={})


def test_secrets_never_appear_in_errors_or_the_effective_config(tmp_path: Path) -> None:
    secret = "sk-do-not-print-me"
    settings = load_settings(environ={"OPENROUTER_API_KEY": secret, "KEYSTORE_PASSWORD": secret})
    assert secret not in json.dumps(settings.masked())
    path = write(tmp_path, "c.toml", f'[api]\nmetrics_key = ["{secret}"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "api.metrics_key" in str(caught.value)
    assert secret not in str(caught.value)


def test_a_document_level_error_prints_no_secret(tmp_path: Path) -> None:
    """A model-level validator's input is the whole document: it is never shown."""
    secrets = ["sk-api-key-one", "sk-node-key-two", "0x" + "ab" * 32, "hunter2-password"]
    path = write(
        tmp_path,
        "c.toml",
        f"""[api]
api_keys = ["{secrets[0]}"]
[[nodes]]
name = "twin"
url = "http://127.0.0.1:9"
api_key = "{secrets[1]}"
models = ["m"]
[[nodes]]
name = "twin"
url = "http://127.0.0.1:8"
models = ["m"]
[[models]]
id = "m"
""",
    )
    environ = {"OPERATOR_PRIVATE_KEY": secrets[2], "KEYSTORE_PASSWORD": secrets[3]}
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ)
    assert "node names must be unique; repeated: twin" in str(caught.value)
    for secret in secrets:
        assert secret not in str(caught.value)


def test_credentials_in_a_node_url_are_refused_and_never_printed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.toml",
        '[[nodes]]\nname = "n"\nurl = "http://admin:hunter2@10.0.0.5:8000"\nmodels = ["m"]\n'
        '[[models]]\nid = "m"\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "nodes.0.url" in str(caught.value) and "api_key" in str(caught.value)
    assert "hunter2" not in str(caught.value) and "admin" not in str(caught.value)
    settings = load_settings(environ={"HTTP_RPC_URL": "https://user:rpc-pass@rpc.example"})
    assert "rpc-pass" not in json.dumps(settings.masked())


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("missing.toml", None, "missing.toml"),
        ("broken.toml", "[api\n", "broken.toml"),
        ("list.yaml", "- 1\n", "expected a table"),
    ],
)
def test_unreadable_files_are_config_errors(
    tmp_path: Path, name: str, text: str | None, expected: str
) -> None:
    path = tmp_path / name if text is None else write(tmp_path, name, text)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_settings(path, environ={})


# --- config.example.toml stays in step with the settings ------------------------------------


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings model inside an annotation such as `list[NodeSettings] | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _settings_keys(model: type[BaseModel], table: str = "") -> set[tuple[str, str]]:
    """(table, key) for every field, nested sections as their own dotted table."""
    keys: set[tuple[str, str]] = set()
    for name, field in model.model_fields.items():
        nested = _model_in(field.annotation)
        if nested is not None and typing.get_origin(field.annotation) is not dict:
            keys |= _settings_keys(nested, f"{table}.{name}".strip("."))
            if table:  # a section inside a table is written inline: `pricing = { ... }`
                keys.add((table, name))
        else:
            keys.add((table, name))
    return keys


_HEADER = re.compile(r"^#?\s*\[\[?([\w.]+)\]\]?\s*$")
_KEY = re.compile(r"^#?\s*([A-Za-z_]\w*)\s*=\s*(.*)$")
_INLINE_KEY = re.compile(r"([A-Za-z_]\w*)\s*=")


def _documented_keys(text: str) -> set[tuple[str, str]]:
    """(table, key) for every assignment in the example, set or commented out."""
    keys: set[tuple[str, str]] = set()
    table = ""
    for line in text.splitlines():
        header, key = _HEADER.match(line), _KEY.match(line)
        if header:
            table = header.group(1)
        elif key:
            keys.add((table, key.group(1)))
            value = key.group(2)
            if value.startswith(("{", "[{")):
                keys |= {(f"{table}.{key.group(1)}", name) for name in _INLINE_KEY.findall(value)}
    return keys


def test_example_config_loads() -> None:
    settings = load_settings(EXAMPLE, environ={})
    assert settings.load_balancer.strategy == "{{ cookiecutter.balancing_strategy }}"
    defaults = load_settings(environ={})
    assert [node.url for node in settings.nodes] == [node.url for node in defaults.nodes]


def test_example_config_documents_every_setting() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    missing = _settings_keys(Settings) - _documented_keys(text)
    assert not missing, "add these to config.example.toml: " + ", ".join(
        f"[{table}] {key}" for table, key in sorted(missing)
    )
    undocumented_env = [name for name in ENV_OVERRIDES if name not in text]
    assert not undocumented_env, f"list these in config.example.toml's header: {undocumented_env}"
