#!/usr/bin/env bash
# Fuzz every decoder: builds all targets of fuzz/ once, then runs each in
# turn for SECONDS (default 20) on fuzz/corpus/<target>, seeded from
# fuzz/seeds/<target> and fuzz/regressions/<target> (see fuzz/README.md).
# One line per target:
#
#   target  seconds  executions  corpus files (size)  result
#
# Exits non-zero if any target crashed, ran out of memory or timed out,
# naming the input it saved under fuzz/artifacts/<target>/. libFuzzer's
# output goes to fuzz/artifacts/logs/<target>.log.
#
#   scripts/fuzz.sh              # 20 s each
#   nice -n 19 scripts/fuzz.sh 400
#   TARGETS="pdu multipart" scripts/fuzz.sh 60
#
# Environment: PONS_CACHE (default $HOME/.cache/pons), CARGO_TARGET_DIR
# (default $PONS_CACHE/target-fuzz), TARGETS (default: every target).
# The toolchain may be stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its
# nightly flags, and no sanitizer is used.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-20}"
export PONS_CACHE="${PONS_CACHE:-$HOME/.cache/pons}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PONS_CACHE/target-fuzz}"
export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf 'fuzz: %s\n' "$*"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "cargo install cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi

build_log="$CARGO_TARGET_DIR/fuzz-build.log"
mkdir -p "$CARGO_TARGET_DIR"
if ! cargo fuzz build --sanitizer none -O >"$build_log" 2>&1; then
    grep -E '^(error|warning: unused)' -A8 "$build_log" | head -40 >&2 || true
    say "build failed (log: $build_log)" >&2
    exit 1
fi

host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$CARGO_TARGET_DIR/$host/release"
targets="${TARGETS:-$(cargo fuzz list)}"

# Longest input per target: text decoders need little, bodies and PDUs more.
max_len() {
    case "$1" in
    accept | qido_to_cfind | worklist_params) echo 16384 ;;
    command_set | cfind_to_qido | worklist_identifier) echo 131072 ;;
    data_set | part10_and_scan | dicom_json) echo 262144 ;;
    *) echo 1048576 ;;
    esac
}

mkdir -p fuzz/artifacts/logs
failed=0
printf '%-16s %8s %12s %18s  %s\n' target seconds executions corpus result
for t in $targets; do
    corpus="fuzz/corpus/$t"
    artifacts="fuzz/artifacts/$t"
    log="fuzz/artifacts/logs/$t.log"
    mkdir -p "$corpus" "$artifacts"
    # Seeds, and the inputs of past findings (run first thing, as corpus).
    for d in "fuzz/seeds/$t" "fuzz/regressions/$t"; do
        if [[ -d "$d" ]]; then
            cp -p "$d/"* "$corpus/" 2>/dev/null || true
        fi
    done
    start=$(date +%s)
    rc=0
    "$bin_dir/$t" "$corpus" \
        -artifact_prefix="$artifacts/" \
        -max_total_time="$seconds" \
        -rss_limit_mb=2048 \
        -timeout=10 \
        -max_len="$(max_len "$t")" \
        -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    elapsed=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    files=$(find "$corpus" -type f | wc -l)
    size=$(du -sk --apparent-size "$corpus" | cut -f1)
    artifact=$(sed -n 's/.*Test unit written to //p' "$log" | tail -1)
    if ((rc == 0)) && [[ -z "$artifact" ]]; then
        result=ok
    else
        failed=1
        kind=crash
        grep -q 'out-of-memory\|malloc(.*) exceeds' "$log" && kind=oom
        grep -q 'ERROR: libFuzzer: timeout' "$log" && kind=timeout
        result="$kind (exit $rc): ${artifact:-no artifact, see $log}"
    fi
    printf '%-16s %8s %12s %18s  %s\n' "$t" "$elapsed" "${execs:-?}" "$files (${size} KiB)" "$result"
done
exit "$failed"
