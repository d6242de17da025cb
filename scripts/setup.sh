#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install prunebench with the given extras, e.g. `scripts/setup.sh test`.
# pip takes torch 2.14.1 / torchvision 0.29.1 from the pinned versions in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-worker,embedded-redis}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${extras}]" --config-settings editable_mode=strict
# The dashboard's JS linter and formatter (Biome, pinned in package.json and package-lock.json).
npm ci --no-audit --no-fund --loglevel=error
