"""The alert rules, their unit tests, the runbook and the dashboard agree with each other and
with the metrics the code exports.  `promtool` is Debian's and Ubuntu's `prometheus` package;
the real Prometheus end to end is tests/tangle/test_monitoring.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
RULES = PROJECT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = PROJECT / "deploy" / "prometheus" / "alerts.test.yaml"
DASHBOARD = PROJECT / "deploy" / "grafana" / "{{ cookiecutter.project_slug }}.json"
README = (PROJECT / "README.md").read_text(encoding="utf-8")
# PromQL words that are not metric names.
PROMQL = {
    "sum", "by", "rate", "increase", "histogram_quantile", "scalar", "vector", "or", "and",
    "min", "max", "count",
}  # fmt: skip


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (Debian/Ubuntu: apt-get install prometheus)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def panel_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        target["expr"]
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def metric_names(expr: str) -> set[str]:
    """The metric names a query reads (without the _total/_bucket a client library adds)."""
    # Strings, ranges, selectors and grouping labels are not names.
    expr = re.sub(r'"[^"]*"|\[[^\]]*\]|\{[^}]*\}|\b(by|without|on)\s*\([^)]*\)', " ", expr)
    words = set(re.findall(r"[a-z_][a-z0-9_:]*", expr)) - PROMQL
    return {re.sub(r"_(total|bucket)$", "", word) for word in words if ":" not in word}


def test_the_rules_are_valid_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    for rule in alerts():
        name = rule["alert"]
        mine = [
            (test, case)
            for test in tests
            for case in test["alert_rule_test"]
            if case["alertname"] == name
        ]
        assert any(case.get("exp_alerts") for _, case in mine), f"{name} never fires in a test"
        # Quiet: a time when it must not fire yet, or a series that must not make it fire.
        fired = {
            value
            for _, case in mine
            for alert in case.get("exp_alerts") or []
            for value in alert["exp_labels"].values()
        }
        given = {
            value
            for test, _ in mine
            for series in test["input_series"]
            for value in re.findall(r'="([^"]*)"', series["series"])
        }
        quiet = any(not case.get("exp_alerts") for _, case in mine) or given - fired
        assert quiet, f"{name} has no test where it must stay quiet"


def test_every_alert_has_a_runbook_entry_and_names_it() -> None:
    for rule in alerts():
        name = rule["alert"]
        assert f"\n#### {name}\n" in README, f"README has no runbook entry for {name}"
        assert rule["annotations"]["runbook"] == f"README.md#{name.lower()}"
        assert rule["labels"]["severity"] in {"warning", "critical"}


def test_every_metric_read_is_in_the_readme_metrics_table() -> None:
    exprs = [rule["expr"] for rule in alerts()] + panel_queries()
    table = README.split("\n| metric | meaning |\n", 1)[1].split("**Dashboard**", 1)[0]
    documented = {re.sub(r"_(total)$", "", name) for name in re.findall(r"`([a-z_]+)", table)}
    for expr in exprs:
        for name in metric_names(expr):
            assert name in documented, f"{name} (read by {expr!r}) is not in the metrics table"


def test_the_dashboard_is_importable_with_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = dashboard["templating"]["list"]
    assert {"name": "datasource", "type": "datasource", "query": "prometheus"}.items() <= {
        key: value for variable in variables for key, value in variable.items()
    }.items()
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
