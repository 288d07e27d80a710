"""The balancing benchmark's simulated nodes, virtual clock and oracle."""

from __future__ import annotations

import asyncio
import random

import pytest

from {{ cookiecutter.package_name }}.balancer.bench import Job, _request, main, simulate
from {{ cookiecutter.package_name }}.balancer.bench_fleet import NodeSpec, Oracle, SimNode, current_request
from {{ cookiecutter.package_name }}.balancer.node import Node
from {{ cookiecutter.package_name }}.balancer.strategies import RequestFacts
from {{ cookiecutter.package_name }}.llm.models import ChatMessage

from .fakes import MODEL, lb_settings, node_settings

SPEC = NodeSpec("n", slots=2, ms_per_token=20, prefill_ms_per_token=0.5)


def job(prompt_tokens: int, output_tokens: int) -> Job:
    text = "x" * (prompt_tokens * 4)
    return Job(0.0, _request([ChatMessage(role="user", content=text)], output_tokens))


def test_virtual_clock_gives_the_modelled_service_time() -> None:
    # 400 prompt tokens x 0.5 ms + 50 tokens x 20 ms: TTFT 0.2 s, total 1.2 s, on an idle node.
    run = simulate("round_robin", 0.5, [SPEC], [job(400, 50)], seed=1)
    (outcome,) = run.outcomes
    assert outcome.ok
    assert outcome.ttft_s == pytest.approx(0.2, abs=1e-6)
    assert outcome.latency_s == pytest.approx(1.2, abs=1e-6)
    assert run.fleet["n"].completed == 1


async def test_oracle_joins_the_node_where_the_request_finishes_first() -> None:
    lb = lb_settings()
    fast = SimNode(NodeSpec("fast", 1, 10, 0.1), MODEL, random.Random(1))
    slow = SimNode(NodeSpec("slow", 1, 50, 0.1), MODEL, random.Random(1))
    nodes = [Node(node_settings(sim.spec.name), sim, lb) for sim in (fast, slow)]
    oracle = Oracle(lb, random.Random(1), {"fast": fast, "slow": slow})
    request = job(100, 100).request  # 1 s on fast, 5 s on slow
    current_request.set(request)
    facts = RequestFacts(MODEL, 0, "")
    now = asyncio.get_running_loop().time()
    fast.running = [now + 10]  # busy for 10 s more
    assert oracle.choose(nodes, facts).name == "slow"
    fast.running = [now + 1]
    assert oracle.choose(nodes, facts).name == "fast"


def test_main_prints_both_tables(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--requests", "100", "--loads", "0.5", "--strategies", "power_of_two,oracle"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| 50% | power_of_two |" in out and "| 50% | oracle |" in out
    assert "| prefix_affinity |" not in out
    assert "| power_of_two | " in out.split("Prefix workload")[1]


def test_main_rejects_unknown_strategies() -> None:
    with pytest.raises(SystemExit):
        main(["--strategies", "fastest"])
