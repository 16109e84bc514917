#!/usr/bin/env bash
# The demo: a real Dovecot on loopback with seeded mailboxes, and imapgate in front of it with a
# generated certificate, ready for a mail client. Ctrl-C stops both.
#   bash scripts/demo.sh            (ports: IMAPS 127.0.0.1:9993, IMAP+STARTTLS 127.0.0.1:9143)
#   TLS_PORT=1993 PLAIN_PORT=1143 bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TLS_PORT=${TLS_PORT:-9993}
PLAIN_PORT=${PLAIN_PORT:-9143}

bash scripts/install-deps.sh
echo "building imapgate (release)..."
cargo build --release --quiet
BIN=target/release/imapgate

DEMO=$(mktemp -d /tmp/imapgate-demo.XXXXXX)
PROXY_PID=
cleanup() {
    [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null || true
    python3 scripts/dovecot.py stop "$DEMO/dovecot" >/dev/null 2>&1 || true
    echo "stopped; files left in $DEMO"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

INFO=$(python3 scripts/dovecot.py start "$DEMO/dovecot")
field() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(eval('d'+sys.argv[2]))" "$INFO" "$1"; }
UP_PORT=$(field "['imaps_port']")
UP_CA=$(field "['ca_file']")
ALICE_PW=$(field "['users']['alice']")

"$BIN" gen-cert --cert "$DEMO/cert.pem" --key "$DEMO/key.pem" localhost 127.0.0.1 >/dev/null
"$BIN" serve --upstream "127.0.0.1:$UP_PORT" --upstream-tls implicit --upstream-ca "$UP_CA" \
    --listen-tls "127.0.0.1:$TLS_PORT" --listen "127.0.0.1:$PLAIN_PORT" \
    --cert "$DEMO/cert.pem" --key "$DEMO/key.pem" >"$DEMO/listening.txt" 2>"$DEMO/imapgate.log" &
PROXY_PID=$!
for _ in $(seq 50); do grep -q plain "$DEMO/listening.txt" 2>/dev/null && break; sleep 0.1; done
if ! grep -q plain "$DEMO/listening.txt"; then cat "$DEMO/imapgate.log"; exit 1; fi

cat <<EOT

imapgate is running in front of a real Dovecot (upstream 127.0.0.1:$UP_PORT, verified TLS).
  IMAPS:            127.0.0.1:$TLS_PORT
  IMAP + STARTTLS:  127.0.0.1:$PLAIN_PORT
  certificate:      $DEMO/cert.pem (self-signed for localhost, 127.0.0.1; trust it in your client)
  users:            $(python3 -c "import json,sys; print(', '.join(f'{u} / {p!r}' for u,p in json.loads(sys.argv[1])['users'].items()))" "$INFO")
  proxy log:        $DEMO/imapgate.log

Try:
  curl --cacert $DEMO/cert.pem -u alice:$ALICE_PW 'imaps://127.0.0.1:$TLS_PORT/INBOX;UID=1'
  openssl s_client -quiet -CAfile $DEMO/cert.pem -connect 127.0.0.1:$TLS_PORT
  python3 -c "import imaplib,ssl; m=imaplib.IMAP4_SSL('127.0.0.1',$TLS_PORT,ssl_context=ssl.create_default_context(cafile='$DEMO/cert.pem')); print(m.login('alice','$ALICE_PW')); print(m.select('INBOX'))"

Ctrl-C to stop.
EOT
wait "$PROXY_PID"
