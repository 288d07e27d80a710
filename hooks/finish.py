"""What post_gen_project does to a fresh project: prune, record, test.

One small function per option removes what the answers exclude; the answers
are written to `.cookiecutter.json`; then, unless switched off, the project
gets its own `.venv`, is installed with its dev extras and runs its tests.
Standard library only (see answers.py).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from .answers import BACKENDS

SKIP_ENV = "OPENROUTER_BLUEPRINT_SKIP_TESTS"
# Kept whatever the answer: vllm and llamacpp extend openai_compatible, and custom is the
# skeleton for adding a server type, which every project may need.
ALWAYS_KEPT_BACKENDS = ("openai_compatible", "custom")
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
    """Drop the template's stray caches, never looking into .git or a virtualenv.

    Regenerating over an existing project (`-f`, a replay) runs this inside the user's
    tree: a .venv's thousands of __pycache__ directories are not the template's.
    """
    for top, dirs, _ in os.walk(project):
        here = Path(top)
        for name in [name for name in dirs if name in TOOL_CACHES]:
            shutil.rmtree(here / name, ignore_errors=True)
        dirs[:] = [
            name
            for name in dirs
            if name not in TOOL_CACHES
            and name not in (".git", ".venv")
            and not (here / name / "pyvenv.cfg").exists()
        ]


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
    # The alerts and the dashboard serve any deployment: deploy/prometheus and deploy/grafana stay.
    remove(
        project,
        "Dockerfile",
        ".dockerignore",
        "compose.yaml",
        "deploy/kubernetes",
        "tests/test_deploy.py",
    )


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


ANSWERS_FILE = ".cookiecutter.json"


def write_answers(project: Path, answers: Mapping[str, Any]) -> None:
    """Save the answers as a replay file: `cookiecutter --replay-file .cookiecutter.json TEMPLATE`.

    Only the answers: not the template's own settings (`_extensions`,
    `_copy_without_render`, ...) nor what describes this machine or run (`_output_dir`,
    `_template`, ...), all `_`-prefixed. A replay takes the template's current settings for
    keys the file lacks; pinned ones from an older template would render its newer
    verbatim files as Jinja. run_generated_tests is saved false: regenerating should not
    reinstall and retest.
    """
    recorded = {key: value for key, value in answers.items() if not key.startswith("_")}
    recorded["run_generated_tests"] = False
    text = json.dumps({"cookiecutter": recorded}, indent=2, ensure_ascii=False) + "\n"
    (project / ANSWERS_FILE).write_text(text, encoding="utf-8")


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


def _runs(candidate: str, wanted: tuple[int, ...]) -> bool:
    # Version managers put shims on PATH that exist but refuse to run: ask it.
    probe = subprocess.run(
        [candidate, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.returncode == 0 and tuple(map(int, probe.stdout.split())) >= wanted


def find_python(version: str) -> str | None:
    """An interpreter of at least `version`: this one if new enough, else python3.X on PATH."""
    wanted = tuple(int(part) for part in version.split("."))
    if sys.version_info[:2] >= wanted:
        return sys.executable
    candidate = shutil.which(f"python{version}")
    return candidate if candidate is not None and _runs(candidate, wanted) else None


def no_python_reason(version: str) -> str:
    """Why find_python found nothing: no such command, or one that does not run."""
    candidate = shutil.which(f"python{version}")
    if candidate is None:
        return f"python{version} is not on PATH"
    return (
        f"python{version} on PATH ({candidate}) does not run as Python {version} "
        "(a version manager's shim for a version it has not installed?)"
    )


def summary_line(output: str) -> str | None:
    """pytest's closing line, e.g. '12 passed, 1 skipped in 3.21s'."""
    found = _SUMMARY.findall(output)
    return found[-1] if found else None


