"""The hooks' helpers, tested directly: keccak, each validator, pruning, the test runner's parts."""

from __future__ import annotations

import ast
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from hooks import answers, finish
from hooks.jinja_filters import python_string
from hooks.keccak import keccak256, to_checksum_address
from tests.helpers import REPO, TEMPLATE, run, tool

# --- keccak ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "digest"),
    [
        (b"", "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
        (b"abc", "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"),
        # The event topic of Transfer(address,address,uint256), as every ERC-20 emits it.
        (
            b"Transfer(address,address,uint256)",
            "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef",
        ),
    ],
)
def test_keccak_known_vectors(data: bytes, digest: str) -> None:
    assert keccak256(data).hex() == digest


@pytest.mark.parametrize("length", [0, 1, 135, 136, 137, 271, 272, 1000])
def test_keccak_matches_pycryptodome_across_block_boundaries(length: int) -> None:
    keccak = pytest.importorskip("Crypto.Hash.keccak", reason="pycryptodome is a dev dependency")
    data = os.urandom(length)
    reference = keccak.new(digest_bits=256)
    reference.update(data)
    assert keccak256(data) == reference.digest()


@pytest.mark.parametrize(
    "address",
    [  # The test vectors of EIP-55 itself.
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        "0x52908400098527886E0F7030069857D2E4169EE7",
        "0xde709f2102306220921060314715629080e2fb77",
    ],
)
def test_checksum_address_vectors(address: str) -> None:
    assert to_checksum_address(address.lower()) == address
    assert answers.check_address(address) is None


# --- validators ------------------------------------------------------------------------------


@pytest.mark.parametrize("slug", ["openrouter-provider", "p", "llm2-gateway"])
def test_good_slugs(slug: str) -> None:
    assert answers.check_slug(slug) is None


@pytest.mark.parametrize("slug", ["", "My-Project", "-x", "x-", "a--b", "a_b", "a b", "1abc"])
def test_bad_slugs(slug: str) -> None:
    assert answers.check_slug(slug)


@pytest.mark.parametrize(
    "name", ["", "My_pkg", "1pkg", "pkg-name", "class", "json", "paké", "p" * 65]
)
def test_bad_package_names(name: str) -> None:
    assert answers.check_package_name(name)


def test_good_package_name() -> None:
    assert answers.check_package_name("openrouter_provider") is None


@pytest.mark.parametrize(
    ("value", "schemes", "ok"),
    [
        ("http://127.0.0.1:8545", ("http", "https"), True),
        ("https://sepolia.base.org", ("http", "https"), True),
        ("wss://host.example/path", ("ws", "wss"), True),
        ("ws://127.0.0.1:8545", ("http", "https"), False),
        ("http://", ("http", "https"), False),
        ("http://host:notaport", ("http", "https"), False),
        ("http://host:99999", ("http", "https"), False),
        ("http://a b", ("http", "https"), False),
        ("127.0.0.1:8545", ("http", "https"), False),
        ("", ("ws", "wss"), False),
    ],
)
def test_urls(value: str, schemes: tuple[str, ...], ok: bool) -> None:
    assert (answers.check_url(value, schemes) is None) is ok


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0x1234", "40 hex digits"),
        ("0165878a594ca255338adfa4d48449f69242eb8f00", "40 hex digits"),
        ("0x0165878a594ca255338adfa4d48449f69242eb8g", "40 hex digits"),
        # One letter's case flipped from the EIP-55 form.
        (
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        ),
    ],
)
def test_bad_addresses(value: str, expected: str) -> None:
    problem = answers.check_address(value)
    assert problem is not None and expected in problem


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("0", True),
        (str(2**64 - 1), True),
        (str(2**64), False),
        ("-1", False),
        ("1e3", False),
        ("", False),
        ("\u0661", False),  # an Arabic-Indic digit: isdigit() but not ASCII
    ],
)
def test_uint64(value: str, ok: bool) -> None:
    assert (answers.check_uint64(value) is None) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a@b.io", True),
        ("you@example.com", True),
        ("a@b", False),
        ("a b@c.io", False),
        ("@c.io", False),
    ],
)
def test_email(value: str, ok: bool) -> None:
    assert (answers.check_email(value) is None) is ok


