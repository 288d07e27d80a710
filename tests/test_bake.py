"""Every llm_backend x balancing_strategy bakes into a clean, lint-free, type-checked project."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from hooks.finish import ALWAYS_KEPT_BACKENDS
from tests.conftest import MypyStage, RuffReport, Variants
from tests.helpers import (
    BACKENDS,
    DEFAULT_STRATEGY,
    NO_RUN,
    PACKAGE,
    REPO,
    STRATEGIES,
    UNRENDERED,
    run,
    tail,
    text_files,
    tool,
)

COMBOS = [(backend, strategy) for backend in BACKENDS for strategy in STRATEGIES]


@pytest.mark.parametrize(("backend", "strategy"), COMBOS)
def test_variant_renders_cleanly(variants: Variants, backend: str, strategy: str) -> None:
    project = variants.get(backend, strategy)
    leftovers = [
        f"{path.relative_to(project)}: {match.group(0)!r}"
        for path in text_files(project)
        for match in [UNRENDERED.search(path.read_text(encoding="utf-8", errors="replace"))]
        if match
    ]
    assert leftovers == []
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["name"] == "openrouter-provider"
    config = (project / "src" / PACKAGE / "config.py").read_text(encoding="utf-8")
    assert f'DEFAULT_STRATEGY: Strategy = "{strategy}"' in config
    assert f'DEFAULT_NODE_TYPE: NodeType = "{backend}"' in config


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_the_chosen_backend_ships(variants: Variants, backend: str) -> None:
    project = variants.get(backend, DEFAULT_STRATEGY)
    backends = project / "src" / PACKAGE / "backends"
    tests = project / "tests" / "backends"
    kept = {backend, *ALWAYS_KEPT_BACKENDS}
    for other in BACKENDS:
        module, test = backends / f"{other}.py", tests / f"test_{other}.py"
        if other in kept:
            continue
        assert not module.exists(), f"{module.name} should be removed for {backend}"
        assert not test.exists(), f"{test.name} should be removed for {backend}"
    for name in kept:
        assert (backends / f"{name}.py").exists(), f"backends/{name}.py missing"


@pytest.mark.parametrize(("backend", "strategy"), COMBOS)
def test_ruff_passes(
    ruff_report: RuffReport, variants: Variants, backend: str, strategy: str
) -> None:
    project = variants.get(backend, strategy)
    assert ruff_report.lint.get(project, []) == []
    assert ruff_report.format.get(project, []) == [], "ruff format --check would reformat"


@pytest.mark.parametrize(("backend", "strategy"), COMBOS)
def test_mypy_strict_passes(
    mypy_stage: MypyStage, variants: Variants, backend: str, strategy: str
) -> None:
    status, output = mypy_stage.check(variants.get(backend, strategy))
    assert status == 0, tail(output)


def test_default_bake_has_every_scaffolding_file(variants: Variants) -> None:
    project = variants.get(BACKENDS[0], DEFAULT_STRATEGY)
    for name in (
        "Dockerfile",
        ".dockerignore",
        ".github/workflows/ci.yml",
        ".pre-commit-config.yaml",
        ".gitignore",
        "LICENSE",
        "config.example.toml",
        ".cookiecutter.json",
        "README.md",
        "Makefile",
        "docs/benchmarks.md",
        "src/openrouter_provider/backends/custom.py",
    ):
        assert (project / name).is_file(), name
    workflow = yaml.safe_load((project / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    steps = [step.get("run", "") for step in workflow["jobs"]["check"]["steps"]]
    assert {"make setup PYTHON=python", "make lint", "make test"} <= set(steps)
    makefile = (project / "Makefile").read_text(encoding="utf-8")
    for command in ("ruff check .", "ruff format --check .", "mypy --strict src", "pytest"):
        assert f"$(BIN)/python -m {command}" in makefile
    assert "${{ github.workflow }}" in workflow["concurrency"]["group"]
    hooks = yaml.safe_load((project / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    ids = {hook["id"] for repo in hooks["repos"] for hook in repo["hooks"]}
    assert {"ruff", "ruff-format", "mypy"} <= ids
    dockerfile = (project / "Dockerfile").read_text(encoding="utf-8")
    assert "FROM python:3.11-slim" in dockerfile
    assert "\nUSER app\n" in dockerfile
    assert 'CMD ["serve"]' in dockerfile
    answers = json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))
    answers = answers["cookiecutter"]  # the shape cookiecutter --replay-file reads
    assert answers["llm_backend"] == BACKENDS[0]
    assert answers["package_name"] == PACKAGE
    assert not any(key.startswith("__") or key in ("_repo_dir", "_output_dir") for key in answers)


@pytest.mark.parametrize(
    ("options", "present", "absent"),
    [
        (
            {"include_docker": False},
            [".github/workflows/ci.yml", "deploy/prometheus/alerts.yaml"],
            [
                "Dockerfile",
                ".dockerignore",
                "compose.yaml",
                "deploy/kubernetes",
                "tests/test_deploy.py",
            ],
        ),
        ({"include_github_actions": False}, ["Dockerfile"], [".github"]),
        ({"license": "MIT"}, ["LICENSE"], ["LICENSE-MIT", "LICENSE-APACHE"]),
        ({"license": "Apache-2.0"}, ["LICENSE"], ["LICENSE-MIT", "LICENSE-APACHE"]),
        ({"license": "MIT OR Apache-2.0"}, ["LICENSE-MIT", "LICENSE-APACHE"], ["LICENSE"]),
    ],
)
def test_options_add_and_remove_files(
    cookies: Any, options: dict[str, Any], present: list[str], absent: list[str]
) -> None:
    result = cookies.bake(extra_context={**NO_RUN, **options})
    assert result.exception is None, str(result.exception)
    project = Path(result.project_path)
    for name in present:
        assert (project / name).exists(), name
    for name in absent:
        assert not (project / name).exists(), name
    license_id = options.get("license")
    if license_id:
        pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
        assert pyproject["project"]["license"] == license_id
        texts = " ".join(p.read_text(encoding="utf-8") for p in project.glob("LICENSE*"))
        assert ("Permission is hereby granted" in texts) == ("MIT" in license_id)
        assert ("Apache License" in texts) == ("Apache" in license_id)


@pytest.mark.parametrize("python_version", ["3.12", "3.13", "3.14"])
def test_python_version_reaches_every_tool(cookies: Any, python_version: str) -> None:
    result = cookies.bake(extra_context={**NO_RUN, "python_version": python_version})
    assert result.exception is None, str(result.exception)
    project = Path(result.project_path)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["requires-python"] == f">={python_version}"
    assert pyproject["tool"]["mypy"]["python_version"] == python_version
    ruff_target = min(python_version, "3.13")  # see the generated pyproject.toml
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + ruff_target.replace(".", "")
    assert f"FROM python:{python_version}-slim" in (project / "Dockerfile").read_text()
    lock = (project / "uv.lock").read_text(encoding="utf-8")
    assert lock.splitlines()[2] == f'requires-python = ">={python_version}"'

    workflow = yaml.safe_load((project / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    # CI tests every Python from the lowest supported one up to 3.14, reading nothing more
    # (every dependency has wheels for 3.14).
    versions = ["3.11", "3.12", "3.13", "3.14"]
    matrix = workflow["jobs"]["check"]["strategy"]["matrix"]["python-version"]
    assert matrix == versions[versions.index(python_version) :]
    assert workflow["permissions"] == {"contents": "read"}
    setup = workflow["jobs"]["check"]["steps"][1]
    assert setup["with"]["python-version"] == "${{ matrix.python-version }}"
    makefile = (project / "Makefile").read_text(encoding="utf-8")
    assert f"PYTHON ?= python{python_version}\n" in makefile
    # A newer target turns on more pyupgrade rules and typeshed branches: all must pass.
    for command in (
        [*tool("ruff"), "check", "."],
        [*tool("ruff"), "format", "--check", "."],
        [*tool("mypy"), "--strict", "--cache-dir", str(project.parent / ".mypy_cache"), "src"],
    ):
        done = run(command, project)
        assert done.returncode == 0, tail(done.stdout + done.stderr)


@pytest.mark.parametrize(
    ("network", "chain", "tangle"),
    [
        ("local", "local_testnet", "0x0165878a594ca255338adfa4d48449f69242eb8f"),
        ("base_sepolia", "testnet", "0x8299d60f373f3a4a8c4878e335cb9d840e6e3730"),
    ],
)
def test_network_fills_tangle_defaults(cookies: Any, network: str, chain: str, tangle: str) -> None:
    result = cookies.bake(extra_context={**NO_RUN, "tangle_network": network})
    assert result.exception is None, str(result.exception)
    config = (Path(result.project_path) / "src" / PACKAGE / "config.py").read_text()
    assert f'= "{chain}"' in config
    assert f'tangle_contract: EvmAddress = "{tangle}"' in config


def test_template_dev_extra_covers_the_generated_dependencies(variants: Variants) -> None:
    """The template's environment runs the bakes' suites, ruff and mypy: it needs them all."""
    generated = tomllib.loads(
        (variants.get(BACKENDS[0], DEFAULT_STRATEGY) / "pyproject.toml").read_text("utf-8")
    )["project"]
    ours = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    wanted = {*generated["dependencies"], *generated["optional-dependencies"]["dev"]}
    missing = wanted - set(ours["optional-dependencies"]["dev"])
    assert not missing, f"add to the dev extra of the template's pyproject.toml: {sorted(missing)}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_generation_test_named_exists(variants: Variants, backend: str) -> None:
    """tests/conftest.py names the fast part generation runs by path: a renamed file or test
    would silently leave it, so each entry must still name something."""
    project = variants.get(backend, DEFAULT_STRATEGY)
    conftest = (project / "tests" / "conftest.py").read_text(encoding="utf-8")
    listed = conftest[
        conftest.index("GENERATION = (") : conftest.index(")\n", conftest.index("GENERATION = ("))
    ]
    entries = re.findall(r'"(tests/[^"]+)"', listed)
    assert len(entries) >= 10, listed
    for entry in entries:
        path, _, test = entry.partition("::")
        assert (project / path).is_file(), entry
        if test:
            assert f"def {test}(" in (project / path).read_text(encoding="utf-8"), entry
