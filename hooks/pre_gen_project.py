"""Stop generation when an answer is invalid, naming the field, the value and the fix.

This file is valid Python before Jinja renders it: the answers arrive only as
JSON inside the string below (newline-padded so a value's closing quote never
meets the triple quote), and are parsed as data.
"""

from __future__ import annotations

import json
import sys

ANSWERS_JSON = r"""
{{ cookiecutter | tojson }}
"""
# Where the template is, however cookiecutter or cruft was invoked (see hooks/jinja_filters.py).
TEMPLATE_ROOT_JSON = r"""
{{ template_root | tojson }}
"""


def main() -> int:
    answers = json.loads(ANSWERS_JSON)
    # cookiecutter runs a rendered copy of this file from a temporary directory: the
    # helpers beside it in the template are imported from the template's own directory.
    sys.path.insert(0, json.loads(TEMPLATE_ROOT_JSON))
    from hooks.answers import validate

    problems = validate(answers)
    for problem in problems:
        print(f"ERROR: {problem}", file=sys.stderr)
    if problems:
        print("Generation stopped; nothing was written. Fix the answers above.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
