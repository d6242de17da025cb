#!/usr/bin/env bash
# The whole test suite on a fresh machine: install, lint, then every test (slow and browser ones too).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
