"""compose.yaml and the Kubernetes manifests, checked against the project itself.

They parse; every environment name they set is one the settings read; every port
is the API's; every probe path is a route of the app; every command is one the
CLI accepts; the autoscaler's metric is one /metrics exports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from {{ cookiecutter.package_name }}.api.app import create_app
from {{ cookiecutter.package_name }}.balancer import Balancer
from {{ cookiecutter.package_name }}.cli import build_parser
from {{ cookiecutter.package_name }}.cluster import Fleet
from {{ cookiecutter.package_name }}.config import ENV_OVERRIDES, ApiSettings, Settings

PROJECT = Path(__file__).resolve().parents[1]
COMPOSE = PROJECT / "compose.yaml"
KUBERNETES = sorted((PROJECT / "deploy" / "kubernetes").glob("*.yaml"))
# Read by the process besides the settings' own names.
KNOWN_ENV = {*ENV_OVERRIDES, "OPENROUTER_CONFIG"}
API_PORT = ApiSettings().port


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def manifests() -> list[dict[str, Any]]:
    return [
        document
        for path in KUBERNETES
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if document
    ]


def ours(image: str) -> bool:
    return image.startswith("{{ cookiecutter.project_slug }}")


def containers() -> Iterator[dict[str, Any]]:
    for document in manifests():
        if document["kind"] == "Deployment":
            yield from document["spec"]["template"]["spec"]["containers"]


def test_the_files_parse_and_hold_what_the_deployment_needs() -> None:
    assert KUBERNETES, "deploy/kubernetes/ is empty"
    kinds = {(document["kind"], document["metadata"]["name"]) for document in manifests()}
    slug = "{{ cookiecutter.project_slug }}"
    for kind, name in [
        ("Deployment", f"{slug}-api"),
        ("Service", f"{slug}-api"),
        ("HorizontalPodAutoscaler", f"{slug}-api"),
        ("PodDisruptionBudget", f"{slug}-api"),
        ("Ingress", f"{slug}-api"),  # the HTTPS edge
        ("Deployment", f"{slug}-runner"),
        ("Deployment", f"{slug}-redis"),
        ("Service", f"{slug}-redis"),
    ]:
        assert (kind, name) in kinds
    services = compose()["services"]
    assert {"redis", "api", "runner", "caddy"} <= set(services)
    assert services["runner"]["deploy"]["replicas"] == 2
    runner = next(
        document
        for document in manifests()
        if document["kind"] == "Deployment" and document["metadata"]["name"] == f"{slug}-runner"
    )
    assert runner["spec"]["replicas"] == 2


def test_every_environment_name_is_read_by_the_project() -> None:
    names = [
        name
        for service in compose()["services"].values()
        if ours(service.get("image", ""))
        for name in service.get("environment", {})
    ]
    names += [item["name"] for container in containers() for item in container.get("env", [])]
    assert names
    unknown = sorted(set(names) - KNOWN_ENV)
    assert not unknown, f"the project reads no such variables: {unknown}"


def test_every_port_is_the_api_port() -> None:
    ports = [
        int(str(mapping).rsplit(":", 1)[1])
        for service in compose()["services"].values()
        if ours(service.get("image", ""))
        for mapping in service.get("ports", [])
    ]
    ports += [
        port["containerPort"]
        for container in containers()
        if ours(container["image"])
        for port in container.get("ports", [])
    ]
    assert ports and set(ports) == {API_PORT}


def test_every_probe_path_is_a_route() -> None:
    settings = Settings.model_validate({"api": {"api_keys": ["a-key"]}})
    routes = {getattr(route, "path", None) for route in create_app(settings).routes}
    probes = [
        container[probe]["httpGet"]["path"]
        for container in containers()
        for probe in ("readinessProbe", "livenessProbe", "startupProbe")
        if "httpGet" in container.get(probe, {})
    ]
    assert "/ready" in probes
    missing = [path for path in probes if path not in routes]
    assert not missing, f"no such routes: {missing}"
    for service in compose()["services"].values():
        test = " ".join(service.get("healthcheck", {}).get("test", []))
        if ours(service.get("image", "")) and "/ready" in test:
            assert "/ready" in routes


def test_every_command_is_accepted_by_the_cli() -> None:
    commands = [
        service["command"]
        for service in compose()["services"].values()
        if ours(service.get("image", ""))
    ]
    commands += [container["args"] for container in containers() if ours(container["image"])]
    assert {command[0] for command in commands} == {"serve", "run"}
    parser = build_parser()
    for command in commands:
        parser.parse_args(command)  # exits (SystemExit) on anything unknown


def families(registry: CollectorRegistry) -> set[str]:
    return {family.name for family in registry.collect()}


async def test_the_autoscaler_metric_is_exported() -> None:
    registry = CollectorRegistry()
    Balancer(Settings(), metrics_registry=registry)
    settings = Settings.model_validate({"cluster": {"replicas": 2}})
    Fleet(settings.cluster, redis=None, registry=registry)
    metrics = [
        spec["pods"]["metric"]["name"]
        for document in manifests()
        if document["kind"] == "HorizontalPodAutoscaler"
        for spec in document["spec"]["metrics"]
    ]
    assert metrics
    missing = [name for name in metrics if name not in families(registry)]
    assert not missing, f"/metrics exports no {missing}"


@pytest.mark.parametrize("path", [COMPOSE, *KUBERNETES], ids=lambda path: path.name)
def test_no_secret_is_written_in_the_files(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "sk-" not in text and "PRIVATE_KEY" not in text
