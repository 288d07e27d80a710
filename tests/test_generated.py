"""Each backend's baked project passes its own test suite, Tangle chain tests included.

The suites share one interpreter holding the union of the projects' dependencies
(every variant has the same pyproject.toml) and import the bake through
PYTHONPATH=src. Each run gets its own fresh anvil with tnt-core's local testnet.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hooks.finish import summary_line
from tests.chain import missing_reason, tangle_chain
from tests.conftest import Variants
from tests.helpers import BACKENDS, DEFAULT_STRATEGY, project_env, run, tail

# One xdist worker runs all suites in turn (`--dist loadgroup`): two at once would fight
# over the two cores while the other worker bakes and type-checks.
pytestmark = [pytest.mark.generated, pytest.mark.xdist_group("suites")]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def requirements(project: Path) -> list[str]:
    """The project's dependencies plus its dev extra, as pip requirement strings."""
    data = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [*data["dependencies"], *data["optional-dependencies"]["dev"]]


def _installed(requirement: str) -> bool:
    match = _NAME.match(requirement)
    assert match, requirement
    try:
        importlib.metadata.version(match.group(0))
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="session")
def suite_python(variants: Variants, tmp_path_factory: pytest.TempPathFactory) -> str:
    """This interpreter when it already has every dependency (as .ci/run sets it up),
    else a virtualenv made once for the session with them installed."""
    wanted = requirements(variants.get(BACKENDS[0], DEFAULT_STRATEGY))
    if all(_installed(requirement) for requirement in wanted):
        return sys.executable
    venv = tmp_path_factory.mktemp("suite-venv")
    made = run([sys.executable, "-m", "venv", str(venv)], venv)
    assert made.returncode == 0, made.stderr
    python = str(venv / "bin" / "python")
    installed = run([python, "-m", "pip", "install", "-q", *wanted], venv)
    assert installed.returncode == 0, (
        f"installing the project's dependencies failed:\n{tail(installed.stderr)}"
    )
    return python


# Test files whose code and bake are the same whatever the backend answer (they drive the
# simulator's OpenAI dialect, the chain, Redis and subprocesses, not the answer's client): the
# first backend runs them, the others run only the rest. Each costs minutes on two cores, and
# six identical copies would take CI past its time.
ANSWER_INDEPENDENT = [
    "tests/api/test_attacks.py",
    "tests/api/test_schemas.py",
    "tests/balancer/test_faults.py",
    "tests/benchmarks",
    "tests/cluster",
    "tests/tangle/test_faults.py",
    "tests/tangle/test_leader.py",
    "tests/tangle/test_pricing.py",
    "tests/tangle/test_monitoring.py",
    "tests/tangle/test_startup.py",
]


def suite_arguments(backend: str) -> list[str]:
    """pytest's arguments for one backend's suite: the whole of it for the first backend."""
    if backend == BACKENDS[0]:
        return []
    return [f"--ignore={path}" for path in ANSWER_INDEPENDENT]


@pytest.mark.parametrize("backend", BACKENDS)
def test_generated_suite_passes(variants: Variants, suite_python: str, backend: str) -> None:
    reason = missing_reason()
    if reason:
        pytest.skip(f"the generated suites need a Tangle chain: {reason}")
    project = variants.get(backend, DEFAULT_STRATEGY)
    for path in ANSWER_INDEPENDENT:
        assert (project / path).exists(), f"{path} is gone: update ANSWER_INDEPENDENT"
    with tangle_chain() as rpc_url:
        done = run(
            [
                *(suite_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header"),
                *suite_arguments(backend),
            ],
            project,
            env=project_env(project, TANGLE_E2E_RPC_URL=rpc_url),
        )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{backend}'s generated suite failed:\n{tail(output, 80)}"
    summary = summary_line(output) or ""
    assert " passed" in summary, output[-2000:]
    # Here every dependency and a chain are present: a skip means a test did not run.
    skips = [line for line in output.splitlines() if line.startswith("SKIPPED")]
    assert "skipped" not in summary, "\n".join(skips)


# Two busy loops per core, as a laptop compiling or a shared CI runner would add.
BUSY_LOOPS_PER_CORE = 2


@contextmanager
def cpu_load(per_core: int) -> Iterator[int]:
    """Busy-loop processes, per_core for each core, stopped on exit; yields their count."""
    count = per_core * (os.cpu_count() or 1)
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield count
    finally:
        for loop in loops:
            loop.kill()
        for loop in loops:
            loop.wait()


def test_generation_tests_pass_on_a_busy_machine(variants: Variants, suite_python: str) -> None:
    """The part of the suite generation runs holds no bound on wall-clock time or loop lag:
    it passes with every core kept busy (the suite under load, at the price of its fast part)."""
    reason = missing_reason()
    if reason:
        pytest.skip(f"the generation tests include a chain round trip: {reason}")
    project = variants.get(BACKENDS[0], DEFAULT_STRATEGY)
    with tangle_chain() as rpc_url, cpu_load(BUSY_LOOPS_PER_CORE) as loops:
        done = run(
            [suite_python, "-m", "pytest", "-m", "generation", "-q", "-p", "no:cacheprovider"],
            project,
            env=project_env(project, TANGLE_E2E_RPC_URL=rpc_url),
        )
        load = os.getloadavg()[0]
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"under {loops} busy loops (load {load:.1f}):\n{tail(output, 80)}"
    summary = summary_line(output) or ""
    assert re.fullmatch(r"\d+ passed, \d+ deselected(, \d+ warnings?)? in .*", summary), summary
    print(f"\ngeneration tests with {loops} busy loops, load average {load:.1f}: {summary}")
