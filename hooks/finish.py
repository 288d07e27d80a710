"""What post_gen_project does to a fresh project: prune, record, test.

One small function per option removes what the answers exclude; the answers
are written to `.cookiecutter.json`; then, unless switched off, the project
gets its own `.venv`, is installed with its dev extras and runs its tests.
Standard library only (see answers.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .answers import BACKENDS

SKIP_ENV = "OPENROUTER_BLUEPRINT_SKIP_TESTS"
# Backends other clients build on: vllm and llamacpp extend it, custom is tested with it.
ALWAYS_KEPT_BACKENDS = ("openai_compatible",)
INSTALL_TIMEOUT_S = 1800
TEST_TIMEOUT_S = 1800
# pip's words for "the package index is unreachable" (its retry warnings); a package
# that is merely missing from a reachable index is an install failure, not this.
_OFFLINE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name"
    r"|Name or service not known|Network is unreachable|ProxyError|ConnectTimeout"
)
# pytest's closing line: "== 3 passed, 1 skipped in 2.1s ==", or bare under -q.
_SUMMARY = re.compile(
    r"^(?:=+ )?((?:no tests ran|\d+ \w+(?:, \d+ \w+)*) in [\d.]+s(?: \([\d:]+\))?)(?: =+)?$",
    re.MULTILINE,
)


def remove(project: Path, *relative: str) -> None:
    """Delete files or directories of the project; missing ones are fine."""
    for name in relative:
        path = project / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# Caches a developer's tools leave in the template; copied unrendered, then dropped here.
TOOL_CACHES = ("__pycache__", ".ruff_cache", ".mypy_cache", ".pytest_cache")


def remove_tool_caches(project: Path) -> None:
    for name in TOOL_CACHES:
        for path in list(project.rglob(name)):
            shutil.rmtree(path, ignore_errors=True)


def remove_other_backends(project: Path, package: str, backend: str) -> None:
    """Drop the client modules (and their tests) of servers the project does not use."""
    for other in BACKENDS:
        if other != backend and other not in ALWAYS_KEPT_BACKENDS:
            remove(
                project,
                f"src/{package}/backends/{other}.py",
                f"tests/backends/test_{other}.py",
            )


def remove_docker(project: Path) -> None:
    remove(project, "Dockerfile", ".dockerignore")


def remove_github_actions(project: Path) -> None:
    remove(project, ".github")


def choose_license(project: Path, license_id: str) -> None:
    """One LICENSE for a single license; both texts, side by side, for the dual choice."""
    if license_id == "MIT OR Apache-2.0":
        return
    keep, drop = (
        ("LICENSE-MIT", "LICENSE-APACHE")
        if license_id == "MIT"
        else ("LICENSE-APACHE", "LICENSE-MIT")
    )
    remove(project, drop)
    (project / keep).rename(project / "LICENSE")


def write_answers(project: Path, answers: Mapping[str, Any]) -> None:
    """Record the answers so the project can be regenerated or updated (cruft reads this)."""
    recorded = {
        key: value
        for key, value in answers.items()
        if not key.startswith("_") or key in ("_template", "_checkout")
    }
    text = json.dumps(recorded, indent=2, ensure_ascii=False) + "\n"
    (project / ".cookiecutter.json").write_text(text, encoding="utf-8")


def prune(project: Path, answers: Mapping[str, Any]) -> None:
    remove_tool_caches(project)
    remove_other_backends(project, answers["package_name"], answers["llm_backend"])
    if not answers["include_docker"]:
        remove_docker(project)
    if not answers["include_github_actions"]:
        remove_github_actions(project)
    choose_license(project, answers["license"])
    write_answers(project, answers)


# --- the post-generation test run ----------------------------------------------------------


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for the nested install and test run.

    An outer pytest's PYTEST_ADDOPTS or coverage settings, an active virtualenv or a
    PYTHONPATH would change what the project's own run does, so they stay outside.
    """
    return {
        key: value
        for key, value in environ.items()
        if not key.startswith(("PYTEST_", "COV_"))
        and key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }


