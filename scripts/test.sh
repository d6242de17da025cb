#!/usr/bin/env bash
# The whole test suite on a fresh machine: install, static checks, then every test (slow and browser ones too).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
bash scripts/check.sh
exec .venv/bin/pytest "$@"
