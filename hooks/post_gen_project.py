"""Prune the fresh project to the answers, record them, and run its tests.

Valid Python before Jinja renders it: the answers arrive only as JSON inside
the string below and are parsed as data (see pre_gen_project.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ANSWERS_JSON = r"""
{{ cookiecutter | tojson }}
"""


def main() -> int:
    answers = json.loads(ANSWERS_JSON)
    sys.path.insert(0, answers.get("_repo_dir") or answers["_template"])
    from hooks.finish import finish

    # cookiecutter runs this hook inside the generated project. A failed test run is
    # reported, not raised: cookiecutter would delete the project on a non-zero exit.
    finish(Path.cwd(), answers, os.environ)
    return 0


if __name__ == "__main__":
    sys.exit(main())
