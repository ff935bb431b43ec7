#!/usr/bin/env bash
# The one test command: installs the real peers (DCMTK, Orthanc, Python venv),
# makes the test data, then runs every test target.
#
#   scripts/test.sh                      # the whole suite
#   scripts/test.sh --test harness_smoke # extra arguments go to cargo test
#
# Environment: PONS_CACHE (default $HOME/.cache/pons: venv, test data),
# CARGO_TARGET_DIR (default $PONS_CACHE/target), RUST_TEST_THREADS (default 2:
# every Orthanc/Pons fixture is a process with its own ports and storage, and
# the machine has 2 cores).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PONS_CACHE="${PONS_CACHE:-$HOME/.cache/pons}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PONS_CACHE/target}"
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"

scripts/install-deps.sh
"$PONS_CACHE/venv/bin/python" scripts/make_testdata.py --ct 200

if (($#)); then
    cargo test "$@"
else
    cargo test --all-targets
fi
