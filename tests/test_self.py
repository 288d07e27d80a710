"""The template's own code (hooks, these tests) is held to the generated project's standard."""

from __future__ import annotations

import pytest

from tests.helpers import REPO, run, tool


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "hooks", "tests"],
        ["ruff", "format", "--check", "hooks", "tests"],
        ["mypy"],
    ],
    ids=["ruff", "ruff-format", "mypy"],
)
def test_template_code_is_clean(command: list[str]) -> None:
    done = run([*tool(command[0]), *command[1:]], REPO)
    assert done.returncode == 0, done.stdout + done.stderr
