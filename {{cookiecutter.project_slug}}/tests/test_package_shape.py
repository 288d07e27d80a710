"""The product package holds only what runs in production: the simulator and the
benchmarks sit beside it in src/, and nothing in the product imports them."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from importlib import import_module

import pytest

import {{ cookiecutter.package_name }} as product
from {{ cookiecutter.package_name }}.cli import main

PACKAGE = "{{ cookiecutter.package_name }}"
ASIDE = (f"{PACKAGE}_sim", f"{PACKAGE}_bench")


def test_no_product_module_imports_the_simulator_or_the_benchmarks() -> None:
    prefix = f"{PACKAGE}."
    names = [module.name for module in pkgutil.walk_packages(product.__path__, prefix)]
    assert f"{PACKAGE}.cli" in names
    assert f"{PACKAGE}.demo" in names
    # A fresh interpreter, so what this test session imported does not count; `demo` is
    # the one command that runs the simulator, and importing __main__ would run the CLI.
    skip = {f"{PACKAGE}.demo", f"{PACKAGE}.__main__"}
    script = (
        "import sys, importlib\n"
        f"for name in {[name for name in names if name not in skip]!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({ASIDE!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_demo_is_the_only_product_module_that_uses_the_simulator() -> None:
    demo = import_module(f"{PACKAGE}.demo")
    assert demo.SimConfig.__module__.startswith(f"{PACKAGE}_sim")


@pytest.mark.parametrize(
    ("argv", "missing"),
    [(["bench"], 1), (["sim"], 0), (["demo"], 0), (["tangle", "bench"], 1)],
)
def test_a_build_without_them_says_where_they_are(
    argv: list[str],
    missing: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # As in the wheel and the image: importing the package beside the product fails.
    monkeypatch.setitem(sys.modules, ASIDE[missing], None)
    monkeypatch.delitem(sys.modules, f"{PACKAGE}.demo", raising=False)
    monkeypatch.delenv("OPENROUTER_CONFIG", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{ASIDE[missing]} is not installed here" in err
    assert "pip install -e ." in err
    assert len(err.strip().splitlines()) == 1
