#!/usr/bin/env bash
# scripts/build-imaptest.sh: builds Dovecot's imaptest (the load generator of scripts/bench's
# `scale` section) from source against Debian's dovecot-dev, once, and prints the binary's path.
#
#   scripts/build-imaptest.sh          # prints e.g. /root/.cache/imapgate/imaptest-924f619/imaptest
#
# Debian has no imaptest package. imaptest's master follows Dovecot 2.4's API (str_begins with
# three arguments, io_stream_create_ssl_client with five); the last commit that builds against
# Dovecot 2.3 is 924f619 (2022-03-09). Debian 12's 2.3.19 carries a backported
# imap_parser_create() with a fourth argument (imap_parser_params, from the CVE-2024-23184 fix),
# so the three calls get a NULL added. The binary is cached under $IMAPTEST_CACHE
# (~/.cache/imapgate); the build takes ~30 s.
#
# Source: IMAPTEST_GIT (a git directory or URL; default: a local mirror if there is one, else
# https://github.com/dovecot/imaptest). Needs dovecot-dev, autoconf, automake, libtool, make, gcc
# (installed here with apt-get when missing and running as root).

set -euo pipefail

REV=924f619
CACHE=${IMAPTEST_CACHE:-$HOME/.cache/imapgate}
BIN=$CACHE/imaptest-$REV/imaptest
if [[ -x $BIN ]]; then
    echo "$BIN"
    exit 0
fi
log() { printf '[build-imaptest] %s\n' "$*" >&2; }

if [[ ! -e /usr/lib/dovecot/dovecot-config ]] || ! command -v autoreconf >/dev/null || ! command -v libtoolize >/dev/null; then
    if [[ $(id -u) != 0 ]]; then
        log "needs: apt-get install dovecot-dev autoconf automake libtool make gcc"
        exit 1
    fi
    log "installing dovecot-dev autoconf automake libtool"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q dovecot-dev autoconf automake libtool make gcc >&2
fi

SRC=${IMAPTEST_GIT:-}
if [[ -z $SRC ]]; then
    SRC=https://github.com/dovecot/imaptest
    [[ -d /work/.mirror/dovecot+imaptest/repo ]] && SRC=/work/.mirror/dovecot+imaptest/repo
fi
TMP=$(mktemp -d /tmp/imaptest-build.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
log "building imaptest $REV from $SRC in $TMP"
if [[ -d $SRC ]]; then
    git -C "$SRC" archive "$REV" | tar -x -C "$TMP"
else
    git clone -q "$SRC" "$TMP/git" >&2
    git -C "$TMP/git" archive "$REV" | tar -x -C "$TMP"
fi
cd "$TMP"
echo "0.0.0-$REV" >version
sed -i 's/imap_parser_create(\(.*\), (size_t)-1);/imap_parser_create(\1, (size_t)-1, NULL);/' src/*.c
VERSION=0.0.0 autoreconf -i >build.log 2>&1 || { tail -20 build.log >&2; exit 1; }
LDFLAGS="-Wl,-rpath,/usr/lib/dovecot" ./configure --with-dovecot=/usr/lib/dovecot >>build.log 2>&1 || { tail -20 build.log >&2; exit 1; }
make -j"$(nproc)" >>build.log 2>&1 || { grep -E 'error' build.log | head -20 >&2; exit 1; }
mkdir -p "$(dirname "$BIN")"
# A libtool wrapper or the binary itself, depending on how libdovecot was linked.
if [[ -x src/.libs/imaptest ]]; then cp src/.libs/imaptest "$BIN.tmp"; else cp src/imaptest "$BIN.tmp"; fi
mv "$BIN.tmp" "$BIN"
ldd "$BIN" | grep -q "not found" && { log "unresolved libraries:"; ldd "$BIN" >&2; rm -f "$BIN"; exit 1; }
log "cached: $BIN"
echo "$BIN"