# A line every few seconds while a step is quiet, so a slow install never looks hung.
HEARTBEAT_S = 5.0
# pip's lines that say what it is doing (not its warnings or progress bars), for heartbeats.
_STEP = re.compile(
    r"(Collecting|Downloading|Using cached|Building|Installing|Successfully|Obtaining|Preparing"
    r"|Running|Creating)"
)
# pytest -q's progress lines ("....s..  [ 42%]"), shown as they come.
_PYTEST_PROGRESS = re.compile(r"^[.sxXFE]+\s*\[\s*\d+%\]$")


def _say(text: str) -> None:
    # cookiecutter's output is often a pipe (CI): unflushed lines would arrive all at the end.
    print(text, flush=True)


def _run(
    command: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float, label: str = ""
) -> tuple[int, str]:
    """Run `command`, showing its progress, and return its status and whole output.

    pytest's progress lines are shown as they come; otherwise, every HEARTBEAT_S of
    silence, one line with the step's time and the command's latest line of output.
    """
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    output: list[str] = []
    started = last_said = time.monotonic()
    shown = ""
    while True:
        now = time.monotonic()
        if now - started > timeout:
            process.kill()
            process.wait()
            return -1, "".join(output) + f"\n(timed out after {timeout:.0f} s)"
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            line = ""
        if line is None:
            break
        output.append(line)
        text = line.strip()
        now = time.monotonic()
        if _PYTEST_PROGRESS.match(text):
            _say(f"  {text}")
            last_said, shown = now, text
        elif now - last_said >= HEARTBEAT_S:
            latest = next((old.strip() for old in reversed(output) if _STEP.match(old)), "")
            news = f": {latest[:90]}" if latest and latest != shown else ""
            _say(f"  {label} {now - started:.0f} s{news}")
            last_said, shown = now, latest or shown
    return process.wait(), "".join(output)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# pytest's "_____ test_name _____" heading of one failure or error in its report.
_FAILURE_HEADING = re.compile(r"^_{3,} .+ _{3,}$", re.MULTILINE)


