"""Any valid name generates: awkward answers bake into projects that lint, type-check,
import and pass their tests, with no trace of the default names.

The default bake is what every other test uses; a name baked into a file where an answer
belongs (a test importing `openrouter_provider_sim`) passes there and fails for everyone
else. Each bake here also takes non-default options, so a few bakes cover much of the space.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cookiecutter.main import cookiecutter
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from slugify import slugify

from hooks.answers import check_package_name, check_slug
from hooks.finish import summary_line
from tests.chain import missing_reason, tangle_chain
from tests.conftest import RuffReport
from tests.helpers import (
    BACKENDS,
    NO_RUN,
    PACKAGE,
    REPO,
    SLUG,
    STRATEGIES,
    TEMPLATE,
    project_env,
    run,
    tail,
    text_files,
    tool,
)
from tests.test_lock import check_lock

# name -> answers; the project's directory, distribution and package follow from them.
AWKWARD: dict[str, dict[str, Any]] = {
    "spaces": {
        "project_name": "Acme Gateway",
        "llm_backend": "vllm",
        "balancing_strategy": "least_loaded",
        "license": "Apache-2.0",
    },
    "unicode": {
        "project_name": "Ünïcödé Gateway",
        "llm_backend": "llamacpp",
        "balancing_strategy": "prefix_affinity",
        "python_version": "3.13",
        "include_docker": False,
    },
    "slug_and_package_differ": {
        "project_name": "Edge LLM",
        "project_slug": "edge-llm-gateway",
        "package_name": "edgeprov",
        "llm_backend": "tgi",
        "tangle_network": "base_sepolia",
        "include_github_actions": False,
    },
    # The name of one of the project's own subpackages (llm/) as the top-level package.
    "a_subpackage_name": {
        "project_name": "LLM",
        "llm_backend": "custom",
        "balancing_strategy": "capability_based",
        "license": "MIT",
    },
}

# The default answers' names, which no other answer's bake may contain. The product's own
# words ("OpenRouter provider", the OPENROUTER_ settings) are not names and stay.
DEFAULT_NAMES = re.compile(rf"{PACKAGE}|{SLUG}|{re.escape(TEMPLATE['project_name'])}")

# Imports every module of the packages named in argv (not __main__, which would run).
IMPORT_ALL = """
import importlib, pkgutil, sys
for name in sys.argv[1:]:
    package = importlib.import_module(name)
    for module in pkgutil.walk_packages(package.__path__, name + "."):
        if not module.name.endswith(".__main__"):
            importlib.import_module(module.name)
"""

pytestmark = pytest.mark.xdist_group("names")


def bake(output: Path, answers: dict[str, Any]) -> Path:
    return Path(
        cookiecutter(
            str(REPO), no_input=True, output_dir=str(output), extra_context={**NO_RUN, **answers}
        )
    )


def package_of(project: Path) -> str:
    """The one product package: src/<package> beside src/<package>_sim and _bench."""
    names = {path.name for path in (project / "src").iterdir() if path.is_dir()}
    (package,) = {name for name in names if f"{name}_sim" in names}
    return package


def default_names_in(project: Path) -> list[str]:
    return [
        f"{path.relative_to(project)}: {match.group(0)!r}"
        for path in text_files(project)
        if path.name != ".cookiecutter.json"  # the record of the answers, defaults included
        for match in [DEFAULT_NAMES.search(path.read_text(encoding="utf-8", errors="replace"))]
        if match
    ]


def imports(project: Path) -> tuple[bool, str]:
    package = package_of(project)
    packages = [package, f"{package}_sim", f"{package}_bench"]
    done = run([sys.executable, "-c", IMPORT_ALL, *packages], project, env=project_env(project))
    return done.returncode == 0, done.stderr


class Awkward:
    """The awkward bakes, with one ruff and one mypy process over all of them."""

    def __init__(self, root: Path) -> None:
        self.projects = {name: bake(root / name, answers) for name, answers in AWKWARD.items()}
        paths = list(self.projects.values())
        self.ruff = RuffReport(paths)
        # Each bake's packages have their own names, so one mypy checks them all at once
        # (the dependencies' types are read once); the config is the same in every bake.
        config = self.projects["spaces"] / "pyproject.toml"
        checked = run(
            [
                *tool("mypy"),
                *("--strict", "--config-file", str(config), "--cache-dir", str(root / "cache")),
                *(str(path / "src") for path in paths),
            ],
            root,
        )
        self.mypy = checked.stdout + checked.stderr
        self.mypy_status = checked.returncode


@pytest.fixture(scope="session")
def awkward(tmp_path_factory: pytest.TempPathFactory) -> Awkward:
    return Awkward(tmp_path_factory.mktemp("awkward"))


def test_the_awkward_names_are_what_they_claim(awkward: Awkward) -> None:
    projects = awkward.projects
    assert projects["spaces"].name == "acme-gateway"
    assert projects["unicode"].name == "unicode-gateway"
    assert (
        projects["slug_and_package_differ"].name,
        package_of(projects["slug_and_package_differ"]),
    ) == (
        "edge-llm-gateway",
        "edgeprov",
    )
    assert package_of(projects["a_subpackage_name"]) == "llm"
    readme = (projects["unicode"] / "README.md").read_text(encoding="utf-8")
    assert "Ünïcödé Gateway" in readme


@pytest.mark.parametrize("name", AWKWARD)
def test_no_default_name_is_left(awkward: Awkward, name: str) -> None:
    assert default_names_in(awkward.projects[name]) == []


@pytest.mark.parametrize("name", AWKWARD)
def test_awkward_bake_lints(awkward: Awkward, name: str) -> None:
    project = awkward.projects[name]
    assert awkward.ruff.lint.get(project, []) == []
    assert awkward.ruff.format.get(project, []) == [], "ruff format --check would reformat"


def test_awkward_bakes_type_check(awkward: Awkward) -> None:
    assert awkward.mypy_status == 0, tail(awkward.mypy)


@pytest.mark.parametrize("name", AWKWARD)
def test_awkward_bake_imports_and_names_its_command(awkward: Awkward, name: str) -> None:
    project = awkward.projects[name]
    ok, error = imports(project)
    assert ok, error
    usage = run(
        [sys.executable, "-m", package_of(project), "--help"], project, env=project_env(project)
    )
    assert usage.returncode == 0, usage.stderr
    assert usage.stdout.startswith(f"usage: {project.name} "), usage.stdout[:200]


@pytest.mark.parametrize(
    "name", [name for name, answers in AWKWARD.items() if "python_version" not in answers]
)
def test_the_lock_names_the_project_and_is_current(awkward: Awkward, name: str) -> None:
    """uv.lock holds the project's own name and version, which are answers."""
    project = awkward.projects[name]
    assert f'\nname = "{project.name}"\nversion = "0.1.0"\nsource = {{ editable = "." }}' in (
        project / "uv.lock"
    ).read_text(encoding="utf-8")
    check_lock(project)


