#!/usr/bin/env bash
# Lock the generated project's dependencies: bash scripts/lock.sh [--upgrade]
#
# Bakes the defaults, runs the project's `make lock` there (uv lock, then uv export; with
# --upgrade, to the newest versions pyproject.toml allows) and writes back into the template:
#   uv.lock                the lock, its project name, version and Python bound as answers
#   requirements.txt       exported from it for pip: the runtime dependencies (the Dockerfile)
#   requirements-dev.txt   the same with the dev extra (make setup, generation, CI)
# tests/test_lock.py fails when they no longer match the generated pyproject.toml.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
uv=$(command -v uv || echo "$here/.venv/bin/uv")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bash "$here/scripts/bake.sh" "$work" >/dev/null
project=$(echo "$work"/*/)
template="$here/{{cookiecutter.project_slug}}"
# The bake holds the template's lock, rendered: uv starts from it and changes what it must.
cd "$project"
# The project's own `make lock` (without --upgrade unless asked): one recipe for both.
PATH=$(dirname "$uv"):$PATH UV_PYTHON_DOWNLOADS=never make --no-print-directory lock LOCK="$*" >/dev/null
cp requirements.txt requirements-dev.txt "$template/"
# The lock's own entry for the project carries three answers.
python3 - "$project/uv.lock" "$template/uv.lock" <<'PY'
import sys
text = open(sys.argv[1], encoding="utf-8").read()
for old, new in (
    ('requires-python = ">=3.11"', 'requires-python = ">={{ cookiecutter.python_version }}"'),
    (
        'name = "openrouter-provider"\nversion = "0.1.0"',
        'name = "{{ cookiecutter.project_slug }}"\nversion = {{ cookiecutter.version | tojson }}',
    ),
):
    assert text.count(old) == 1, old
    text = text.replace(old, new)
open(sys.argv[2], "w", encoding="utf-8").write(text)
PY
echo "locked: $template/uv.lock, requirements.txt, requirements-dev.txt"
