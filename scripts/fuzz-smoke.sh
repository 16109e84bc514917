#!/usr/bin/env bash
# Fuzz smoke test: every cargo-fuzz target in fuzz/ runs for FUZZ_SECONDS (60) on stable Rust
# (RUSTC_BOOTSTRAP=1, no sanitizer: -s none), FUZZ_JOBS targets at a time (default: one per
# core). A crash, a hang (one input over 25 s), an out-of-memory or a build failure fails it;
# libFuzzer's reproducer lands in fuzz/artifacts/TARGET/.
#   bash scripts/fuzz-smoke.sh
#   FUZZ_SECONDS=600 FUZZ_TARGETS="boundaries session_core" bash scripts/fuzz-smoke.sh
# Installs cargo-fuzz (cargo install --locked) when missing. The corpus grows in fuzz/corpus/;
# fuzz/seeds/TARGET (committed), where there is one, is read as a second corpus.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
if [ -d "$HOME/.cargo/bin" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi

seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-$(nproc)}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked || { echo "fuzz-smoke.sh: cannot install cargo-fuzz" >&2; exit 1; }
fi

cd fuzz || exit 1
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
if [ -z "$targets" ]; then
    echo "fuzz-smoke.sh: no fuzz targets" >&2
    exit 1
fi

start=$SECONDS
echo "building fuzz targets (release, -s none)"
if ! cargo fuzz build -s none; then
    echo "fuzz-smoke.sh: FAILED: cargo fuzz build" >&2
    exit 1
fi
echo "built in $((SECONDS - start)) s; running $(echo "$targets" | wc -w) targets for ${seconds} s each, $jobs at a time"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
run() {
    local t=$1 rc seeds=()
    # Committed seeds (fuzz/seeds/TARGET) start the search; the corpus grows in fuzz/corpus.
    mkdir -p "corpus/$t"
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    cargo fuzz run -s none "$t" "corpus/$t" "${seeds[@]}" -- -max_total_time="$seconds" -timeout=25 \
        -print_final_stats=1 >"$logs/$t.log" 2>&1
    rc=$?
    echo "$rc" >"$logs/$t.rc"
}
for t in $targets; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
    run "$t" &
done
wait

failed=()
for t in $targets; do
    rc=$(cat "$logs/$t.rc" 2>/dev/null || echo missing)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -1)
    if [ "$rc" = 0 ]; then
        echo "fuzz $t: ok, ${runs:-?} inputs in ${seconds} s, ${cov:-cov: ?}"
    else
        echo "fuzz $t: FAILED (exit $rc); the end of its log:" >&2
        tail -n 60 "$logs/$t.log" >&2
        failed+=("$t")
    fi
done
echo "fuzz smoke: $((SECONDS - start)) s in all"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz-smoke.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz-smoke.sh: all targets ran clean"
