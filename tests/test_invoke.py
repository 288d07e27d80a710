"""The template's front door: every way people and CI invoke it.

A relative path and `.` (the README's "from a clone" commands), a `git://` URL through
cookiecutter and through cruft (served on loopback by `git daemon` from a bare clone),
`cruft update` after a new upstream commit without the project's suite running again,
and a template whose generated suite fails: generation exits non-zero and shows why.
Each runs the real command line in a subprocess, with its own HOME, so nothing of the
caller's cookiecutter or git configuration takes part.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hooks.finish import SKIP_ENV, child_env
from tests.helpers import PACKAGE, REPO, SLUG, run

TEMPLATE_PARTS = ("cookiecutter.json", "hooks", "{{cookiecutter.project_slug}}")
CACHES = shutil.ignore_patterns(
    "__pycache__", ".ruff_cache", ".mypy_cache", ".pytest_cache", ".venv"
)
CRUFT = str(Path(sys.executable).with_name("cruft"))


def copy_template(destination: Path) -> Path:
    """The template as a clean clone has it, whatever is half-edited beside it."""
    destination.mkdir(parents=True)
    for part in TEMPLATE_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, destination / part, ignore=CACHES)
        else:
            shutil.copy2(source, destination / part)
    return destination


def environment(home: Path, **extra: str) -> dict[str, str]:
    """Ours minus outer-pytest leftovers, with a HOME of its own and a git identity."""
    home.mkdir(parents=True, exist_ok=True)
    env = child_env(os.environ)
    env.pop(SKIP_ENV, None)
    env.update(
        HOME=str(home),
        GIT_AUTHOR_NAME="Template Test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="Template Test",
        GIT_COMMITTER_EMAIL="test@example.com",
        GIT_CONFIG_NOSYSTEM="1",
    )
    env.update(extra)
    return env


def cookiecutter(
    args: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "cookiecutter", *args], cwd, env, timeout=900)


def git(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = run(["git", *args], cwd, env, timeout=120)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def commit_all(repo: Path, message: str, env: dict[str, str]) -> None:
    git(["add", "-A"], repo, env)
    git(["commit", "-q", "-m", message], repo, env)


def assert_pruned_and_recorded(project: Path) -> None:
    """What only the hooks do: other servers' clients gone, answers saved as a replay file."""
    backends = project / "src" / PACKAGE / "backends"
    assert (backends / "ollama.py").is_file()
    assert (backends / "custom.py").is_file()
    assert not (backends / "vllm.py").exists()
    saved = json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))
    assert saved["cookiecutter"]["run_generated_tests"] is False


