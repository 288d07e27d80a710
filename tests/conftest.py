"""Fixtures: baked variants shared by the session, static-check results computed once."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import NO_RUN, SLUG, run, tool


class Variants:
    """Bakes each (backend, strategy) once per session and remembers where."""

    def __init__(self, cookies_session: Any) -> None:
        self._cookies = cookies_session
        self._paths: dict[tuple[str, str], Path] = {}

    def get(self, backend: str, strategy: str) -> Path:
        key = (backend, strategy)
        if key not in self._paths:
            result = self._cookies.bake(
                extra_context={**NO_RUN, "llm_backend": backend, "balancing_strategy": strategy}
            )
            assert result.exception is None, f"bake {key} failed: {result.exception}"
            assert result.exit_code == 0
            self._paths[key] = Path(result.project_path)
        return self._paths[key]

    def all(self, backends: list[str], strategies: list[str]) -> list[Path]:
        return [self.get(b, s) for b in backends for s in strategies]


@pytest.fixture(scope="session")
def variants(cookies_session: Any) -> Variants:
    return Variants(cookies_session)


def _owner(path: str, projects: list[Path]) -> Path | None:
    for project in projects:
        if Path(path).resolve().is_relative_to(project.resolve()):
            return project
    return None


class RuffReport:
    """ruff check and ruff format --check over every bake at once, split per project."""

    def __init__(self, projects: list[Path]) -> None:
        self.lint: dict[Path, list[str]] = defaultdict(list)
        self.format: dict[Path, list[str]] = defaultdict(list)
        # One process for all bakes: ruff reads each project's own pyproject.toml.
        cwd = projects[0].parent.parent
        checked = run([*tool("ruff"), "check", "--output-format", "json", *map(str, projects)], cwd)
        if checked.returncode not in (0, 1):  # 2: ruff itself failed (bad config, crash)
            raise RuntimeError(f"ruff check failed to run: {checked.stderr}")
        for item in json.loads(checked.stdout or "[]"):
            owner = _owner(item["filename"], projects)
            where = f"{item['filename']}:{item['location']['row']}"
            self.lint[owner or projects[0]].append(f"{where} {item['code']} {item['message']}")
        formatted = run([*tool("ruff"), "format", "--check", *map(str, projects)], cwd)
        for line in formatted.stdout.splitlines():
            if line.startswith("Would reformat: "):
                path = line.removeprefix("Would reformat: ")
                self.format[_owner(path, projects) or projects[0]].append(path)
        if formatted.returncode not in (0, 1):
            raise RuntimeError(f"ruff format failed to run: {formatted.stderr}")


@pytest.fixture(scope="session")
def ruff_report(variants: Variants) -> RuffReport:
    from tests.helpers import BACKENDS, STRATEGIES

    return RuffReport(variants.all(BACKENDS, STRATEGIES))


class MypyStage:
    """Runs mypy --strict on bakes copied to one fixed path with one shared cache.

    Variants differ in a few lines, so after the first run mypy re-checks only the
    modules whose content changed: 36 runs cost little more than a handful.
    """

    def __init__(self, root: Path) -> None:
        self.project = root / "stage" / SLUG
        self.cache = root / "cache"

    def check(self, baked: Path) -> tuple[int, str]:
        if self.project.exists():
            shutil.rmtree(self.project)
        shutil.copytree(baked, self.project, ignore=shutil.ignore_patterns(".*_cache"))
        done = run([*tool("mypy"), "--strict", "--cache-dir", str(self.cache), "src"], self.project)
        return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="session")
def mypy_stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MypyStage]:
    yield MypyStage(tmp_path_factory.mktemp("mypy"))
