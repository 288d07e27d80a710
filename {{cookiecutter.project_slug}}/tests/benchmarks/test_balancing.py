"""The balancing benchmark's simulated nodes, virtual clock and oracle."""

from __future__ import annotations

import asyncio
import random

import pytest

from {{ cookiecutter.package_name }}.balancer.balancer import Balancer
from {{ cookiecutter.package_name }}.balancer.node import Node
from {{ cookiecutter.package_name }}.balancer.strategies import RequestFacts
from {{ cookiecutter.package_name }}.llm.models import ChatMessage
from {{ cookiecutter.package_name }}_bench.balancing import MODEL as BENCH_MODEL
from {{ cookiecutter.package_name }}_bench.balancing import Job, _request, main, simulate
from {{ cookiecutter.package_name }}_bench.fleet import (
    NodeSpec,
    Oracle,
    SimNode,
    VirtualClockLoop,
    current_request,
)

from balancer.fakes import MODEL, lb_settings, node_settings, settings

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


def test_balancer_measures_decode_speed_for_a_reference_answer() -> None:
    async def run(output_tokens: int) -> tuple[float | None, float | None]:
        balancer = Balancer(settings(models=(BENCH_MODEL,)), rng=random.Random(1))
        balancer.add_node(
            node_settings("n", models=[BENCH_MODEL]), SimNode(SPEC, BENCH_MODEL, random.Random(1))
        )
        async for _chunk in balancer.stream_chat_completion(job(400, output_tokens).request):
            pass
        (node,) = balancer.nodes()
        await balancer.aclose()
        return node.decode.value_ms, node.latency.value_ms

    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        short = runner.run(run(11))
        long = runner.run(run(401))
    # 20 ms a token: about 2 s for a 100-token answer whatever the answer's length.  The
    # estimate counts the first token as sent with the first chunk (as real servers do),
    # while the simulated node generates all of them after it, hence tokens / (tokens - 1).
    assert short[0] == pytest.approx(2000 * 11 / 10) and long[0] == pytest.approx(2000 * 401 / 400)
    # The latency estimate counts a short answer unscaled: it alone makes the node look fast.
    assert short[1] == pytest.approx(200 + 220)


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