def free_port() -> int:
    # git daemon refuses --port=0, so a port is picked here; another process could take it
    # before the daemon binds, which the readiness check below would then report.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def git_daemon(base: Path) -> Iterator[str]:
    """`git daemon` serving every repository under `base` on loopback; yields its URL."""
    port = free_port()
    daemon = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--informative-errors",
            f"--base-path={base}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if daemon.poll() is not None:
                raise AssertionError(
                    f"git daemon exited: {daemon.stderr.read() if daemon.stderr else ''}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"git daemon not listening on {port} after 20 s") from None
                time.sleep(0.1)
        yield f"git://127.0.0.1:{port}"
    finally:
        daemon.terminate()
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """A bare clone of the template behind git://; yields its URL, a work clone and the env."""
    env = environment(tmp_path / "home")
    source = copy_template(tmp_path / "source")
    git(["init", "-q", "-b", "main"], source, env)
    commit_all(source, "template", env)
    base = tmp_path / "served"
    base.mkdir()
    git(["clone", "-q", "--bare", str(source), str(base / "template.git")], tmp_path, env)
    with git_daemon(base) as url:
        yield f"{url}/template.git", source, env


def test_a_relative_path_bakes(tmp_path: Path) -> None:
    copy_template(tmp_path / "template")
    work = tmp_path / "work"
    work.mkdir()
    env = environment(tmp_path / "home", **{SKIP_ENV: "1"})
    done = cookiecutter(["--no-input", "../template", "-o", "out"], work, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_pruned_and_recorded(work / "out" / SLUG)


def test_dot_inside_a_clone_bakes(tmp_path: Path) -> None:
    template = copy_template(tmp_path / "template")
    env = environment(tmp_path / "home", **{SKIP_ENV: "1"})
    out = tmp_path / "out"
    done = cookiecutter(["--no-input", ".", "-o", str(out), "llm_backend=vllm"], template, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / SLUG / "src" / PACKAGE / "backends" / "vllm.py").is_file()


def test_saved_answers_replay_against_a_template_that_moved_on(tmp_path: Path) -> None:
    """The template's own settings are not answers: a replay file that pinned an older
    `_copy_without_render` would render a newer verbatim file as Jinja and fail."""
    template = copy_template(tmp_path / "template")
    env = environment(tmp_path / "home", **{SKIP_ENV: "1"})
    done = cookiecutter(["--no-input", str(template), "-o", "first"], tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    saved = tmp_path / "first" / SLUG / ".cookiecutter.json"

    # Upstream moves on: a new module copied verbatim, with text that is not Jinja.
    settings = json.loads((template / "cookiecutter.json").read_text(encoding="utf-8"))
    settings["_copy_without_render"].append("src/*/newpart/*")
    (template / "cookiecutter.json").write_text(json.dumps(settings, indent=2), "utf-8")
    newpart = template / "{{cookiecutter.project_slug}}" / "src" / "{{cookiecutter.package_name}}"
    (newpart / "newpart").mkdir()
    verbatim = 'ROW = "[{{ id = 1 }}]"\n'
    (newpart / "newpart" / "table.py").write_text(verbatim, encoding="utf-8")

    replayed = cookiecutter(
        ["--replay-file", str(saved), str(template), "-o", "second"], tmp_path, env
    )
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    table = tmp_path / "second" / SLUG / "src" / PACKAGE / "newpart" / "table.py"
    assert table.read_text(encoding="utf-8") == verbatim


def test_a_git_url_bakes_through_cookiecutter(
    tmp_path: Path, served: tuple[str, Path, dict[str, str]]
) -> None:
    url, _, env = served
    env = {**env, SKIP_ENV: "1"}
    done = cookiecutter(["--no-input", url, "-o", str(tmp_path / "out")], tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_pruned_and_recorded(tmp_path / "out" / SLUG)


def test_cruft_creates_then_updates_without_running_the_suite_again(
    tmp_path: Path, served: tuple[str, Path, dict[str, str]]
) -> None:
    url, source, env = served
    out = tmp_path / "projects"
    # Creation with the default answers; only the long install and test run is switched off.
    created = run(
        [CRUFT, "create", url, "--no-input", "--output-dir", str(out)],
        tmp_path,
        {**env, SKIP_ENV: "1"},
        timeout=600,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    project = out / SLUG
    assert_pruned_and_recorded(project)
    state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert state["template"] == url
    # The answer was yes at creation; what cruft saved for regenerations is no.
    assert state["context"]["cookiecutter"]["run_generated_tests"] is False
    git(["init", "-q", "-b", "main"], project, env)
    commit_all(project, "generated", env)

    checked = run([CRUFT, "check"], project, env, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # Upstream moves on: a new line in the generated README.
    readme = source / "{{cookiecutter.project_slug}}" / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "\nUpdated upstream.\n", "utf-8")
    commit_all(source, "template: a README line", env)
    git(["push", "-q", str(tmp_path / "served" / "template.git"), "main"], source, env)

    stale = run([CRUFT, "check"], project, env, timeout=300)
    assert stale.returncode != 0, stale.stdout + stale.stderr
    # No SKIP variable here: only the saved answers keep the suite from running again.
    updated = run([CRUFT, "update", "--skip-apply-ask"], project, env, timeout=600)
    output = updated.stdout + updated.stderr
    assert updated.returncode == 0, output
    assert "Creating .venv" not in output
    assert "Tests not run" not in output
    assert not (project / ".venv").exists()
    assert "Updated upstream." in (project / "README.md").read_text(encoding="utf-8")
    assert run([CRUFT, "check"], project, env, timeout=300).returncode == 0
    diff = run([CRUFT, "diff", "--exit-code"], project, env, timeout=300)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert "Creating .venv" not in diff.stdout + diff.stderr


def test_cruft_update_renders_with_the_new_commits_jinja_extension(
    tmp_path: Path, served: tuple[str, Path, dict[str, str]]
) -> None:
    """cruft renders the old and the new commit in one process: a filter the new commit adds
    must be there for the new rendering, though the old one imported the extension first."""
    url, source, env = served
    env = {**env, SKIP_ENV: "1"}
    out = tmp_path / "projects"
    created = run([CRUFT, "create", url, "--no-input", "--output-dir", str(out)], tmp_path, env)
    assert created.returncode == 0, created.stdout + created.stderr
    project = out / SLUG
    git(["init", "-q", "-b", "main"], project, env)
    commit_all(project, "generated", env)

    filters = source / "hooks" / "jinja_filters.py"
    registered = '        filters["pystr"] = python_string\n'
    text = filters.read_text(encoding="utf-8")
    assert registered in text
    filters.write_text(
        text.replace(registered, registered + '        filters["shout"] = str.upper\n'), "utf-8"
    )
    readme = source / "{{cookiecutter.project_slug}}" / "README.md"
    readme.write_text(
        readme.read_text(encoding="utf-8") + "\n{{ 'a new filter' | shout }}\n", "utf-8"
    )
    commit_all(source, "template: a new Jinja filter, used", env)
    git(["push", "-q", str(tmp_path / "served" / "template.git"), "main"], source, env)

    updated = run([CRUFT, "update", "--skip-apply-ask"], project, env, timeout=600)
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert "A NEW FILTER" in (project / "README.md").read_text(encoding="utf-8")


def test_the_readmes_cruft_link_keeps_the_projects_answers_and_regenerates_cheaply(
    tmp_path: Path, served: tuple[str, Path, dict[str, str]]
) -> None:
    """`cruft link` runs no hook: with the defaults it would record ollama for a vllm project
    and run_generated_tests true, so every later diff and update would install and test."""
    url, _, env = served
    out = tmp_path / "out"
    done = cookiecutter(
        ["--no-input", url, "-o", str(out), "llm_backend=vllm"], tmp_path, {**env, SKIP_ENV: "1"}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    project = out / SLUG
    git(["init", "-q", "-b", "main"], project, env)
    commit_all(project, "generated", env)

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    line = next(line for line in readme.splitlines() if line.startswith("cruft link "))
    command = line.split("  #")[0].replace("gh:<org>/openrouter-blueprint", url)
    # As a user runs it: with the environment that has cruft on PATH (CI does not activate it).
    path = f"{Path(CRUFT).parent}{os.pathsep}{env.get('PATH', '')}"
    linked = run(["bash", "-c", command], project, {**env, "PATH": path}, timeout=300)
    assert linked.returncode == 0, linked.stdout + linked.stderr
    saved = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert saved["context"]["cookiecutter"]["llm_backend"] == "vllm"
    assert saved["context"]["cookiecutter"]["run_generated_tests"] is False
    commit_all(project, "linked", env)
    # No SKIP variable: only the saved answers keep the suite from running in the diff.
    diff = run([CRUFT, "diff", "--exit-code"], project, env, timeout=300)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert "Creating .venv" not in diff.stdout + diff.stderr


@pytest.mark.postgen
@pytest.mark.xdist_group("suites")
def test_a_failing_generated_test_fails_generation_and_shows_why(tmp_path: Path) -> None:
    """Needs the package index: the hook installs the (trimmed) project into its .venv."""
    template = copy_template(tmp_path / "template")
    project_template = template / "{{cookiecutter.project_slug}}"
    # Only what this test is about: a tiny suite with one planted failure, and pytest as
    # the only dependency, so the install takes seconds rather than minutes.
    shutil.rmtree(project_template / "tests")
    (project_template / "tests").mkdir()
    (project_template / "tests" / "test_planted.py").write_text(
        "import pytest\n\npytestmark = pytest.mark.generation  # the part generation runs\n\n\n"
        "def test_fine():\n    assert True\n\n\n"
        "def test_planted():\n    assert 1 + 1 == 3, 'planted failure'\n",
        encoding="utf-8",
    )
    pyproject = project_template / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    text = re.sub(r"(?ms)^dependencies = \[.*?^\]", "dependencies = []", text)
    text = re.sub(r"(?ms)^dev = \[.*?^\]", 'dev = ["pytest>=8"]', text)
    pyproject.write_text(text, encoding="utf-8")
    (project_template / "requirements-dev.txt").write_text("pytest>=8\n", encoding="utf-8")

    # The caller's HOME, unlike the other tests: pip may find its index through it.
    env = environment(Path.home())
    out = tmp_path / "out"
    done = cookiecutter(
        ["--no-input", "--keep-project-on-failure", str(template), "-o", str(out)], tmp_path, env
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "planted failure" in done.stdout
    assert "Generated tests FAILED: 1 failed, 1 passed" in done.stdout
    assert f"cd {out / SLUG} && .venv/bin/python -m pytest" in done.stdout
    # Kept, as asked, with its .venv: the rerun command above works.
    assert (out / SLUG / ".venv" / "bin" / "python").exists()
