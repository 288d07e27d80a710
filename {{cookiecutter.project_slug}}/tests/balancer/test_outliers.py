"""Passive outlier detection on one node: ejection, growing backoff, half-open readmission,
and the latency penalty for failures."""

from __future__ import annotations

from {{ cookiecutter.package_name }}.balancer.node import Breaker, Node

from .fakes import MODEL, FakeClient, lb_settings, node_settings


def make(**lb: object) -> Node:
    node = Node(node_settings("a"), FakeClient("a"), lb_settings(**lb))
    node.refresh_served({MODEL: None})
    return node


def fail(node: Node, times: int, now: float, elapsed_ms: float = 1.0) -> bool:
    return any([node.failed(elapsed_ms, now, None) for _ in range(times)])


def test_consecutive_failures_eject() -> None:
    node = make(eject_consecutive_failures=3)
    assert not fail(node, 2, now=0.0)
    assert node.usable(0.0)
    node.succeeded(100.0, 0.0)  # a success resets the streak
    assert not fail(node, 2, now=0.0)
    assert fail(node, 1, now=0.0)
    assert node.breaker is Breaker.OPEN
    assert not node.usable(0.1)
    assert node.state(0.1) == "ejected"


def test_failure_rate_ejects_without_a_streak() -> None:
    node = make(eject_consecutive_failures=10, failure_window=10, failure_window_min=10)
    for _ in range(5):
        assert not node.failed(1.0, 0.0, None)
        node.succeeded(100.0, 0.0)
    # The window now holds 5 failures in 10: 50 % ejects on the next failure.
    assert node.failed(1.0, 0.0, None)


def test_backoff_doubles_with_each_ejection_and_is_capped() -> None:
    node = make(eject_consecutive_failures=1, ejection_base_s=5, ejection_max_s=30)
    now = 0.0
    lengths = []
    for _ in range(5):
        assert fail(node, 1, now)
        lengths.append(node.ejected_until - now)
        now = node.ejected_until  # backoff over: half-open, and the trial fails again
        assert node.state(now) == "half_open"
    assert lengths == [5, 10, 20, 30, 30]


def test_half_open_admits_one_trial_and_success_readmits() -> None:
    node = make(eject_consecutive_failures=1, ejection_base_s=5)
    fail(node, 1, 0.0)
    assert not node.usable(4.9)
    assert node.usable(5.0)
    trial = node.dispatched(5.0)
    assert trial
    assert not node.usable(5.1)  # one trial at a time
    node.succeeded(100.0, 5.2)
    node.finished(trial)
    assert node.breaker is Breaker.CLOSED
    assert node.usable(5.3)


def test_cancelled_trial_frees_the_half_open_slot() -> None:
    node = make(eject_consecutive_failures=1, ejection_base_s=5)
    fail(node, 1, 0.0)
    trial = node.dispatched(5.0)
    node.finished(trial)  # no verdict (the caller went away)
    assert node.usable(5.1)
    assert node.breaker is Breaker.HALF_OPEN


def test_passing_health_check_after_backoff_readmits() -> None:
    node = make(eject_consecutive_failures=1, ejection_base_s=5)
    fail(node, 1, 0.0)
    node.health_ok(3.0)  # too early: still ejected
    assert node.breaker is Breaker.OPEN
    node.health_ok(5.0)
    assert node.breaker is Breaker.CLOSED


def test_backoff_starts_afresh_long_after_readmission() -> None:
    node = make(eject_consecutive_failures=1, ejection_base_s=5, ejection_max_s=60)
    fail(node, 1, 0.0)
    node.health_ok(5.0)
    fail(node, 1, 6.0)
    assert node.ejected_until - 6.0 == 10  # soon after readmission: grown
    node.health_ok(16.0)
    fail(node, 1, 100.0)
    assert node.ejected_until - 100.0 == 5  # a long healthy stretch later: from the base


def test_fast_failures_raise_the_latency_estimate_without_compounding() -> None:
    node = make(failure_latency_penalty=4, default_latency_ms=50)
    node.succeeded(100.0, 0.0)
    node.failed(1.0, 0.1, None)  # a 503 in 1 ms
    assert node.latency.value_ms == 400.0
    node.failed(1.0, 0.2, None)
    assert 100.0 < (node.latency.value_ms or 0) <= 400.0  # relative to successes, not to itself


def test_a_fast_failure_never_looks_faster_than_an_unmeasured_node() -> None:
    node = make(failure_latency_penalty=2, default_latency_ms=1000)
    node.succeeded(5.0, 0.0)  # measured very fast
    node.failed(1.0, 0.0, None)
    assert node.latency.value_ms == 2000.0


def test_retry_after_cools_the_node_down() -> None:
    node = make(retry_after_max_s=10)
    node.failed(1.0, 0.0, 3.0)
    assert not node.usable(2.9)
    assert node.usable(3.0)
    node.failed(1.0, 5.0, 3600.0)  # capped
    assert node.usable(15.0)


def test_health_checks_mark_down_after_threshold() -> None:
    node = make(unhealthy_threshold=2)
    node.health_ok(0.0)
    node.health_failed("refused", 1.0)
    assert node.healthy
    node.health_failed("refused", 2.0)
    assert not node.healthy
    assert node.state(2.0) == "unhealthy"
    node.health_ok(3.0)
    assert node.healthy


def test_a_node_never_seen_up_is_down_after_one_failed_check() -> None:
    node = make(unhealthy_threshold=3)
    node.health_failed("refused", 0.0)
    assert not node.healthy
