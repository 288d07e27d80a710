"""Bad answers stop generation with the field named and nothing left behind; free text is data."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter

from tests.helpers import NO_RUN, PACKAGE, REPO, project_env, run, tool

COPIED = {"llm", "backends", "balancer", "api", "tangle", "sim"}

BAD_ANSWERS: list[tuple[str, ...]] = [
    ("project_slug", "My Project"),
    ("project_slug", "-leading"),
    ("package_name", "import"),
    ("package_name", "has-dash"),
    ("author_email", "not-an-email"),
    ("version", "one"),
    # The one bad URL of the list is the value shown.
    ("backend_urls", "http://127.0.0.1:8000,localhost:9000", "localhost:9000"),
    ("backend_urls", "ftp://127.0.0.1:8000"),
    ("http_rpc_url", "ws://127.0.0.1:8545"),
    ("ws_rpc_url", "http://127.0.0.1:8545"),
    ("tangle_contract", "0x1234"),
    ("staking_contract", "0xDC64A140AA3E981100A9BECA4E685F962F0CF6C9x"),
    ("status_registry_contract", "0x2BDCC0DE6BE1F7D2EE689A0342D76F52E8EFABa3"),
    ("blueprint_id", "-1"),
    ("service_id", "18446744073709551616"),
    ("chain", "mainnet"),  # a local network is never mainnet
    ("default_model", "two words"),
    ("project_slug", "a" * 65),
    # Names that would shadow what the project imports, or replace what it installs.
    ("package_name", "json"),
    ("package_name", "redis"),
    ("package_name", "web3"),
    ("package_name", "api"),  # the generated tests' own tests/api package
    ("project_slug", "httpx"),
]


def generate(output: Path, **answers: Any) -> Path:
    return Path(
        cookiecutter(
            str(REPO), no_input=True, output_dir=str(output), extra_context={**NO_RUN, **answers}
        )
    )


@pytest.mark.parametrize("case", BAD_ANSWERS, ids=lambda case: f"{case[0]}={case[1]}")
def test_bad_answer_stops_generation_and_names_the_field(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], case: tuple[str, ...]
) -> None:
    field, value, shown = (*case, case[1]) if len(case) == 2 else case
    with pytest.raises(FailedHookException):
        generate(tmp_path, **{field: value})
    err = capfd.readouterr().err
    assert f"ERROR: {field}: got {shown!r}; expected " in err
    assert list(tmp_path.iterdir()) == [], "a failed generation must leave nothing behind"


def test_custom_network_needs_its_addresses(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(FailedHookException):
        generate(tmp_path, tangle_network="custom")
    err = capfd.readouterr().err
    for field in ("tangle_contract", "staking_contract", "status_registry_contract"):
        assert f"ERROR: {field}: got ''; expected the contract's address" in err
    assert list(tmp_path.iterdir()) == []


def test_custom_network_with_addresses_bakes(tmp_path: Path) -> None:
    project = generate(
        tmp_path,
        tangle_network="custom",
        chain="mainnet",
        http_rpc_url="https://rpc.example.org",
        ws_rpc_url="wss://rpc.example.org",
        tangle_contract="0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        staking_contract="0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359",
        status_registry_contract="0xDBF03B407C01E7CD3CBEA99509D93F8DDDC8C6FB",
    )
    config = (project / "src" / PACKAGE / "config.py").read_text()
    assert '"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"' in config


def test_hostile_free_text_bakes_as_data(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payloads = {
        "project_name": f"Prov 'q' \"dq\" $(touch {marker})",
        "description": (
            f'It\'s "quoted" \\ back\\slash \\n\nsecond line $(touch {marker}) `touch {marker}` '
            f"__import__('os').system('touch {marker}') \"\"\" ''' {{{{ '{{{{' }}}} }}"
        ),
        "author_name": f'O\'Brien """); __import__("os").system("touch {marker}") #',
        # No spaces in these two (validated), but still shell and Python syntax.
        "default_model": f"m'\"\\$(touch${{IFS}}{marker})",
        "keystore_uri": f"./keys;touch${{IFS}}{marker};__import__('os')",
    }
    output = tmp_path / "out"
    project = generate(output, project_slug="hostile", package_name="hostile", **payloads)
    assert not marker.exists(), "a payload in the answers ran"
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    # `{{ '{{' }}` is how a literal '{{' is typed: cookiecutter renders answers as Jinja.
    assert pyproject["project"]["description"] == payloads["description"].replace(
        "{{ '{{' }}", "{{"
    )
    assert pyproject["project"]["authors"][0]["name"] == payloads["author_name"]
    # The answers reach only the files Jinja renders (the rest is copied verbatim).
    rendered = [str(path) for path in project.rglob("*.py") if not COPIED.intersection(path.parts)]
    checked = run([*tool("ruff"), "check", *rendered], project)
    assert checked.returncode == 0, checked.stdout
    formatted = run([*tool("ruff"), "format", "--check", *rendered], project)
    assert formatted.returncode == 0, formatted.stdout
    imported = run(
        [
            sys.executable,
            "-c",
            "from hostile.config import load_settings; s = load_settings(environ={}); "
            "print(s.models[0].id); print(s.tangle.keystore_uri)",
        ],
        project,
        env=project_env(project),
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.splitlines() == [payloads["default_model"], payloads["keystore_uri"]]
    assert not marker.exists()


def test_slug_and_package_name_derive_from_any_project_name(tmp_path: Path) -> None:
    project = generate(tmp_path, project_name="My LLM Provider!  (v2)")
    assert project.name == "my-llm-provider-v2"
    assert (project / "src" / "my_llm_provider_v2" / "config.py").is_file()


def test_recorded_answers_regenerate_the_same_project(tmp_path: Path) -> None:
    first = generate(
        tmp_path / "a",
        project_name="Edge Provider",
        llm_backend="tgi",
        balancing_strategy="prefix_affinity",
        backend_urls="http://10.0.0.1:3000, http://10.0.0.2:3000",
        tangle_network="base_sepolia",
        chain="testnet",
        license="Apache-2.0",
        include_docker=False,
    )
    # The saved answers are a replay file: the README's regeneration command, verbatim.
    again_root = tmp_path / "b"
    replayed = run(
        [
            *tool("cookiecutter"),
            "--replay-file",
            str(first / ".cookiecutter.json"),
            str(REPO),
            "-o",
            str(again_root),
        ],
        tmp_path,
    )
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    # Replays do not reinstall and retest: the saved answers say run_generated_tests false.
    assert "Creating .venv" not in replayed.stdout
    again = again_root / first.name

    def tree(root: Path) -> dict[str, str]:
        return {
            str(path.relative_to(root)): path.read_text(encoding="utf-8")
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }

    assert tree(again) == tree(first)


def test_a_project_named_like_a_dependency_is_refused_by_its_derived_names(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(FailedHookException):
        generate(tmp_path, project_name="Redis")
    err = capfd.readouterr().err
    assert "ERROR: project_slug: got 'redis'; expected a name no dependency" in err
    assert "ERROR: package_name: got 'redis'; expected a name no dependency" in err
    assert "'redis' is one of their modules" in err


def test_the_names_dependencies_take_are_recorded() -> None:
    """hooks/taken_names.json holds every module and distribution of the project's
    dependencies as installed here (the generated project's pyproject.toml, resolved)."""
    from scripts.taken_names import taken_names

    recorded = json.loads((REPO / "hooks" / "taken_names.json").read_text(encoding="utf-8"))
    for kind, names in taken_names().items():
        missing = sorted(set(names) - set(recorded[kind]))
        assert not missing, (
            f"{kind} missing from hooks/taken_names.json: {missing}; "
            "rerun python scripts/taken_names.py > hooks/taken_names.json"
        )
