"""The generated project's dependencies are locked: uv.lock is current for pyproject.toml,
and the requirements files pip, CI and the Dockerfile install from are exported from it.

Installing from them is the post-generation run's first step (tests/test_postgen.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import Variants
from tests.helpers import BACKENDS, DEFAULT_STRATEGY, run, tail

# uv finds no interpreter of its own choosing: the one running these tests (the lowest
# supported Python, which the default answers require) does.
UV = [sys.executable, "-m", "uv"]


def uv(project: Path, *arguments: str) -> tuple[int, str]:
    done = run(
        [*UV, *arguments, "--python", sys.executable],
        project,
        env={"PATH": "/usr/bin:/bin", "UV_PYTHON_DOWNLOADS": "never", "HOME": str(Path.home())},
    )
    return done.returncode, done.stdout + done.stderr


def check_lock(project: Path) -> None:
    status, output = uv(project, "lock", "--check")
    assert status == 0, f"uv.lock is not current: run bash scripts/lock.sh\n{tail(output)}"


def test_the_lock_is_current(variants: Variants) -> None:
    check_lock(variants.get(BACKENDS[0], DEFAULT_STRATEGY))


@pytest.mark.parametrize(
    ("name", "extra"), [("requirements.txt", []), ("requirements-dev.txt", ["--extra", "dev"])]
)
def test_the_requirements_are_exported_from_the_lock(
    variants: Variants, tmp_path: Path, name: str, extra: list[str]
) -> None:
    project = variants.get(BACKENDS[0], DEFAULT_STRATEGY)
    exported = tmp_path / name
    status, output = uv(
        project,
        *("export", "--frozen", "--no-emit-project", "--no-annotate", *extra),
        *("-o", str(exported)),
    )
    assert status == 0, output
    # The header names the output file as given: compare what follows it.
    body = exported.read_text(encoding="utf-8").split("\n", 2)[2]
    assert (project / name).read_text(encoding="utf-8").split("\n", 2)[2] == body, (
        f"{name} is not uv.lock's export: run bash scripts/lock.sh"
    )
    assert "--hash=sha256:" in body
