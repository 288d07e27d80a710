"""Validation of the answers, run by pre_gen_project before any file is written.

Each check returns problems as "field: got <value>; expected <what>" so the
person at the prompt sees which answer to change and how.  Standard library
only: cookiecutter runs hooks with its own interpreter, where nothing of ours
is installed.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .keccak import to_checksum_address


def choices(template_root: Path) -> dict[str, list[str]]:
    """Each multiple-choice question of cookiecutter.json and its options, the default first:
    the one place the lists of backends, strategies and the rest are written."""
    questions = json.loads((template_root / "cookiecutter.json").read_text(encoding="utf-8"))
    return {
        name: value
        for name, value in questions.items()
        if isinstance(value, list) and not name.startswith("_")
    }


_ROOT = Path(__file__).resolve().parents[1]
_CHOICES = choices(_ROOT)
BACKENDS = tuple(_CHOICES["llm_backend"])
STRATEGIES = tuple(_CHOICES["balancing_strategy"])
LICENSES = tuple(_CHOICES["license"])
PYTHON_VERSIONS = tuple(_CHOICES["python_version"])
NETWORKS = tuple(_CHOICES["tangle_network"])
CHAINS = ("local_testnet", "local_mainnet", "testnet", "mainnet")
# The chains each network may run as: a local anvil is never a public chain.
NETWORK_CHAINS = {
    "local": ("local_testnet", "local_mainnet"),
    "base_sepolia": ("testnet",),
    "custom": CHAINS,
}
ADDRESS_FIELDS = ("tangle_contract", "staking_contract", "status_registry_contract")
BOOLEAN_FIELDS = ("include_docker", "include_github_actions", "run_generated_tests")
UINT64_MAX = 2**64 - 1
# Names appear in code lines; longer ones would not fit the generated project's line length.
MAX_NAME = 64

_SLUG = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_VERSION = re.compile(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def _problem(field: str, value: object, expected: str) -> str:
    return f"{field}: got {value!r}; expected {expected}"


def _taken() -> dict[str, frozenset[str]]:
    """Names the project's dependencies occupy (scripts/taken_names.py records them)."""
    recorded = json.loads((_ROOT / "hooks" / "taken_names.json").read_text(encoding="utf-8"))
    return {kind: frozenset(names) for kind, names in recorded.items()}


_TAKEN = _taken()
# The generated tests' own top-level packages (tests/api, tests/sim, ...): pytest imports
# them by these names, so a project package of the same name would be shadowed in its tests.
TEST_PACKAGES = frozenset(
    path.parent.name
    for path in (_ROOT / "{{cookiecutter.project_slug}}" / "tests").glob("*/__init__.py")
)


def check_slug(value: str) -> str | None:
    """The directory, distribution and command name: lowercase words joined by '-'."""
    if not _SLUG.fullmatch(value) or len(value) > MAX_NAME:
        return (
            f"at most {MAX_NAME} lowercase letters and digits, in words joined by single '-', "
            "starting with a letter"
        )
    if value in _TAKEN["distributions"]:
        return (
            "a name no dependency of the project is distributed as "
            f"('pip install' of {value!r} would replace that dependency)"
        )
    return None


def check_package_name(value: str) -> str | None:
    """An importable, lowercase Python identifier that shadows nothing the project imports."""
    if not value.isidentifier() or not value.isascii() or value != value.lower():
        return "a lowercase ASCII Python identifier such as 'openrouter_provider'"
    if len(value) > MAX_NAME:
        return f"at most {MAX_NAME} characters"
    if keyword.iskeyword(value) or value in sys.stdlib_module_names:
        return "a name that is neither a Python keyword nor a standard-library module"
    for name in (value, f"{value}_sim", f"{value}_bench"):
        if name in _TAKEN["modules"]:
            return f"a name no dependency of the project uses ({name!r} is one of their modules)"
    if value in TEST_PACKAGES:
        return (
            "a name the generated tests do not use for a package of their own "
            f"({', '.join(sorted(TEST_PACKAGES))})"
        )
    return None


def check_email(value: str) -> str | None:
    return None if _EMAIL.fullmatch(value) else "an email address such as 'you@example.com'"


def check_version(value: str) -> str | None:
    return None if _VERSION.fullmatch(value) else "a PEP 440 version such as '0.1.0'"