def default_answers(**changes: Any) -> dict[str, Any]:
    """The answers cookiecutter would pass with every default (ollama, local network)."""
    base: dict[str, Any] = {
        key: (value[0] if isinstance(value, list) else value)
        for key, value in TEMPLATE.items()
        if not key.startswith("_")
    }
    base.update(
        project_slug="openrouter-provider",
        package_name="openrouter_provider",
        backend_urls="http://127.0.0.1:11434",
        default_model="llama3.2:3b",
        http_rpc_url="http://127.0.0.1:8545",
        ws_rpc_url="ws://127.0.0.1:8545",
        chain="local_testnet",
        tangle_contract="0x0165878a594ca255338adfa4d48449f69242eb8f",
        staking_contract="0xdc64a140aa3e981100a9beca4e685f962f0cf6c9",
        status_registry_contract="0x2bdcc0de6be1f7d2ee689a0342d76f52e8efaba3",
    )
    base.update(changes)
    return base


def test_defaults_are_valid() -> None:
    assert answers.validate(default_answers()) == []


def test_every_problem_is_reported_at_once() -> None:
    problems = answers.validate(default_answers(blueprint_id="x", author_email="nope"))
    assert [problem.split(":")[0] for problem in problems] == ["author_email", "blueprint_id"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"chain": "testnet"}, "chain"),
        ({"tangle_network": "base_sepolia", "chain": "local_testnet"}, "chain"),
        ({"tangle_network": "custom", "tangle_contract": ""}, "tangle_contract"),
        ({"backend_urls": " , "}, "backend_urls"),
        ({"backend_urls": "http://a:1,ftp://b"}, "backend_urls"),
        ({"include_docker": "maybe"}, "include_docker"),
        ({"llm_backend": "gpt"}, "llm_backend"),
        ({"project_name": "two\nlines"}, "project_name"),
    ],
)
def test_cross_field_and_choice_problems_name_the_field(
    changes: dict[str, Any], field: str
) -> None:
    problems = answers.validate(default_answers(**changes))
    assert any(problem.startswith(f"{field}: got ") for problem in problems), problems


# --- post-gen helpers ------------------------------------------------------------------------


def make_project(root: Path) -> Path:
    backends = root / "src" / "pkg" / "backends"
    tests = root / "tests" / "backends"
    backends.mkdir(parents=True)
    tests.mkdir(parents=True)
    for name in answers.BACKENDS:
        (backends / f"{name}.py").write_text("")
        (tests / f"test_{name}.py").write_text("")
    for name in ("Dockerfile", ".dockerignore", "LICENSE-MIT", "LICENSE-APACHE"):
        (root / name).write_text(name)
    (root / ".github" / "workflows").mkdir(parents=True)
    return root


@pytest.mark.parametrize("backend", ["vllm", "custom"])
def test_prune_keeps_the_chosen_backend_openai_compatible_and_custom(
    tmp_path: Path, backend: str
) -> None:
    project = make_project(tmp_path)
    finish.prune(
        project,
        default_answers(
            package_name="pkg",
            llm_backend=backend,
            include_docker=False,
            include_github_actions=False,
            license="Apache-2.0",
        ),
    )
    kept = sorted(path.stem for path in (project / "src/pkg/backends").iterdir())
    assert kept == sorted({backend, "openai_compatible", "custom"})
    assert sorted(path.stem for path in (project / "tests/backends").iterdir()) == [
        f"test_{name}" for name in kept
    ]
    assert not (project / "Dockerfile").exists()
    assert not (project / ".github").exists()
    assert (project / "LICENSE").read_text() == "LICENSE-APACHE"
    assert not (project / "LICENSE-MIT").exists()
    recorded = json.loads((project / ".cookiecutter.json").read_text())["cookiecutter"]
    assert recorded["llm_backend"] == backend
    # A replay of the saved answers regenerates without reinstalling and retesting.
    assert recorded["run_generated_tests"] is False


