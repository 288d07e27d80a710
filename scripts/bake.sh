#!/usr/bin/env bash
# Bake the template into OUT for development: bash scripts/bake.sh OUT [key=value ...]
# The post-gen test run is skipped; run the baked project's checks yourself.
# Uses cookiecutter from PATH, else the repo's .venv (made by .ci/run).
set -euo pipefail
out=${1:?usage: scripts/bake.sh OUT [key=value ...]}
shift
here=$(cd "$(dirname "$0")/.." && pwd)
cookiecutter=$(command -v cookiecutter || echo "$here/.venv/bin/cookiecutter")
rm -rf "$out"
OPENROUTER_BLUEPRINT_SKIP_TESTS=1 "$cookiecutter" --no-input -o "$out" "$here" run_generated_tests=false "$@"
ls -d "$out"/*/
