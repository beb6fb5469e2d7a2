#!/usr/bin/env bash
# Set up a machine to run the tests: the system Chromium (the report's browser test
# drives it through Playwright; Playwright's own browser download cannot work without
# the internet) and the package with its test extra.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    install_chromium() { $SUDO apt-get install -y --no-install-recommends chromium; }
    # a stale or missing package list is the usual cause of a failed install
    if ! install_chromium; then
        $SUDO apt-get update
        install_chromium
    fi
fi

python -m pip install -e ".[test]"
