#!/usr/bin/env bash
# The test command: installs the Debian packages, builds everything, and runs every test suite
# (unit, service, worker, CLI and end-to-end tests with real processes on loopback) through ctest.
#
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
ctest --test-dir build --output-on-failure -j"${JOBS:-2}" --timeout 900