@pytest.mark.generated
@pytest.mark.xdist_group("suites")
def test_a_renamed_bake_passes_the_generation_tests(awkward: Awkward) -> None:
    """The part of the suite generation runs, in the bake whose names differ most."""
    reason = missing_reason()
    if reason:
        pytest.skip(f"the generation tests include a chain round trip: {reason}")
    project = awkward.projects["slug_and_package_differ"]
    with tangle_chain() as rpc_url:
        done = run(
            [sys.executable, "-m", "pytest", "-m", "generation", "-q", "-p", "no:cacheprovider"],
            project,
            env=project_env(project, TANGLE_E2E_RPC_URL=rpc_url),
        )
    output = done.stdout + done.stderr
    assert done.returncode == 0, tail(output, 80)
    summary = summary_line(output) or ""
    assert re.fullmatch(r"\d+ passed, \d+ deselected(, \d+ warnings?)? in .*", summary), summary


# --- the space of answers, sampled -----------------------------------------------------------

_WORDS = st.text(
    alphabet=st.characters(categories=("Lu", "Ll", "Nd"), max_codepoint=0x24F) | st.just(" "),
    min_size=1,
    max_size=24,
)
_SLUG = st.from_regex(r"[a-z][a-z0-9]{0,9}(-[a-z0-9]{1,5}){0,2}", fullmatch=True)
_PACKAGE = st.from_regex(r"[a-z][a-z0-9_]{0,14}", fullmatch=True)


@st.composite
def answer_sets(draw: st.DrawFn) -> dict[str, Any]:
    """Valid answers: a free project name, its slug and package derived or given."""
    name = draw(_WORDS.filter(lambda text: text.strip() != ""))
    slug = draw(st.one_of(st.just(slugify(name, max_length=64, word_boundary=True)), _SLUG))
    package = draw(st.one_of(st.just(slug.replace("-", "_")), _PACKAGE))
    if check_slug(slug) or check_package_name(package):
        # Out of the validators' range; test_answers.py covers refusals.
        slug, package = "sampled-project", "sampled_project"
    return {
        "project_name": name,
        "project_slug": slug,
        "package_name": package,
        "llm_backend": draw(st.sampled_from(BACKENDS)),
        "balancing_strategy": draw(st.sampled_from(STRATEGIES)),
        "license": draw(st.sampled_from(TEMPLATE["license"])),
        "python_version": draw(st.sampled_from(TEMPLATE["python_version"])),
        "tangle_network": draw(st.sampled_from(["local", "base_sepolia"])),
        "include_docker": draw(st.booleans()),
        "include_github_actions": draw(st.booleans()),
    }


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="sampled-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@settings(
    max_examples=4,
    derandomize=True,
    database=None,
    deadline=None,
    # No shrinking: each example is a bake, and a failing one is shown as drawn.
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(answers=answer_sets())
def test_sampled_answers_bake_lint_and_import(scratch: Path, answers: dict[str, Any]) -> None:
    output = Path(tempfile.mkdtemp(dir=scratch))
    project = bake(output, answers)
    try:
        assert project.name == answers["project_slug"]
        report = RuffReport([project])
        assert report.lint.get(project, []) == []
        assert report.format.get(project, []) == []
        ok, error = imports(project)
        assert ok, error
        names = (answers["project_name"], answers["project_slug"], answers["package_name"])
        if not {TEMPLATE["project_name"], SLUG, PACKAGE}.intersection(names):
            assert default_names_in(project) == []
    finally:
        shutil.rmtree(output, ignore_errors=True)
