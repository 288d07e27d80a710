"""The README's first command: generate with the defaults and let the hook test the project.

This is the slow, real path: a .venv in the new project, the locked versions of
requirements-dev.txt installed from the package index (hash-checked), and the fast part
of the project's own suite.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hooks.finish import SKIP_ENV
from tests.chain import missing_reason, tangle_chain

pytestmark = [pytest.mark.postgen, pytest.mark.xdist_group("suites")]


def test_defaults_generate_install_and_pass_their_tests(
    cookies: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(SKIP_ENV, raising=False)
    if missing_reason() is None:
        with tangle_chain() as rpc_url:
            monkeypatch.setenv("TANGLE_E2E_RPC_URL", rpc_url)
            result = cookies.bake()
    else:
        result = cookies.bake()
    out = capfd.readouterr().out
    assert result.exception is None, f"{result.exception}\n{out[-4000:]}"
    # Progress while it runs (pytest's progress lines), then the summary and what to do next.
    lines = out.strip().splitlines()
    assert any(re.fullmatch(r"  [.sxX]+\s*\[\s*\d+%\]", line) for line in lines), out[-4000:]
    summary = lines.index("Next steps:") - 1
    assert re.fullmatch(r"Generated tests: \d+ passed.* in [\d.]+s.*", lines[summary]), out[-4000:]
    assert "  . .venv/bin/activate" in lines[summary:]
    assert (Path(result.project_path) / ".venv" / "bin" / "python").exists()
