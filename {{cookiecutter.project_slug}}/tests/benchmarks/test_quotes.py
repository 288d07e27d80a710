"""`bench quotes` signs real quotes and prints one row per prompt size."""

from __future__ import annotations

import re

import pytest

from {{ cookiecutter.package_name }}_bench.quotes import main


def test_bench_quotes_prints_one_row_per_prompt_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--count", "3", "--chars", "10", "2000"]) == 0
    rows = re.findall(r"^\| ([\d,]+) \| 3 \| ([\d,]+) \|$", capsys.readouterr().out, re.M)
    assert [row[0] for row in rows] == ["10", "2,000"]
    assert all(int(row[1].replace(",", "")) > 0 for row in rows)
