#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine:
#   1. system and Python dependencies (scripts/install-deps.sh)
#   2. cargo build (the imapgate binary the Python tests run)
#   3. scripts/lint.sh: cargo fmt --check, cargo clippy --all-targets -D warnings, check-config
#      of the example and Kubernetes configurations, kubernetes-validate --strict on
#      deploy/kubernetes, systemd-analyze verify/security on deploy/systemd, hadolint
#   4. cargo nextest run --workspace --no-fail-fast (Rust unit + integration tests)
#   5. python3 -m pytest -q tests/python (real Dovecot + the proxy, over loopback)
#   6. scripts/fuzz-smoke.sh: every fuzz target for 60 s (FUZZ_SECONDS), two at a time
# Every step from 3 on runs even if an earlier one failed; exits non-zero on any failure.
# The time of each step is printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

if [ -d "$HOME/.cargo/bin" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi

step() { printf '\n==> %s\n' "$*"; }

suite_start=$SECONDS
times=()
failed=0
# timed NAME COMMAND...: runs a step, records its time and outcome; never stops the suite.
timed() {
    local name=$1 start=$SECONDS rc
    shift
    step "$name"
    "$@"
    rc=$?
    times+=("$(printf '%-22s %5ss  %s' "$name" $((SECONDS - start)) \
        "$([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)")")")
    if [ "$rc" -ne 0 ]; then failed=1; fi
    return 0
}

step "install dependencies"
start=$SECONDS
bash scripts/install-deps.sh || { echo "install-deps.sh failed" >&2; exit 1; }
times+=("$(printf '%-22s %5ss  %s' "install dependencies" $((SECONDS - start)) ok)")
# install-deps.sh installed promtool, curl and mbsync: tests must not skip for want of them.
export TEST_IMAPGATE_REQUIRE_PROMTOOL=1 TEST_IMAPGATE_REQUIRE_TOOLS=1

step "cargo build"
start=$SECONDS
cargo build || { echo "cargo build failed" >&2; exit 1; }
times+=("$(printf '%-22s %5ss  %s' "cargo build" $((SECONDS - start)) ok)")

# One imap process per session, two fds per proxied connection: give the tests room.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

timed "lint" bash scripts/lint.sh

nextest() {
    if command -v cargo-nextest >/dev/null 2>&1; then
        cargo nextest run --workspace --no-fail-fast
    else
        cargo test --workspace --no-fail-fast
    fi
}
timed "cargo nextest run" nextest

timed "pytest tests/python" python3 -m pytest -q tests/python

timed "fuzz smoke" bash scripts/fuzz-smoke.sh

printf '\n==> step times\n'
printf '  %s\n' "${times[@]}"
printf '  %-22s %5ss\n' "total" $((SECONDS - suite_start))

if [ "$failed" -ne 0 ]; then
    echo "test.sh: FAILED" >&2
    exit 1
fi
echo "test.sh: all passed"