def first_failure(output: str, lines: int = 40) -> str:
    """The first failure's report, its reason (pytest's `E` lines) included, then the
    FAILED and ERROR lines of the short summary: never a screenful of SKIPPED lines."""
    found = _FAILURE_HEADING.search(output)
    if found is None:
        return _tail(output, lines)
    rest = output[found.end() :]
    ends = [m.start() for m in (_FAILURE_HEADING.search(rest), re.search(r"^=+ ", rest, re.M)) if m]
    body = (found.group(0) + rest[: min(ends, default=len(rest))]).strip().splitlines()
    if len(body) > lines:
        # The reason is at the end of a traceback: keep the heading and the last lines.
        body = [body[0], "...", *body[-(lines - 2) :]]
    summary = [line for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return "\n".join([*body, *summary])


# The locked versions (requirements-dev.txt, exported from uv.lock), then the project itself.
INSTALL = (
    ".venv/bin/python -m pip install -r requirements-dev.txt"
    " && .venv/bin/python -m pip install --no-deps -e ."
)
# At generation, the suite's fast part (tests/conftest.py's GENERATION); `make test` runs all.
TEST = ".venv/bin/python -m pytest -m generation"
KEEP_HINT = (
    "Unless generation was started with --keep-project-on-failure, cookiecutter now deletes "
    "the project, as it does whenever a hook fails."
)


def cd(project: Path) -> str:
    """`cd` to the project as a shell line: pasted as printed, even with spaces or quotes."""
    return f"cd {shlex.quote(str(project))}"


def later_command(project: Path, python_version: str) -> str:
    """The shell line that does by hand what the post-generation run does."""
    return f"{cd(project)} && python{python_version} -m venv .venv && {INSTALL} && {TEST}"


def next_steps(project: Path, slug: str, installed: bool) -> str:
    """What to type after generation, from the shell cookiecutter ran in."""
    steps = [cd(project)]
    if not installed:
        steps.append("make setup                # or: make setup-uv")
    steps += [
        ". .venv/bin/activate",
        f"{slug} demo                # simulated nodes behind the provider, no GPU needed",
        "cp config.example.toml config.toml   # then list your nodes and models",
        "export OPENROUTER_API_KEY=change-me",
        f"{slug} serve --config config.toml",
    ]
    return "Next steps:\n" + "\n".join(f"  {step}" for step in steps)


# What the post-generation run came to; only "failed" fails generation.
Outcome = Literal["passed", "not run", "failed"]


def run_generated_tests(project: Path, python_version: str, environ: Mapping[str, str]) -> Outcome:
    """Create .venv, install the project with its dev extras and run its tests.

    "not run" when this machine cannot (no such Python, no package index): the project
    is fine, so generation succeeds. A failed install or test run is "failed". Either is
    said plainly with the command to run by hand.
    """
    where, install, test = cd(project), INSTALL, TEST
    later = later_command(project, python_version)
    python = find_python(python_version)
    if python is None:
        _say(
            f"Tests not run: this project needs Python {python_version} or newer, "
            f"and {no_python_reason(python_version)}. To run them later:\n  {later}"
        )
        return "not run"
    env = child_env(environ)
    _say(f"Creating .venv with {python} and installing the project and its dev tools...")
    status, output = _run([python, "-m", "venv", ".venv"], project, env, INSTALL_TIMEOUT_S, "venv")
    if status != 0:
        _say(f"Creating .venv FAILED:\n{_tail(output)}\nTo retry:\n  {later}")
        return "failed"
    venv_python = str(project / ".venv" / "bin" / "python")
    pip = [venv_python, "-m", "pip", "install", "--disable-pip-version-check"]
    status, output = _run(
        [*pip, "-r", "requirements-dev.txt"], project, env, INSTALL_TIMEOUT_S, "installing"
    )
    if status == 0:
        status, output = _run(
            [*pip, "--no-deps", "-e", "."], project, env, INSTALL_TIMEOUT_S, "installing"
        )
    if status != 0 and _OFFLINE.search(output):
        _say(
            "Tests not run: pip could not reach the package index to install the "
            f"dependencies. When online:\n  {where} && {install} && {test}"
        )
        return "not run"
    if status != 0:
        _say(f"Installing the project FAILED:\n{_tail(output)}\nTo retry:\n  {where} && {install}")
        _say(f"{KEEP_HINT}\nInstalling the project FAILED")
        return "failed"
    _say("Running the fast part of the project's tests (make test runs them all)...")
    status, output = _run(
        # -x: the first failure is the one to read; -rfE: no SKIPPED lines in the report.
        [
            venv_python,
            "-m",
            "pytest",
            "-m",
            "generation",
            "-x",
            "-rfE",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        project,
        env,
        TEST_TIMEOUT_S,
        "tests",
    )
    summary = summary_line(output) or "no pytest summary line"
    if status != 0:
        _say(f"{first_failure(output)}\nTo rerun:\n  {where} && {test}\n{KEEP_HINT}")
        _say(f"Generated tests FAILED: {summary}")
        return "failed"
    _say(f"Generated tests: {summary}")
    return "passed"


def finish(project: Path, answers: Mapping[str, Any], environ: Mapping[str, str]) -> int:
    """Everything post_gen_project does, in order; its exit status.

    Non-zero only when the project's install or tests failed, so a CI job that bakes
    each variant goes red. Regenerations (cruft update and diff, a replay of the saved
    answers) carry run_generated_tests false and end right after pruning.
    """
    prune(project, answers)
    slug = answers["project_slug"]
    if not answers["run_generated_tests"]:
        _say(next_steps(project, slug, installed=False))
        return 0
    if environ.get(SKIP_ENV) == "1":
        later = later_command(project, answers["python_version"])
        _say(f"Tests not run: {SKIP_ENV}=1. To run them:\n  {later}")
        _say(next_steps(project, slug, installed=False))
        return 0
    outcome = run_generated_tests(project, answers["python_version"], environ)
    if outcome == "failed":
        return 1
    _say(next_steps(project, slug, installed=outcome == "passed"))
    return 0
