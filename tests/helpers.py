"""Shared pieces of the template's tests: the template's options, baking, subprocesses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hooks.finish import child_env

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = json.loads((REPO / "cookiecutter.json").read_text(encoding="utf-8"))
BACKENDS: list[str] = TEMPLATE["llm_backend"]
STRATEGIES: list[str] = TEMPLATE["balancing_strategy"]
DEFAULT_STRATEGY = STRATEGIES[0]
PACKAGE = "openrouter_provider"
SLUG = "openrouter-provider"
# Bakes for structure and static checks do not run the post-gen install + test run.
NO_RUN: dict[str, Any] = {"run_generated_tests": False}

# Jinja left behind: an unrendered cookiecutter variable, a block tag or a comment.
UNRENDERED = re.compile(r"\{\{-?\s*cookiecutter\b|\{%-?\s|\{#")


def run(
    command: Sequence[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
) -> subprocess.CompletedProcess[str]:
    """Run a command, output captured as text, never raising on a non-zero exit."""
    return subprocess.run(
        list(command),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def project_env(project: Path, **extra: str) -> dict[str, str]:
    """The environment a baked project's checks run in: ours minus outer-pytest leftovers."""
    env = child_env(os.environ)
    env["PYTHONPATH"] = str(project / "src")
    env.update(extra)
    return env


def tool(name: str) -> list[str]:
    """A Python tool from this interpreter's environment (ruff, mypy, pytest)."""
    return [sys.executable, "-m", name]


def text_files(project: Path) -> list[Path]:
    skip = {".venv", ".mypy_cache", ".ruff_cache", "__pycache__", ".pytest_cache"}
    return [
        path
        for path in sorted(project.rglob("*"))
        if path.is_file() and not skip.intersection(path.relative_to(project).parts)
    ]


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
