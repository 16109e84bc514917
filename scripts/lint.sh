#!/usr/bin/env bash
# Static checks. Each one runs even when another failed; exits non-zero if any failed.
#   - cargo fmt --check (the crate, the fuzz workspace and the bench client benches/client)
#   - cargo clippy --all-targets -- -D warnings (the crate and benches/client)
#   - imapgate check-config on config/*.toml and on the Kubernetes ConfigMap's imapgate.toml
#   - deploy/kubernetes: kubernetes-validate --strict (schemas bundled with the package, offline;
#     it validates against the newest Kubernetes it bundles, 1.37 for kubernetes-validate 1.37.0),
#     and kustomization.yaml lists exactly the manifests beside it
#   - deploy/systemd/imapgate.service: systemd-analyze verify (on a copy whose ExecStart names
#     the binary built here, so a missing /usr/local/bin/imapgate is no error; any warning
#     fails) and systemd-analyze security (exposure at most 2.0); skipped without systemd-analyze
#   - deploy/docker/Dockerfile: hadolint (the Docker build itself is not run: no engine here)
# kubernetes-validate and hadolint come from scripts/install-deps.sh; rustfmt and clippy are
# added with rustup when missing.
#   bash scripts/lint.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
if [ -d "$HOME/.cargo/bin" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi

failed=()
check() {
    local name=$1 start=$SECONDS
    shift
    printf '\n--> lint: %s\n' "$name"
    if "$@"; then
        printf -- '--> lint: %s: ok (%ss)\n' "$name" $((SECONDS - start))
    else
        printf -- '--> lint: %s: FAILED (%ss)\n' "$name" $((SECONDS - start))
        failed+=("$name")
    fi
}

need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "$1 not found: run scripts/install-deps.sh" >&2
    return 1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The imapgate binary the config and unit checks use (test.sh has built it already).
imapgate=
binary() {
    if [ -z "$imapgate" ]; then
        cargo build --quiet --bin imapgate || return 1
        imapgate="$(cargo metadata --format-version 1 --no-deps |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/imapgate"
    fi
    [ -x "$imapgate" ]
}

components() {
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "adding ${missing[*]}"
        rustup component add "${missing[@]}"
    fi
}

fmt() {
    local rc=0
    cargo fmt --all --check || rc=1
    cargo fmt --check --manifest-path fuzz/Cargo.toml || rc=1
    cargo fmt --check --manifest-path benches/client/Cargo.toml || rc=1
    return $rc
}

clippy() {
    local rc=0
    cargo clippy --all-targets -- -D warnings || rc=1
    # The bench's load client (its own workspace and lock file).
    cargo clippy --manifest-path benches/client/Cargo.toml --all-targets -- -D warnings || rc=1
    return $rc
}

configs() {
    binary || return 1
    local rc=0 f v name clean_env=()
    # Only the file decides: no IMAPGATE_* variable from the caller's environment.
    for v in $(compgen -e); do
        case $v in IMAPGATE_*) clean_env+=(-u "$v") ;; esac
    done
    python3 - "$tmp/configmap.toml" <<'PY' || return 1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open("deploy/kubernetes/configmap.yaml")) if d]
(cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
open(sys.argv[1], "w").write(cm["data"]["imapgate.toml"])
PY
    for f in config/*.toml "$tmp/configmap.toml"; do
        name=$f
        [ "$f" = "$tmp/configmap.toml" ] && name="deploy/kubernetes/configmap.yaml (imapgate.toml)"
        if env "${clean_env[@]}" "$imapgate" check-config "$f" >"$tmp/check.out" 2>&1; then
            echo "$name: valid"
        else
            echo "$name: invalid" >&2
            cat "$tmp/check.out" >&2
            rc=1
        fi
    done
    return $rc
}

kubernetes() {
    need kubernetes-validate || return 1
    local rc=0 manifests
    manifests=$(find deploy/kubernetes -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)
    # shellcheck disable=SC2086
    kubernetes-validate --strict $manifests || rc=1
    python3 - <<'PY' || rc=1
import os, sys, yaml
k = yaml.safe_load(open("deploy/kubernetes/kustomization.yaml"))
listed = set(k.get("resources", []))
present = {f for f in os.listdir("deploy/kubernetes")
           if f.endswith(".yaml") and f != "kustomization.yaml"}
if listed != present:
    sys.exit(f"kustomization.yaml resources {sorted(listed)} != manifests {sorted(present)}")
print("kustomization.yaml lists every manifest")
PY
    return $rc
}

systemd_unit() {
    if ! command -v systemd-analyze >/dev/null 2>&1; then
        echo "skipped: no systemd-analyze on this machine"
        return 0
    fi
    binary || return 1
    local unit=deploy/systemd/imapgate.service rc=0
    mkdir -p "$tmp/systemd"
    # The same unit, with the binary installed where ExecStart expects it replaced by this one.
    sed "s#/usr/local/bin/imapgate#$imapgate#g" "$unit" >"$tmp/systemd/imapgate.service"
    if ! grep -q "^ExecStart=$imapgate serve" "$tmp/systemd/imapgate.service"; then
        echo "$unit: no ExecStart=/usr/local/bin/imapgate serve ..." >&2
        rc=1
    fi
    # verify reports unknown keys and bad values as warnings with exit status 0: any output fails.
    if ! systemd-analyze verify "$tmp/systemd/imapgate.service" >"$tmp/verify.out" 2>&1 ||
        [ -s "$tmp/verify.out" ]; then
        sed "s#$tmp/systemd/#$(dirname "$unit")/#g" "$tmp/verify.out" >&2
        rc=1
    else
        echo "$unit: systemd-analyze verify: no warnings"
    fi
    # Exposure on systemd's 0-100 scale (printed as 0.0-10.0); the unit rates 1.5 (systemd 252).
    if systemd-analyze security --offline=yes --threshold=20 \
        "$tmp/systemd/imapgate.service" >"$tmp/security.out" 2>&1; then
        grep 'Overall exposure' "$tmp/security.out"
    else
        grep -E '✗|Overall' "$tmp/security.out" >&2
        rc=1
    fi
    return $rc
}

dockerfile() {
    need hadolint || return 1
    hadolint deploy/docker/Dockerfile && echo "deploy/docker/Dockerfile: hadolint clean"
}

check "rustfmt and clippy present" components
check "cargo fmt --check" fmt
check "cargo clippy --all-targets -D warnings" clippy
check "imapgate check-config (config/, ConfigMap)" configs
check "kubernetes-validate --strict" kubernetes
check "systemd-analyze verify/security" systemd_unit
check "hadolint Dockerfile" dockerfile

if [ "${#failed[@]}" -gt 0 ]; then
    list=$(printf ', %s' "${failed[@]}")
    printf '\nlint.sh: FAILED: %s\n' "${list#, }" >&2
    exit 1
fi
echo "lint.sh: all checks passed"
