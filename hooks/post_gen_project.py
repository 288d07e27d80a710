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
TEMPLATE_ROOT_JSON = r"""
{{ template_root | tojson }}
"""
# The answers cruft saves in .cruft.json (after this hook, from the context this file is
# rendered with) then say run_generated_tests false, so `cruft update` and `cruft diff`
# regenerate without reinstalling and retesting. ANSWERS_JSON above keeps this run's value.
# {% if cookiecutter.update({"run_generated_tests": false}) %}{% endif %}


def main() -> int:
    answers = json.loads(ANSWERS_JSON)
    sys.path.insert(0, json.loads(TEMPLATE_ROOT_JSON))
    from hooks.finish import finish

    # cookiecutter runs this hook inside the generated project.
    return finish(Path.cwd(), answers, os.environ)


if __name__ == "__main__":
    sys.exit(main())