def test_regenerating_over_a_project_leaves_its_environments_and_git_alone(
    tmp_path: Path,
) -> None:
    """`--replay-file .cookiecutter.json -f` prunes inside the user's project: the template's
    stray caches go, but not the caches of .venv, another virtualenv, or .git."""
    project = make_project(tmp_path)
    stray = project / "src" / "pkg" / "__pycache__"
    kept = [
        project / ".venv" / "lib" / "site" / "__pycache__",
        project / "env311" / "lib" / "__pycache__",
        project / ".git" / "hooks" / ".ruff_cache",
    ]
    for path in [stray, *kept]:
        path.mkdir(parents=True)
        (path / "x.pyc").write_text("")
    (project / "env311" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    finish.prune(project, default_answers(package_name="pkg"))
    assert not stray.exists()
    assert [path for path in kept if not (path / "x.pyc").exists()] == []


def test_child_env_drops_what_would_change_the_nested_run() -> None:
    env = finish.child_env(
        {
            "PATH": "/bin",
            "PYTEST_ADDOPTS": "-m slow",
            "COV_CORE_SOURCE": "x",
            "VIRTUAL_ENV": "/v",
            "PYTHONPATH": "/p",
            "HOME": "/h",
        }
    )
    assert env == {"PATH": "/bin", "HOME": "/h"}


def test_find_python_prefers_the_running_interpreter() -> None:
    assert finish.find_python("3.11") == sys.executable


def test_find_python_ignores_shims_that_do_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shim = tmp_path / "python3.99"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.99: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert finish.find_python("3.99") is None
    # Said as it is: the command is there, it does not run.
    assert finish.no_python_reason("3.99") == (
        f"python3.99 on PATH ({shim}) does not run as Python 3.99 "
        "(a version manager's shim for a version it has not installed?)"
    )
    assert finish.no_python_reason("3.98") == "python3.98 is not on PATH"


# pytest -ra's report of one failure among many skips, as the generated suite prints it.
FAILED_RUN = (
    "sss.F\n"
    "=================================== FAILURES ===================================\n"
    "____________________________________ test_a ____________________________________\n"
    "\n"
    "    def test_a():\n"
    ">       assert x == 2, 'x was not two'\n"
    "E       AssertionError: x was not two\n"
    "\n"
    "tests/test_x.py:6: AssertionError\n"
    "____________________________________ test_b ____________________________________\n"
    "E       assert False\n"
    "=========================== short test summary info ============================\n"
    + "".join(f"SKIPPED [1] tests/test_x.py:{n}: no chain\n" for n in range(50))
    + "FAILED tests/test_x.py::test_a - AssertionError: x was not two\n"
    "FAILED tests/test_x.py::test_b - assert False\n"
    "2 failed, 1 passed, 50 skipped in 1.2s\n"
)


def test_first_failure_shows_its_reason_not_the_skips() -> None:
    shown = finish.first_failure(FAILED_RUN)
    assert "E       AssertionError: x was not two" in shown
    assert "FAILED tests/test_x.py::test_a - AssertionError: x was not two" in shown
    assert "SKIPPED" not in shown
    assert "E       assert False" not in shown  # only the first failure's report
    # A long traceback keeps its heading and its end, where the reason is.
    long = FAILED_RUN.replace(">       assert", "    pass\n" * 100 + ">       assert")
    shown = finish.first_failure(long, lines=10)
    assert shown.splitlines()[0].strip("_ ") == "test_a"
    assert "E       AssertionError: x was not two" in shown
    assert len(shown.splitlines()) == 10 + 2


def test_summary_line() -> None:
    output = "....\n===== 12 passed, 1 skipped in 3.21s =====\n"
    assert finish.summary_line(output) == "12 passed, 1 skipped in 3.21s"
    assert finish.summary_line("..\n1 failed, 327 passed in 94.97s (0:01:34)\n") == (
        "1 failed, 327 passed in 94.97s (0:01:34)"
    )
    assert finish.summary_line("ERROR: no tests") is None


def test_skip_env_prunes_but_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_project(tmp_path)
    finish.finish(project, default_answers(package_name="pkg"), {finish.SKIP_ENV: "1"})
    out = capsys.readouterr().out
    assert "Tests not run" in out
    assert "  make setup " in out[out.index("Next steps:") :]
    assert not (project / ".venv").exists()


def test_answering_no_to_the_test_run_still_says_what_to_do_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = default_answers(package_name="pkg", run_generated_tests=False)
    assert finish.finish(make_project(tmp_path), answers, {}) == 0
    out = capsys.readouterr().out
    steps = out[out.index("Next steps:") :].splitlines()
    assert steps[1:3] == [f"  cd {tmp_path}", "  make setup                # or: make setup-uv"]


def test_hooks_are_plain_python_before_rendering() -> None:
    for hook in ("pre_gen_project.py", "post_gen_project.py"):
        source = (REPO / "hooks" / hook).read_text()
        compile(source, hook, "exec")
        # Jinja appears only inside the string literals parsed by main(): the answers and
        # the template's directory.
        assert source.count("{{") == 2


# --- the pystr filter ------------------------------------------------------------------------

TEXTS = [
    "llama3.2:3b",
    "m'\"\\$(touch x)",
    'two "double" quotes',
    "it's",
    "tab\tnew\nline\r",
    "\\",
    "caf\u00e9 \u2113 \U0001f999",  # non-ASCII, one of them ambiguous (script l)
    "\x00\x1f\x7f",
]


@pytest.mark.parametrize("text", TEXTS)
def test_pystr_is_the_same_string(text: str) -> None:
    assert ast.literal_eval(python_string(text)) == text


def test_pystr_is_what_ruff_format_writes(tmp_path: Path) -> None:
    source = "".join(f"VALUE_{index} = {python_string(text)}\n" for index, text in enumerate(TEXTS))
    path = tmp_path / "answers.py"
    path.write_text(source, encoding="utf-8")
    formatted = run(
        [*tool("ruff"), "format", "--isolated", "--check", "--diff", str(path)], tmp_path
    )
    assert formatted.returncode == 0, formatted.stdout
    linted = run([*tool("ruff"), "check", "--isolated", "--select", "E,W,RUF", str(path)], tmp_path)
    assert linted.returncode == 0, linted.stdout


class FakeRun:
    """Stands in for finish._run: answers each step (venv, pip -r requirements-dev.txt,
    pip -e ., pytest) from a script."""

    def __init__(self, *answers: tuple[int, str]) -> None:
        self.answers = list(answers)
        self.commands: list[list[str]] = []
        self.envs: list[dict[str, str]] = []

    def __call__(
        self, command: list[str], cwd: Path, env: dict[str, str], timeout: float, label: str = ""
    ) -> tuple[int, str]:
        self.commands.append(list(command))
        self.envs.append(dict(env))
        return self.answers.pop(0)


def test_unreachable_index_is_said_plainly_and_does_not_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    offline = "WARNING: Retrying ... NewConnectionError: Failed to establish a new connection"
    monkeypatch.setattr(finish, "_run", FakeRun((0, ""), (1, offline)))
    assert finish.run_generated_tests(tmp_path, "3.11", {}) == "not run"
    out = capsys.readouterr().out
    assert "could not reach the package index" in out
    assert "pip install -r requirements-dev.txt" in out


def test_failing_tests_say_what_failed_and_how_to_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeRun((0, ""), (0, ""), (0, ""), (1, FAILED_RUN))
    monkeypatch.setattr(finish, "_run", fake)
    assert finish.run_generated_tests(tmp_path, "3.11", {"PYTEST_ADDOPTS": "-x"}) == "failed"
    out = capsys.readouterr().out
    assert "E       AssertionError: x was not two" in out
    assert "SKIPPED" not in out
    assert out.splitlines()[-1] == "Generated tests FAILED: 2 failed, 1 passed, 50 skipped in 1.2s"
    assert f"cd {tmp_path} && .venv/bin/python -m pytest -m generation" in out
    # The locked versions, then the project without dependencies of its own choosing.
    assert fake.commands[1][-2:] == ["-r", "requirements-dev.txt"]
    assert fake.commands[2][-3:] == ["--no-deps", "-e", "."]
    # The fast part only, stopping at the first failure; the full suite is make test.
    assert fake.commands[3][2:] == [
        *("pytest", "-m", "generation", "-x", "-rfE", "-q", "-p", "no:cacheprovider")
    ]
    assert "PYTEST_ADDOPTS" not in fake.envs[3]


def test_passing_tests_print_one_summary_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        finish, "_run", FakeRun((0, ""), (0, ""), (0, ""), (0, "== 9 passed in 1.2s ==\n"))
    )
    assert finish.run_generated_tests(tmp_path, "3.11", {}) == "passed"
    assert capsys.readouterr().out.splitlines()[-1] == "Generated tests: 9 passed in 1.2s"