def find_python(version: str) -> str | None:
    """An interpreter of at least `version`: this one if new enough, else python3.X on PATH."""
    wanted = tuple(int(part) for part in version.split("."))
    if sys.version_info[:2] >= wanted:
        return sys.executable
    candidate = shutil.which(f"python{version}")
    if candidate is None:
        return None
    # Version managers put shims on PATH that exist but refuse to run: ask it.
    probe = subprocess.run(
        [candidate, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0 or tuple(map(int, probe.stdout.split())) < wanted:
        return None
    return candidate


def summary_line(output: str) -> str | None:
    """pytest's closing line, e.g. '12 passed, 1 skipped in 3.21s'."""
    found = _SUMMARY.findall(output)
    return found[-1] if found else None


def _run(
    command: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float
) -> tuple[int, str]:
    try:
        done = subprocess.run(
            list(command),
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        output = error.stdout if isinstance(error.stdout, str) else ""
        return -1, output + f"\n(timed out after {timeout:.0f} s)"
    return done.returncode, done.stdout + done.stderr


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


INSTALL = ".venv/bin/python -m pip install -e '.[dev]'"
TEST = ".venv/bin/python -m pytest"


def later_command(project: Path, python_version: str) -> str:
    """The shell line that does by hand what the post-generation run does."""
    return f"cd {project} && python{python_version} -m venv .venv && {INSTALL} && {TEST}"


def run_generated_tests(project: Path, python_version: str, environ: Mapping[str, str]) -> bool:
    """Create .venv, install the project with its dev extras and run its tests.

    True when the tests ran and passed. Anything else is said plainly with the command
    to run by hand, and the project stays: deleting what was just generated from the
    answers would throw away the user's work for a failure they can now inspect.
    """
    where, install, test = f"cd {project}", INSTALL, TEST
    later = later_command(project, python_version)
    python = find_python(python_version)
    if python is None:
        print(
            f"Tests not run: this project needs Python {python_version} or newer, "
            f"and python{python_version} is not on PATH. To run them later:\n  {later}"
        )
        return False
    env = child_env(environ)
    print(f"Creating .venv with {python} and installing the project (this takes a minute)...")
    status, output = _run([python, "-m", "venv", ".venv"], project, env, INSTALL_TIMEOUT_S)
    if status != 0:
        print(f"Creating .venv FAILED:\n{_tail(output)}\nTo retry:\n  {later}")
        return False
    venv_python = str(project / ".venv" / "bin" / "python")
    pip = [venv_python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-e", ".[dev]"]
    status, output = _run(pip, project, env, INSTALL_TIMEOUT_S)
    if status != 0 and _OFFLINE.search(output):
        print(
            "Tests not run: pip could not reach the package index to install the "
            f"dependencies. When online:\n  {where} && {install} && {test}"
        )
        return False
    if status != 0:
        print(f"Installing the project FAILED:\n{_tail(output)}\nTo retry:\n  {where} && {install}")
        return False
    status, output = _run(
        [venv_python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, env, TEST_TIMEOUT_S
    )
    summary = summary_line(output) or "no pytest summary line"
    if status != 0:
        print(f"{_tail(output)}\nTo rerun:\n  {where} && {test}\nGenerated tests FAILED: {summary}")
        return False
    print(f"Generated tests: {summary}")
    return True


def finish(project: Path, answers: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """Everything post_gen_project does, in order."""
    prune(project, answers)
    if not answers["run_generated_tests"]:
        return
    if environ.get(SKIP_ENV) == "1":
        later = later_command(project, answers["python_version"])
        print(f"Tests not run: {SKIP_ENV}=1. To run them:\n  {later}")
        return
    run_generated_tests(project, answers["python_version"], environ)