def check_url(value: str, schemes: tuple[str, ...]) -> str | None:
    """A URL with one of `schemes` and a host, without spaces."""
    wanted = "a URL starting with " + " or ".join(f"{scheme}://" for scheme in schemes)
    if not value or any(char.isspace() for char in value):
        return f"{wanted}, without spaces"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"{wanted}, with a valid host and port"
    if parts.scheme not in schemes:
        return wanted
    if not parts.hostname:
        return f"{wanted}, with a host"
    return None


def check_address(value: str) -> str | None:
    """0x and 40 hex digits; mixed case must be the EIP-55 checksum."""
    if not _ADDRESS.fullmatch(value):
        return "an EVM address: 0x followed by 40 hex digits"
    body = value[2:]
    if body != body.lower() and body != body.upper() and value != to_checksum_address(value):
        return (
            f"a valid EIP-55 checksum (did you mean {to_checksum_address(value)}?) or all lowercase"
        )
    return None


def check_uint64(value: str) -> str | None:
    if value.isascii() and value.isdigit() and int(value) <= UINT64_MAX:
        return None
    return f"a whole number from 0 to {UINT64_MAX} (uint64)"


def _one_line(value: str) -> str | None:
    return None if value.strip() and "\n" not in value else "a non-empty single line"


def _one_word(value: str) -> str | None:
    """Model ids and keystore URIs never hold spaces; refusing them keeps config.py lint-clean."""
    return None if value and not any(c.isspace() for c in value) else "a value without spaces"


def split_urls(value: str) -> list[str]:
    """backend_urls as config.py reads it: comma-separated, blanks dropped."""
    return [url.strip() for url in value.split(",") if url.strip()]


def _check_choices(answers: Mapping[str, Any]) -> list[str]:
    choices = {
        "license": LICENSES,
        "python_version": PYTHON_VERSIONS,
        "llm_backend": BACKENDS,
        "balancing_strategy": STRATEGIES,
        "tangle_network": NETWORKS,
        "chain": CHAINS,
    }
    return [
        _problem(field, answers[field], "one of " + ", ".join(options))
        for field, options in choices.items()
        if answers[field] not in options
    ]


def _check_backend_urls(value: str) -> list[str]:
    urls = split_urls(value)
    if not urls:
        return [
            _problem("backend_urls", value, "at least one URL starting with http:// or https://")
        ]
    problems = []
    for url in urls:
        expected = check_url(url, ("http", "https"))
        if expected:
            problems.append(_problem("backend_urls", url, expected + " (comma-separated)"))
    return problems


def _check_network(answers: Mapping[str, Any]) -> list[str]:
    """The answers must describe one network: its chain kind and its contracts."""
    network, chain = answers["tangle_network"], answers["chain"]
    problems = []
    allowed = NETWORK_CHAINS.get(network, CHAINS)
    if chain in CHAINS and chain not in allowed:
        problems.append(
            _problem("chain", chain, f"{' or '.join(allowed)} for tangle_network={network!r}")
        )
    for field in ADDRESS_FIELDS:
        if not answers[field]:
            problems.append(
                _problem(field, "", f"the contract's address on the {network!r} network")
            )
    return problems


# field -> check returning what was expected, or None when the value is fine
_FIELD_CHECKS: dict[str, Callable[[str], str | None]] = {
    "project_name": _one_line,
    "project_slug": check_slug,
    "package_name": check_package_name,
    "author_email": check_email,
    "version": check_version,
    "default_model": _one_word,
    "http_rpc_url": lambda value: check_url(value, ("http", "https")),
    "ws_rpc_url": lambda value: check_url(value, ("ws", "wss")),
    "blueprint_id": check_uint64,
    "service_id": check_uint64,
    "keystore_uri": _one_word,
}


def validate(answers: Mapping[str, Any]) -> list[str]:
    """Every problem with the answers; an empty list means generation may go on."""
    problems = _check_choices(answers)
    for field, check in _FIELD_CHECKS.items():
        value = answers[field]
        expected = check(value) if isinstance(value, str) else "text"
        if expected:
            problems.append(_problem(field, value, expected))
    problems += _check_backend_urls(answers["backend_urls"])
    for field in ADDRESS_FIELDS:
        value = answers[field]
        expected = check_address(value) if value else None
        if expected:
            problems.append(_problem(field, value, expected))
    problems += _check_network(answers)
    for field in BOOLEAN_FIELDS:
        if not isinstance(answers[field], bool):
            problems.append(_problem(field, answers[field], "yes or no"))
    return problems
