#!/usr/bin/env bash
# Runs one fuzz target for a fixed time over the committed seed corpus.
#
#   fuzz/run.sh TARGET [SECONDS]      (SECONDS defaults to 30)
#   fuzz/run.sh all [SECONDS]         (every target, SECONDS each)
#
# Targets: pipeline_rx, encap_decap_roundtrip, wire_views.
#
# New inputs go to a scratch directory, so the committed corpus never grows;
# a crash leaves its input in fuzz/artifacts/TARGET/ and makes the script
# exit 1. The full libFuzzer log is fuzz/target/logs/TARGET.log.
#
# Environment: FUZZ_JOBS=N runs N fuzzing processes in parallel (default 1);
# FUZZ_KEEP_CORPUS=DIR keeps the new inputs in DIR instead of a scratch dir;
# OVERPASS_FUZZ_TOLERATE=id,... skips the check of known, reported findings
# (see fuzz/README.md) so a run can look for new ones.
set -euo pipefail

usage() { echo "usage: $0 {pipeline_rx|encap_decap_roundtrip|wire_views|all} [SECONDS]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
target=$1
secs=${2:-30}
[[ $secs =~ ^[0-9]+$ ]] || usage

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

if [[ $target == all ]]; then
    rc=0
    for t in pipeline_rx encap_decap_roundtrip wire_views; do
        "$here/run.sh" "$t" "$secs" || rc=1
    done
    exit $rc
fi

case $target in
    # The selector byte plus a frame of at most the 2048-byte buffer.
    pipeline_rx) max_len=2049 ;;
    # Header fields plus options plus a payload up to the frame buffer (a
    # packet without DF over the tunnel MTU is fragmented).
    encap_decap_roundtrip) max_len=2048 ;;
    wire_views) max_len=1100 ;;
    *) usage ;;
esac

# cargo-fuzz passes flags that stable rustc only takes with RUSTC_BOOTSTRAP
# (no nightly toolchain is needed). Only the cargo/rustc it starts see it.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# Release build with debug assertions and overflow checks; no sanitizer
# (the fuzzed code is safe Rust; a panic is the crash signal, and ASan
# would halve the exec rate).
flags=(-O -a -s none)
mkdir -p target/logs "artifacts/$target"
log="$here/target/logs/$target.log"

echo "== $target: building"
if ! cargo fuzz build "${flags[@]}" "$target" >"$log.build" 2>&1; then
    tail -n 40 "$log.build"
    echo "== $target: BUILD FAILED (full log: $log.build)"
    exit 1
fi

if [[ -n ${FUZZ_KEEP_CORPUS:-} ]]; then
    work=$FUZZ_KEEP_CORPUS
    mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
jobs=${FUZZ_JOBS:-1}
seeds=$(find "corpus/$target" -type f | wc -l)
echo "== $target: fuzzing for ${secs}s over $seeds seeds (jobs=$jobs, log: $log)"

libfuzzer_args=(
    -max_total_time="$secs"
    -max_len="$max_len"
    -timeout=10
    -rss_limit_mb=2048
    -print_final_stats=1
)
if [[ $jobs -gt 1 ]]; then
    libfuzzer_args+=(-fork="$jobs" -ignore_crashes=0)
fi

set +e
cargo fuzz run "${flags[@]}" "$target" "$work" "$here/corpus/$target" -- "${libfuzzer_args[@]}" >"$log" 2>&1
rc=$?
set -e

stat() { grep -a "^stat::$1:" "$log" | awk '{s += $2} END {print s + 0}'; }
execs=$(stat number_of_executed_units)
rate=$(stat average_exec_per_sec)
new=$(stat new_units_added)
last=$(grep -aE '^#[0-9]+' "$log" | tail -n 1 || true)
cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
corp=$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$last")

if [[ $rc -ne 0 ]]; then
    artifact=$(sed -nE 's/.*Test unit written to ([^ ]+).*/\1/p' "$log" | tail -n 1)
    echo "----- $log (excerpt) -----"
    if grep -aq "panicked at" "$log"; then
        grep -a -m1 -A3 "panicked at" "$log"
    else
        grep -avE '^#[0-9]+' "$log" | tail -n 30
    fi
    echo "--------------------------"
    echo "== $target: CRASH after ${execs:-?} execs"
    if [[ -n $artifact ]]; then
        echo "== input: fuzz/${artifact#"$here"/}"
        echo "== replay: cargo run --manifest-path fuzz/Cargo.toml --example repro -- $target fuzz/${artifact#"$here"/}"
    fi
    exit 1
fi
echo "== $target: ok — ${execs} execs in ${secs}s (${rate}/s), cov ${cov:-?} edges, ${ft:-?} features, corpus ${corp:-?} (${new} new), no crash"
