#!/usr/bin/env bash
# The static checks (seconds): Python lint and format, the import boundaries, the dashboard's JS.
# Run after scripts/setup.sh test; scripts/test.sh runs this before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
node_modules/.bin/biome check service/static
.venv/bin/mypy
