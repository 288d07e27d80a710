"""The generated project's tooling, read as its users and CI will use it.

No Docker engine runs here, so the Dockerfile is checked statically: its instructions in
order, the dependency layer before the source, the health check on the route that exists.
The Makefile's tasks run for real against this environment's tools.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import Variants
from tests.helpers import (
    BACKENDS,
    DEFAULT_STRATEGY,
    NO_RUN,
    PACKAGE,
    SLUG,
    project_env,
    run,
    tail,
)


def default_project(variants: Variants) -> Path:
    return variants.get(BACKENDS[0], DEFAULT_STRATEGY)


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1] if " " in line else "")
        for line in (raw.strip() for raw in joined.splitlines())
        if line and not line.startswith("#")
    ]


def test_dockerfile_installs_dependencies_before_copying_the_source(variants: Variants) -> None:
    steps = instructions((default_project(variants) / "Dockerfile").read_text(encoding="utf-8"))
    copies = [(index, args) for index, (op, args) in enumerate(steps) if op == "COPY"]
    source = next(index for index, args in copies if args.startswith("src"))
    # One package directory, the product's: the simulator and the benchmarks stay out.
    copied = steps[source][1].split()[0].removeprefix("src/").rstrip("/")
    assert copied.isidentifier() and not copied.endswith(("_sim", "_bench")), steps[source]
    manifest = next(index for index, args in copies if args.startswith("requirements.txt "))
    installs = [
        index for index, (op, args) in enumerate(steps) if op == "RUN" and "pip install" in args
    ]
    # The layer with every dependency comes from the lock's export alone, hash-checked: not
    # pyproject.toml or the README, which are edited far more often than the lock ...
    assert manifest < installs[0] < source
    assert steps[manifest][1].split()[:-1] == ["requirements.txt"]
    assert "--require-hashes -r requirements.txt" in steps[installs[0]][1]
    readme = next(index for index, args in copies if "README.md" in args.split()[:-1])
    assert installs[0] < readme < installs[-1]
    # ... and the source layer installs only the project itself.
    after = [index for index in installs if index > source]
    assert after and all("--no-deps" in steps[index][1] for index in after)


def test_dockerfile_health_check_and_run_example(variants: Variants) -> None:
    project = default_project(variants)
    steps = dict(instructions((project / "Dockerfile").read_text(encoding="utf-8")))
    assert "/health" in steps["HEALTHCHECK"]
    assert steps["USER"] == "app"
    assert steps["ENTRYPOINT"] == f'["{SLUG}"]'
    # The route the check calls exists, unauthenticated.
    app = (project / "src" / PACKAGE / "api" / "app.py").read_text(encoding="utf-8")
    assert '"/health"' in app
    # The README's run example passes the key `serve` refuses to start without.
    readme = (project / "README.md").read_text(encoding="utf-8")
    run_example = readme[
        readme.index("docker run") : readme.index("```", readme.index("docker run"))
    ]
    assert "-e OPENROUTER_API_KEY" in run_example
    assert "-p 8090:8090" in run_example
    assert "/app/config.toml" in run_example


def test_dev_tools_are_pinned_alike_for_ci_pre_commit_and_local_runs(variants: Variants) -> None:
    project = default_project(variants)
    dev = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]["dev"]
    pins = dict(item.split("==") for item in dev if "==" in item)
    assert {"ruff", "mypy"} <= set(pins)
    hooks = yaml.safe_load((project / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    ruff_repo = next(repo for repo in hooks["repos"] if "ruff-pre-commit" in repo["repo"])
    assert ruff_repo["rev"] == f"v{pins['ruff']}"
    mypy = next(hook for repo in hooks["repos"] for hook in repo["hooks"] if hook["id"] == "mypy")
    assert mypy["entry"].startswith(".venv/bin/python -m mypy")


def test_makefile_tasks_run(cookies: Any) -> None:
    """`make lint` for real with this environment's tools; every task resolves."""
    result = cookies.bake(extra_context=NO_RUN)
    assert result.exception is None, str(result.exception)
    project = Path(result.project_path)
    venv = f"VENV={Path(sys.executable).parent.parent}"
    listed = run(["make", "help"], project)
    assert listed.returncode == 0, listed.stderr
    for task in ("setup", "setup-uv", "lock", "test", "lint", "format", "serve", "demo"):
        assert re.search(rf"^{task}\t", listed.stdout, re.MULTILINE), listed.stdout
    dry = run(["make", "-n", venv, "setup", "test", "serve", "demo"], project)
    assert dry.returncode == 0, dry.stderr
    lint = run(["make", venv, "lint"], project, project_env(project), timeout=900)
    assert lint.returncode == 0, tail(lint.stdout + lint.stderr)


def test_readme_commands_name_real_subcommands(variants: Variants) -> None:
    """Every `<slug> <command>` in the README's code blocks is a command the CLI has."""
    project = default_project(variants)
    readme = (project / "README.md").read_text(encoding="utf-8")
    blocks: list[str] = []
    inside = shell = False
    for line in readme.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
            shell = inside and line.strip() in ("```", "```bash", "```sh")
        elif shell:
            blocks.append(line)
    commands = "\n".join(blocks)
    used = set(re.findall(rf"(?:^|\s){re.escape(SLUG)} ([a-z][a-z-]*)", commands))
    assert {"serve", "run", "demo"} <= used
    done = run([sys.executable, "-m", PACKAGE, "--help"], project, project_env(project))
    assert done.returncode == 0, done.stderr
    for command in used:
        assert re.search(rf"\b{command}\b", done.stdout), f"README uses `{SLUG} {command}`"
    # The manual links its benchmark tables, which live in docs/.
    assert "(docs/benchmarks.md)" in readme
    assert "## Transport" in (project / "docs" / "benchmarks.md").read_text(encoding="utf-8")


def test_readme_custom_server_example_is_a_working_config(
    variants: Variants, tmp_path: Path
) -> None:
    """The "Adding a server type" config, as printed, starts and reaches the skeleton."""
    project = default_project(variants)
    readme = (project / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Adding a server type") :]
    example = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert example is not None
    config = tmp_path / "config.toml"
    config.write_text(re.sub(r"(?m)^   ", "", example.group(1)), encoding="utf-8")
    done = run(
        [sys.executable, "-m", PACKAGE, "nodes", "--config", str(config)],
        tmp_path,
        project_env(project),
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr  # no node reachable yet
    assert "| my-server-1 | custom |" in done.stdout
    assert "health check failed: NotImplementedError" in done.stdout
