"""`bench queue` runs the real balancer with requests queued and prints its table."""

from __future__ import annotations

import re

import pytest

from {{ cookiecutter.package_name }}_bench.queueing import main


def test_bench_queue_prints_one_row_per_queue_length(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--duration", "0.2", "--waiters", "0", "16"]) == 0
    rows = re.findall(r"^\| (\d+) \| ([\d,]+) \| ([\d,.]+) \|$", capsys.readouterr().out, re.M)
    assert [row[0] for row in rows] == ["0", "16"]
    assert all(int(row[1].replace(",", "")) > 0 for row in rows)  # requests did complete
