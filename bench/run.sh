#!/usr/bin/env bash
# One command for the benchmarks: installs the peers, builds Pons (release),
# makes the test data and prints the tables: ingest of N CT instances
# (bench/ingest.py), then query/retrieve against an Orthanc archive of 1,000
# tiny studies and one CT study of the first min(N, 500) instances
# (bench/qr.py), then QIDO-RS through Pons to a DIMSE PACS versus findscu
# (bench/qido.py), then WADO-RS of that CT study through Pons versus getscu
# (bench/wado.py), then storage commitment of the N instances through Pons
# versus Orthanc's own SCP (bench/commit.py), then STOW-RS of the N instances
# through Pons into a DIMSE PACS versus storescu straight at it
# (bench/stow.py), then Pons's DICOMweb face under load against Orthanc's own
# DICOMweb: 256 clients of paged QIDO-RS, one patient's query on a kept-alive
# connection, viewers loading frames of a 500-instance CT series, concurrent
# cold WADO-RS of one study (bench/load.py), then a storescu run alone and
# beside 32 connections sending poisoned command sets (bench/hostile.py), then
# a modality's worklist query through Pons versus straight at Orthanc's
# worklist, and 64 HTTP clients searching it at once (bench/worklist.py),
# then the ingest of two modalities into two routed archives versus one
# (bench/routing.py). With BIG=1, last, a C-MOVE of a
# 2 GB study through Pons for its peak RSS (bench/qr_big.py; ~6 GB of free
# disk). Usage: bench/run.sh [N instances]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
export PONS_CACHE="${PONS_CACHE:-$HOME/.cache/pons}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PONS_CACHE/target}"
scripts/install-deps.sh
PY="$PONS_CACHE/venv/bin/python"
"$PY" scripts/make_testdata.py --ct "$N" >/dev/null
cargo build --release --quiet
"$PY" bench/ingest.py "$CARGO_TARGET_DIR/release/pons" "$PONS_CACHE/testdata/ct/$N"
"$PY" bench/qr.py "$CARGO_TARGET_DIR/release/pons" "$PONS_CACHE/testdata/ct/$N"
"$PY" bench/qido.py "$CARGO_TARGET_DIR/release/pons"
"$PY" bench/wado.py "$CARGO_TARGET_DIR/release/pons" "$PONS_CACHE/testdata/ct/$N"
"$PY" bench/commit.py "$CARGO_TARGET_DIR/release/pons" "$PONS_CACHE/testdata/ct/$N"
"$PY" bench/stow.py "$CARGO_TARGET_DIR/release/pons" "$PONS_CACHE/testdata/ct/$N" --n "$N"
"$PY" bench/load.py "$CARGO_TARGET_DIR/release/pons" "$PONS_CACHE/testdata/ct/$N"
"$PY" bench/hostile.py "$CARGO_TARGET_DIR/release/pons" "$PONS_CACHE/testdata/ct/$N" --n 200
"$PY" bench/worklist.py "$CARGO_TARGET_DIR/release/pons"
"$PY" bench/routing.py "$CARGO_TARGET_DIR/release/pons" "$PONS_CACHE/testdata/ct/$N" --n 400
if [[ "${BIG:-0}" == 1 ]]; then
    "$PY" bench/qr_big.py "$CARGO_TARGET_DIR/release/pons" "$PONS_CACHE/testdata/ct/$N"
fi
