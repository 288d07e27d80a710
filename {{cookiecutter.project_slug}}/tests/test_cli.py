"""cli.py: the subcommands exist, config errors are one clear line, secrets stay masked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }} import __version__
from {{ cookiecutter.package_name }}.cli import PROG, build_parser, main
from {{ cookiecutter.package_name }}.config import ENV_OVERRIDES

COMMANDS = ["serve", "run", "nodes", "models", "config", "demo", "sim", "bench", "tangle"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings read the process environment: keep the caller's out of these tests."""
    for name in [*ENV_OVERRIDES, "OPENROUTER_CONFIG"]:
        monkeypatch.delenv(name, raising=False)


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"{PROG} {__version__}"


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_pass_through_commands_keep_their_own_options() -> None:
    args = build_parser().parse_args(["bench", "transport", "--requests", "10"])
    assert (args.command, args.args) == ("bench", ["transport", "--requests", "10"])


def test_config_prints_the_effective_settings_with_secrets_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[api]\nport = 9005\nmetrics_key = "metrics-secret"\n', encoding="utf-8")
    monkeypatch.setenv("OPENROUTER_API_KEY", "api-secret")
    assert main(["config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert shown["api"]["port"] == 9005
    assert shown["load_balancer"]["strategy"] == "{{ cookiecutter.balancing_strategy }}"
    assert "api-secret" not in out
    assert "metrics-secret" not in out


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_config_and_nodes_mask_secrets_in_node_urls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], json_flag: list[str]
) -> None:
    secrets = ["q-secret-token", "0123456789abcdefKEY"]
    path = tmp_path / "c.toml"
    path.write_text(
        '[[nodes]]\nname = "a"\nurl = "http://127.0.0.1:9/v1?token=q-secret-token"\n'
        'type = "openai_compatible"\nmodels = ["m/one"]\n\n'
        '[[nodes]]\nname = "b"\nurl = "http://127.0.0.1:9/v3/0123456789abcdefKEY"\n'
        'type = "openai_compatible"\nmodels = ["m/one"]\n\n[[models]]\nid = "m/one"\n',
        encoding="utf-8",
    )
    assert main(["config", "--config", str(path)]) == 0
    main(["nodes", "--config", str(path), *json_flag])  # unreachable nodes: exit 1
    out = capsys.readouterr().out
    assert "127.0.0.1:9/v1?token=" in out and "127.0.0.1:9/v3/" in out
    assert not [secret for secret in secrets if secret in out]


def test_bad_config_is_one_message_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[api]\nport = 99999\n", encoding="utf-8")
    assert main(["config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: invalid configuration")
    assert "api.port" in err
    assert "Traceback" not in err


def test_missing_config_file_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.toml"
    assert main(["nodes", "--config", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_python_dash_m_runs_the_same_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{PROG} {__version__}"


@pytest.mark.parametrize(
    ("argv", "port"),
    [(["demo"], 9123), (["demo", "--port", "9124"], 9124), (["demo", "--port", "0"], 0)],
)
def test_demo_listens_on_the_configured_port(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], port: int
) -> None:
    import {{ cookiecutter.package_name }}.demo as demo

    ports: list[int] = []
    monkeypatch.setattr(demo, "run_demo", lambda *, port: ports.append(port) or 0)
    monkeypatch.setenv("OPENROUTER_API_PORT", "9123")
    assert main(argv) == 0
    assert ports == [port]
