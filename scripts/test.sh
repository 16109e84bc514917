#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine:
#   1. system and Python dependencies (scripts/install-deps.sh)
#   2. cargo build (the imapgate binary the Python tests run)
#   3. cargo nextest run --workspace --no-fail-fast (Rust unit + integration tests)
#   4. python3 -m pytest -q tests/python (real Dovecot + the proxy, over loopback)
# Every step runs even if an earlier test step failed; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -d "$HOME/.cargo/bin" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi

step() { printf '\n==> %s\n' "$*"; }

step "install dependencies"
bash scripts/install-deps.sh || { echo "install-deps.sh failed" >&2; exit 1; }
# install-deps.sh installed promtool: the metrics tests must not skip their lint.
export TEST_IMAPGATE_REQUIRE_PROMTOOL=1

step "cargo build"
cargo build || { echo "cargo build failed" >&2; exit 1; }

# One imap process per session, two fds per proxied connection: give the tests room.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

failed=0

step "cargo nextest run"
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast || failed=1
else
    cargo test --workspace --no-fail-fast || failed=1
fi

step "pytest tests/python"
python3 -m pytest -q tests/python; rc=$?
if [ "$rc" -ne 0 ]; then failed=1; fi

if [ "$failed" -ne 0 ]; then
    echo "test.sh: FAILED" >&2
    exit 1
fi
echo "test.sh: all passed"