def test_missing_interpreter_says_how_to_run_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(finish, "find_python", lambda version: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert finish.run_generated_tests(tmp_path, "3.13", {}) == "not run"
    out = capsys.readouterr().out
    assert "python3.13 is not on PATH" in out
    assert "python3.13 -m venv .venv" in out


def test_a_missing_package_is_an_install_failure_not_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = "ERROR: No matching distribution found for no-such-package>=1"
    monkeypatch.setattr(finish, "_run", FakeRun((0, ""), (1, missing)))
    assert finish.run_generated_tests(tmp_path, "3.11", {}) == "failed"
    out = capsys.readouterr().out
    assert "Installing the project FAILED" in out
    assert "no-such-package" in out


def test_a_failed_run_fails_generation_and_a_passed_one_ends_with_next_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = default_answers(package_name="pkg")
    monkeypatch.setattr(
        finish, "_run", FakeRun((0, ""), (0, ""), (0, ""), (1, "1 failed in 0.1s\n"))
    )
    assert finish.finish(make_project(tmp_path / "a"), answers, {}) == 1
    assert "--keep-project-on-failure" in capsys.readouterr().out
    monkeypatch.setattr(finish, "_run", FakeRun((0, ""), (1, "No matching distribution")))
    assert finish.finish(make_project(tmp_path / "b"), answers, {}) == 1
    monkeypatch.setattr(
        finish, "_run", FakeRun((0, ""), (0, ""), (0, ""), (0, "9 passed in 0.1s\n"))
    )
    assert finish.finish(make_project(tmp_path / "c"), answers, {}) == 0
    out = capsys.readouterr().out
    steps = out[out.index("Next steps:") :]
    assert ". .venv/bin/activate" in steps
    assert "openrouter-provider serve --config config.toml" in steps


def test_printed_commands_survive_spaces_quotes_and_dollars_in_the_project_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each `cd ...` line is pasted into a shell as printed: the path must be one word."""
    answers = default_answers(package_name="pkg")
    odd = tmp_path / "my projects" / "it's $HOME é"

    def cd_targets(out: str) -> list[str]:
        lines = [line.strip() for line in out.splitlines() if line.strip().startswith("cd ")]
        assert lines, out
        return [shlex.split(line)[1] for line in lines]

    monkeypatch.setattr(
        finish, "_run", FakeRun((0, ""), (0, ""), (0, ""), (1, "1 failed in 0.1s\n"))
    )
    assert finish.finish(make_project(odd / "a"), answers, {}) == 1
    assert cd_targets(capsys.readouterr().out) == [str(odd / "a")]
    monkeypatch.setattr(
        finish, "_run", FakeRun((0, ""), (0, ""), (0, ""), (0, "9 passed in 0.1s\n"))
    )
    assert finish.finish(make_project(odd / "b"), answers, {}) == 0
    assert cd_targets(capsys.readouterr().out) == [str(odd / "b")]
    assert finish.finish(make_project(odd / "c"), answers, {finish.SKIP_ENV: "1"}) == 0
    assert set(cd_targets(capsys.readouterr().out)) == {str(odd / "c")}


def test_a_quiet_step_shows_a_line_every_few_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(finish, "HEARTBEAT_S", 0.2)
    script = (
        "import time\n"
        "for step in ('Collecting httpx', 'Collecting web3'):\n"
        "    print(step, flush=True); time.sleep(0.7)\n"
        "print('..s.  [100%]', flush=True)\n"
        "print('2 passed in 1.4s')\n"
    )
    status, output = finish._run([sys.executable, "-c", script], tmp_path, {}, 60, "installing")
    assert status == 0
    assert output.splitlines()[-1] == "2 passed in 1.4s"
    shown = capsys.readouterr().out.splitlines()
    assert any(line.startswith("  installing ") and "Collecting" in line for line in shown)
    assert "  ..s.  [100%]" in shown


def test_a_step_past_its_timeout_is_stopped(tmp_path: Path) -> None:
    status, output = finish._run(
        [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, {}, 1, "tests"
    )
    assert status == -1
    assert "timed out after 1 s" in output
