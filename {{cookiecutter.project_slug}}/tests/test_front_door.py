"""What a user meets first: a node type without a client, a bench without its tool.

Each mistake is one line on stderr naming what is wrong, and a non-zero exit; never a
traceback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import {{ cookiecutter.package_name }}_bench as bench
from {{ cookiecutter.package_name }}.backends import available_types
from {{ cookiecutter.package_name }}.cli import PROG
from {{ cookiecutter.package_name }}.config import NodeType
from {{ cookiecutter.package_name }}.llm.errors import UpstreamUnavailableError

GENERATED_FOR = "{{ cookiecutter.llm_backend }}"
MISSING_TYPES = [name for name in NodeType.__args__ if name not in available_types()]


def command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0]


def test_every_project_ships_the_custom_skeleton_and_openai_compatible() -> None:
    assert set(available_types()) >= {"custom", "openai_compatible", GENERATED_FOR}


@pytest.mark.skipif(not MISSING_TYPES, reason="this variant has a client for every type")
@pytest.mark.parametrize("verb", ["serve", "nodes", "run"])
def test_a_node_whose_type_has_no_client_is_one_config_line(tmp_path: Path, verb: str) -> None:
    missing = MISSING_TYPES[0]
    config = tmp_path / "config.toml"
    config.write_text(
        f'[api]\napi_keys = ["k"]\n\n[[nodes]]\nname = "gpu-7"\nurl = "http://127.0.0.1:9"\n'
        f'type = "{missing}"\n',
        encoding="utf-8",
    )
    done = command(verb, "--config", str(config), cwd=tmp_path)
    assert_one_line(done, PROG, "'gpu-7'", repr(missing), "generated without", "available types: ")


def test_overhead_with_a_missing_litellm_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "litellm"
    done = command("bench", "overhead", "--litellm", str(missing), cwd=tmp_path)
    assert_one_line(done, "bench overhead", "--litellm", "not an executable file")


def test_overhead_with_a_litellm_that_cannot_run_is_one_line(tmp_path: Path) -> None:
    plain = tmp_path / "litellm"
    plain.write_text("not a program\n", encoding="utf-8")
    done = command("bench", "overhead", "--litellm", str(plain), cwd=tmp_path)
    assert_one_line(done, "bench overhead", "not an executable file")


def test_overhead_with_a_litellm_that_exits_at_once_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "litellm"
    broken.write_text("#!/bin/sh\necho 'no proxy extra' >&2\nexit 3\n", encoding="utf-8")
    broken.chmod(0o755)
    done = command("bench", "overhead", "--duration", "0.2", "--litellm", str(broken), cwd=tmp_path)
    assert_one_line(done, "bench overhead: stopped", "LiteLLM", "did not start")


@pytest.mark.parametrize(
    "args",
    [
        ("overhead", "--duration", "0"),
        ("overhead", "--duration", "-1"),
        ("overhead", "--stream-sends", "0"),
        ("transport", "--seconds", "0"),
        ("transport", "--warmup", "-1"),
        ("transport", "--concurrency", "0"),
        ("transport", "--chunks", "0"),
        ("balancer", "--loads", "0.5,0"),
        ("balancer", "--loads", "-0.5"),
        ("queue", "--duration", "0"),
        ("queue", "--waiters", "-1"),
    ],
    ids=" ".join,
)
def test_a_benchmark_refuses_an_out_of_range_number_before_it_starts(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Zero or negative sizes and times would end in a ZeroDivisionError or IndexError
    traceback, or a table of nothing, after the benchmark had started its processes."""
    done = command("bench", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"bench {args[0]}: error: {args[1]}" in done.stderr.strip().splitlines()[-1]


def test_overhead_compare_without_the_package_in_src_is_refused(tmp_path: Path) -> None:
    """Without the package there, the row would silently measure this install instead."""
    empty = tmp_path / "src"
    empty.mkdir()
    for spec in (str(tmp_path / "missing"), f"old={empty}"):
        done = command("bench", "overhead", "--compare", spec, cwd=tmp_path)
        assert done.returncode == 2, done.stdout + done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert "bench overhead: error: --compare" in last
        assert "{{ cookiecutter.package_name }}" in last


@pytest.mark.parametrize("name", ["transport", "balancer", "overhead"])
def test_a_benchmark_stopped_from_outside_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """A node too busy to answer (UpstreamUnavailableError), a tool gone, a timeout."""

    def stopped(argv: list[str]) -> int:
        raise UpstreamUnavailableError("node 'sim' did not accept a connection in time")

    monkeypatch.setattr(bench, "_load", lambda chosen: stopped)
    assert bench.main([name]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bench {name}: stopped: node 'sim' did not accept a connection in time"]


def test_tangle_bench_without_a_chain_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[tangle]\nhttp_rpc_url = "http://127.0.0.1:9"\n', encoding="utf-8")
    done = command("tangle", "bench", "--config", str(config), "--jobs", "1", cwd=tmp_path)
    assert_one_line(done, "tangle bench")
