"""Print hooks/taken_names.json: the names the generated project's dependencies occupy.

A package_name equal to one of their top-level modules would shadow it (`import redis`
would find the project), and a project_slug equal to one of their distributions would make
`pip install -e .` replace that dependency. hooks/answers.py refuses both; it runs on
cookiecutter's interpreter, where the dependencies are not installed, so the names are
recorded here from an environment where they are:

    python scripts/taken_names.py > hooks/taken_names.json

tests/test_answers.py fails when a dependency's names are missing from the file.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def requirements() -> list[str]:
    """The generated project's dependencies and dev extra (the same for every answer)."""
    text = (REPO / "{{cookiecutter.project_slug}}" / "pyproject.toml").read_text(encoding="utf-8")
    # Only the dependency tables matter; the Jinja elsewhere in the file is not TOML.
    start = text.index("dependencies = [")
    end = text.index("[project.scripts]")
    data = tomllib.loads(text[start:end])
    return [*data["dependencies"], *data["project"]["optional-dependencies"]["dev"]]


def closure(roots: list[str]) -> set[str]:
    """Every installed distribution the requirements pull in, extras and markers applied."""
    seen: set[str] = set()
    todo = [Requirement(root) for root in roots]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        extras = requirement.extras or {""}
        for line in distribution.requires or []:
            needed = Requirement(line)
            if needed.marker is None or any(
                needed.marker.evaluate({"extra": extra}) for extra in extras
            ):
                todo.append(needed)
    return seen


def taken_names() -> dict[str, list[str]]:
    distributions = closure(requirements())
    modules = {
        module
        for module, owners in importlib.metadata.packages_distributions().items()
        if module.isidentifier() and any(canonicalize_name(d) in distributions for d in owners)
    }
    return {"modules": sorted(modules), "distributions": sorted(distributions)}


if __name__ == "__main__":
    json.dump(taken_names(), sys.stdout, indent=0)
    sys.stdout.write("\n")
