"""Each strategy's choice on constructed node states."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from {{ cookiecutter.package_name }}.balancer.node import Node, ServedModel
from {{ cookiecutter.package_name }}.balancer.strategies import (
    CapabilityBased,
    LatencyBased,
    LeastLoaded,
    PowerOfTwo,
    PrefixAffinity,
    RequestFacts,
    RoundRobin,
)

from .fakes import MODEL, FakeClient, lb_settings, node_settings, read_ago

LB = lb_settings()
FACTS = RequestFacts(MODEL, needed_tokens=100, prefix="system prompt")


def make(
    name: str,
    *,
    in_flight: int = 0,
    latency_ms: float | None = None,
    decode_ms: float | None = None,
    **kw: object,
) -> Node:
    node = Node(node_settings(name, **kw), FakeClient(name), LB)
    node.refresh_served({MODEL: None})
    node.in_flight = in_flight
    node.latency.value_ms = latency_ms
    node.decode.value_ms = decode_ms
    return node


def picks(
    chooser: object, nodes: list[Node], count: int, facts: RequestFacts = FACTS
) -> Counter[str]:
    return Counter(chooser.choose(nodes, facts).name for _ in range(count))  # type: ignore[attr-defined]


def test_round_robin_follows_weights_interleaved() -> None:
    a, b = make("a", weight=3), make("b", weight=1)
    chooser = RoundRobin(LB, random.Random(1))
    order = [chooser.choose([a, b], FACTS).name for _ in range(8)]
    assert order == ["a", "a", "b", "a"] * 2


def test_round_robin_only_among_candidates() -> None:
    a, b, c = make("a"), make("b"), make("c")
    chooser = RoundRobin(LB, random.Random(1))
    assert picks(chooser, [a, c], 10) == Counter({"a": 5, "c": 5})
    assert b.name not in picks(chooser, [a, c], 4)


def test_least_loaded_takes_fewest_in_flight_per_weight() -> None:
    busy, idle = make("busy", in_flight=3), make("idle", in_flight=1)
    chooser = LeastLoaded(LB, random.Random(1))
    assert picks(chooser, [busy, idle], 20) == Counter({"idle": 20})
    # Weight 4 divides the load: (3 + 1) / 4 = 1 beats (1 + 1) / 1 = 2.
    heavy = make("heavy", in_flight=3, weight=4)
    assert picks(chooser, [heavy, idle], 20) == Counter({"heavy": 20})


def test_least_loaded_breaks_ties_at_random() -> None:
    chooser = LeastLoaded(LB, random.Random(1))
    counts = picks(chooser, [make("a"), make("b"), make("c")], 300)
    assert set(counts) == {"a", "b", "c"}
    assert min(counts.values()) > 50


def test_latency_based_prefers_lowest_estimate_per_weight() -> None:
    chooser = LatencyBased(LB, random.Random(1))
    fast, slow = make("fast", latency_ms=100), make("slow", latency_ms=300)
    assert picks(chooser, [fast, slow], 10) == Counter({"fast": 10})
    # An unmeasured node counts as the best measured one: it gets a trial.
    assert set(picks(chooser, [make("new"), slow], 10)) == {"new", "slow"}
    assert picks(chooser, [fast, make("slow4", latency_ms=300, weight=4)], 10) == Counter(
        {"slow4": 10}
    )


def test_capability_based_scores_fit_against_load() -> None:
    chooser = CapabilityBased(LB, random.Random(1))
    warm, cold = make("warm", in_flight=2), make("cold", in_flight=2)
    warm.served[MODEL] = ServedModel(MODEL, loaded=True)
    assert picks(chooser, [warm, cold], 10) == Counter({"warm": 10})
    # Load outweighs warmth: warm at 7 of 8 scores 0.125 + 0.5, idle cold scores 1.
    warm.in_flight = 7
    cold.in_flight = 0
    assert picks(chooser, [warm, cold], 10) == Counter({"cold": 10})
    # Best fit: among equal loads, the smaller context that fits wins.
    small, large = make("small"), make("large")
    small.served[MODEL] = ServedModel(MODEL, context_length=1000)
    large.served[MODEL] = ServedModel(MODEL, context_length=100_000)
    assert picks(chooser, [small, large], 10) == Counter({"small": 10})


def test_power_of_two_runs_requests_side_by_side_up_to_max_concurrency() -> None:
    chooser = PowerOfTwo(LB, random.Random(1))
    # A batching node with 4 of 8 running: 100 ms x (1 + 4/8) = 150 beats an idle node at
    # 300 ms.  Linkerd's 100 x (4 + 1) = 500 would send the request to the slow node.
    busy_fast = make("fast", decode_ms=100, in_flight=4, max_concurrency=8)
    idle_slow = make("slow", decode_ms=300, max_concurrency=8)
    assert picks(chooser, [busy_fast, idle_slow], 10) == Counter({"fast": 10})
    # Load still counts: 3 of 4 running, 100 x 1.75 = 175 loses to an idle 150.
    nearly_full = make("full", decode_ms=100, in_flight=3, max_concurrency=4)
    assert picks(chooser, [nearly_full, make("idle", decode_ms=150)], 10) == Counter({"idle": 10})


def test_power_of_two_ranks_by_decode_speed_when_measured() -> None:
    chooser = PowerOfTwo(LB, random.Random(1))
    # "short" looked fast on short answers (latency 100 ms) but generates at 500 ms a
    # reference answer; "steady" takes 200.
    short = make("short", latency_ms=100, decode_ms=500)
    steady = make("steady", latency_ms=300, decode_ms=200)
    assert picks(chooser, [short, steady], 10) == Counter({"steady": 10})
    # Unmeasured decode falls back to the latency estimate: 300 < 500.
    assert picks(chooser, [short, make("new", latency_ms=300)], 10) == Counter({"new": 10})


def test_power_of_two_weight_sets_draw_odds_not_cost() -> None:
    chooser = PowerOfTwo(LB, random.Random(1))
    # Both are always drawn from two candidates; weight 4 must not make 300 ms cheaper than 200.
    heavy, light = make("heavy", decode_ms=300, weight=4), make("light", decode_ms=200)
    assert picks(chooser, [heavy, light], 20) == Counter({"light": 20})


def test_power_of_two_counts_attempts_per_success() -> None:
    chooser = PowerOfTwo(LB, random.Random(1))
    failing, ok = make("failing", decode_ms=100), make("ok", decode_ms=200)
    failing.recent.extend([False, False, False, True])  # (4 + 1) / (1 + 1) = 2.5 x 100
    assert failing.attempts_per_success() == 2.5
    assert picks(chooser, [failing, ok], 10) == Counter({"ok": 10})
    failing.recent.clear()
    failing.recent.extend([True, True, True, False])  # 5 / 4 x 100 = 125 beats 200
    assert picks(chooser, [failing, ok], 10) == Counter({"failing": 10})


def test_power_of_two_never_picks_the_worst_of_three() -> None:
    chooser = PowerOfTwo(LB, random.Random(1))
    nodes = [make("a", latency_ms=100), make("b", latency_ms=100), make("worst", latency_ms=5000)]
    counts = picks(chooser, nodes, 300)
    assert "worst" not in counts
    assert min(counts["a"], counts["b"]) > 50  # equal nodes tie-break at random


def test_power_of_two_samples_by_weight() -> None:
    chooser = PowerOfTwo(LB, random.Random(1))
    # Weight 8 of 10: the heavy node is in almost every sampled pair, and the cheapest.
    nodes = [
        make("heavy", latency_ms=100, weight=8),
        make("b", latency_ms=800),
        make("c", latency_ms=800),
    ]
    counts = picks(chooser, nodes, 300)
    assert counts["heavy"] > 200


def test_prefix_affinity_is_sticky_per_prefix() -> None:
    chooser = PrefixAffinity(LB, random.Random(1))
    nodes = [make(name) for name in "abcd"]
    chooser.nodes_changed(nodes)
    homes = {
        prefix: picks(chooser, nodes, 5, RequestFacts(MODEL, 10, prefix))
        for prefix in (f"system prompt {index}" for index in range(40))
    }
    assert all(len(counts) == 1 for counts in homes.values())
    assert len({next(iter(counts)) for counts in homes.values()}) == 4  # prefixes spread


def test_prefix_affinity_spills_past_the_load_bound() -> None:
    chooser = PrefixAffinity(LB, random.Random(1))
    nodes = [make(name) for name in "abcd"]
    chooser.nodes_changed(nodes)
    facts = RequestFacts(MODEL, 10, "hot prompt")
    home = chooser.choose(nodes, facts)
    # 3 in flight on home, none elsewhere: the bound is ceil(1.25 x 4 / 4) = 2.
    home.in_flight = 3
    spilled = chooser.choose(nodes, facts)
    assert spilled is not home
    # The spill goes to the next node on the ring, the same one every time.
    assert {chooser.choose(nodes, facts).name for _ in range(5)} == {spilled.name}
    home.in_flight = 0
    assert chooser.choose(nodes, facts) is home


def test_prefix_affinity_keeps_homes_when_a_node_leaves() -> None:
    chooser = PrefixAffinity(LB, random.Random(1))
    nodes = [make(name) for name in "abcd"]
    chooser.nodes_changed(nodes)
    prefixes = [f"prompt {index}" for index in range(60)]
    before = {p: chooser.choose(nodes, RequestFacts(MODEL, 10, p)).name for p in prefixes}
    rest = [node for node in nodes if node.name != "d"]
    after = {p: chooser.choose(rest, RequestFacts(MODEL, 10, p)).name for p in prefixes}
    assert all(after[p] == before[p] for p in prefixes if before[p] != "d")


@pytest.mark.parametrize("chooser_type", [LeastLoaded, PowerOfTwo, CapabilityBased])
def test_stale_server_gauges_count_as_unknown_not_idle(chooser_type: type) -> None:
    chooser = chooser_type(LB, random.Random(1))
    stale, fresh = make("stale", latency_ms=100), make("fresh", latency_ms=100)
    # The stale node's last scrape said idle; the fresh one has two running.
    stale.client.metrics.server_running = 0  # type: ignore[attr-defined]
    read_ago(stale.client.metrics, LB.stale_signal_age_s + 1)  # type: ignore[attr-defined]
    fresh.client.metrics.server_running = 2  # type: ignore[attr-defined]
    read_ago(fresh.client.metrics, 1.0)  # type: ignore[attr-defined]
    assert picks(chooser, [stale, fresh], 10) == Counter({"fresh": 10})
    assert stale.load() == stale.max_concurrency
    # A fresh scrape makes it known (and idle) again.
    read_ago(stale.client.metrics, 0.5)  # type: ignore[attr-defined]
    assert picks(chooser, [stale, fresh], 10) == Counter({"stale": 10})


@pytest.mark.parametrize("chooser_type", [LatencyBased, PowerOfTwo])
def test_a_node_measured_long_before_the_others_gets_a_fresh_trial(chooser_type: type) -> None:
    """Slow once, then never picked again, so never measured again: once its estimate is
    stale_decays time constants (10 x 10 s) older than the others', it counts as the best
    while idle; once its trial runs, as it last measured."""
    chooser = chooser_type(LB, random.Random(1))
    slow, fast = make("slow", latency_ms=5000), make("fast", latency_ms=100)
    slow.latency.updated_at, fast.latency.updated_at = 100.0, 199.0
    assert picks(chooser, [slow, fast], 40) == Counter({"fast": 40})
    fast.latency.updated_at = 201.0
    assert picks(chooser, [slow, fast], 40)["slow"] > 5
    slow.in_flight = 1
    assert picks(chooser, [slow, fast], 40) == Counter({"fast": 40})


def test_latency_based_trial_is_the_best_per_unit_of_weight() -> None:
    """A node not measured stands in as the best latency per unit of weight: a light new
    node beside a heavy measured one still gets its trial."""
    chooser = LatencyBased(LB, random.Random(1))
    heavy = make("heavy", latency_ms=400, weight=4)  # 100 ms per unit of weight
    assert set(picks(chooser, [heavy, make("new")], 20)) == {"heavy", "new"}
