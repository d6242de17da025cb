#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install prunebench with the given extras, e.g. `scripts/setup.sh test`.
# pip takes torch 2.14.1 / torchvision 0.29.1 from the pinned versions in pyproject.toml; every other
# distribution is held to constraints.txt (the versions the tests ran against).
# With the `test` extras it also installs what the tests and checks need outside Python: the system
# packages redis-server, chromium and chromium-driver (apt-get, when missing and we are root) and the
# dashboard's JS linter (Biome, pinned in package.json / package-lock.json, with npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-worker,embedded-redis}"
python="${PYTHON:-python3}"

system_packages() {
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
    command -v chromedriver >/dev/null || missing+=(chromium-driver)
    if [ ${#missing[@]} -eq 0 ]; then
        return
    fi
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "setup: missing ${missing[*]}; install them (the browser test skips without Chromium)" >&2
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
}

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[${extras}]" \
    --config-settings editable_mode=strict
if [[ ",${extras}," == *",test,"* ]]; then
    system_packages
    npm ci --no-audit --no-fund --loglevel=error
fi
