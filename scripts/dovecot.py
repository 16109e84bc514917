#!/usr/bin/env python3
"""Run a real, self-contained Dovecot 2.3 IMAP server on loopback for tests.

Python 3 standard library only. Usable as a command and as a module.

Command line
------------
    python3 scripts/dovecot.py start DIR [--users N]
    python3 scripts/dovecot.py stop DIR

``start`` creates a fresh Dovecot instance in DIR (DIR is created if needed;
previous instance files in it are replaced), seeds every user's mailboxes,
starts Dovecot in the background, waits until both listeners accept
connections and send their greeting, and prints exactly one JSON line on
stdout, then exits 0 (Dovecot keeps running)::

    {"host":"127.0.0.1","imap_port":N,"imaps_port":M,"ca_file":"/abs/DIR/ssl/cert.pem",
     "pid_file":"/abs/.../master.pid","dir":"/abs/DIR",
     "users":{"alice":"alice-pass-1","bob":"bob-pass-2","carol":"carol pass 3",
              "user1":"user1-pass",...}}

- ``imap_port``: plain IMAP (STARTTLS offered; plaintext LOGIN allowed).
- ``imaps_port``: implicit TLS.
- ``ca_file``: the self-signed server certificate (PEM; SANs DNS:localhost and
  IP:127.0.0.1). Use it as the trust anchor (``ssl.create_default_context(
  cafile=ca_file)`` / ``curl --cacert``).
- ``users``: user name -> password. Always alice, bob, carol; plus user1..userN
  with ``--users N``. Passwords are fixed strings (carol's contains a space).
The same JSON is also written to DIR/instance.json.
On failure it prints the tail of Dovecot's log to stderr and exits non-zero.

``stop`` reads the pid file, sends SIGTERM to the Dovecot master (never kills by
process name), waits until it is gone (SIGKILL after 15 s), exits 0. Stopping a
DIR whose Dovecot is not running is not an error. Dovecot's master takes ~1.1 s
to exit after SIGTERM. (PID 1 of this sandbox does not reap orphans, so the
exited master may linger as a zombie: that counts as gone.)

Timing here (2 cores): start ~0.45 s with the 3 base users, ~2.6 s with
--users 100 (the warm-up logs every user in); stop ~1.2 s.

As a module
-----------
    import dovecot
    info = dovecot.start("/tmp/x", users=0)   # same dict as the JSON above
    # keyword arguments: warm_up=False skips the warm-up logins; auth_mechanisms,
    # passdb_extra, passdb_mechanisms, extra_config extend the config (oauth2);
    # cert=(cert.pem, key.pem) serves that pair instead of a generated one
    dovecot.stop("/tmp/x")
    with dovecot.running("/tmp/x") as info: ...

``MAILBOXES`` maps each seeded mailbox name (Unicode) to its message count, and
``MAILBOX_WIRE_NAMES`` to the name as sent on the wire (modified UTF-7).
``message_bytes(mailbox, i)`` returns the exact stored bytes (LF line endings,
as Dovecot stores them; IMAP returns them with CRLF) of the i-th message (1-based).

Ports are never fixed: free ports are picked by binding 127.0.0.1:0, and start
retries with new ports when Dovecot cannot bind, so many instances can run in
parallel.

Layout of DIR
-------------
    dovecot.conf   the whole config (no /etc/dovecot files are read)
    passwd         passwd-file for passdb and userdb ({PLAIN} passwords)
    ssl/           cert.pem, key.pem (EC P-256, self-signed end-entity cert)
    home/USER/Maildir   the user's maildir (Maildir++ layout, "." separator)
    seed/          the seeded message files (hard-linked into every maildir)
    state/         Dovecot state_dir
    log/dovecot.log     every Dovecot log line (also errors; there is no syslog)
    run/           base_dir (master.pid, sockets). If DIR is long, base_dir is
                   /tmp/dcv-<hash of DIR>/run instead (unix socket paths are
                   limited to 108 bytes); pid_file in the JSON always tells where.
Mail processes run as the unprivileged "mail" user (Dovecot refuses mail access as
root and passwd-file refuses uid 0), so maildirs are owned by it. If that user
cannot reach DIR (e.g. pytest's 0700 tmp dirs), home/ and seed/ are put in
/tmp/dcv-<hash of DIR>/ and DIR/home is a symlink to it; stop removes that dir.

Seeded content (identical bytes for every user and every run)
--------------------------------------------------------------
INBOX has 11 messages: plain text; multipart/alternative text+HTML; multipart/mixed
with a small PDF-like attachment; one with a 5 MiB attachment (base64); RFC 2047
UTF-8 encoded-word Subject/From with an 8-bit UTF-8 body; very long folded header
lines; quoted-printable reply; many addresses / group syntax; a forwarded
message/rfc822; a draft; an answered message. Some carry \\Seen, \\Flagged,
\\Answered, \\Draft. UIDVALIDITY and UIDs are fixed (uid n = n-th message).
Archive, Sent, Trash, "Folder With Spaces" and "Entwürfe" (wire: Entw&APw-rfe)
hold 2-3 small messages each. When start returns, every user's mailboxes have
been opened once (indexes built, \\Recent consumed, CONDSTORE modseqs on), so
any two later sessions see the same state and byte-identical responses (except
Dovecot's "(0.001 + 0.000 secs)" timing text in tagged OKs). INTERNALDATEs are
fixed; Dovecot runs with TZ=UTC. mailbox_list_index = no: with the list index,
LIST adds \\UnMarked to a mailbox depending on timing.

Tuning (for ~2,200 concurrent sessions of one user from 127.0.0.1)
----------------------------------------------------------------
Post-login capabilities include COMPRESS=DEFLATE (imap_zlib plugin).
mail_fsync = never; imap process_limit 2600 (one process per session);
imap-login in high-performance mode (service_count = 0, 2 processes, client_limit
4000 each); mail_max_userip_connections 5000; auth penalty off (anvil-auth-penalty
mode 0) and auth_failure_delay = 0; auth cache off; RLIMIT_NOFILE raised to the
hard limit; as root, fs.inotify.max_user_instances is raised to >= 8192 (best
effort) so that every IDLE session gets inotify (otherwise Dovecot falls back to
polling every mailbox_idle_check_interval = 5 s).
auth_mechanisms = plain login; the passdb block is marked so an oauth2 passdb can
be added in front of it later (see passdb_extra / auth_mechanisms arguments).
"""

import argparse
import base64
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from contextlib import contextmanager

HOST = "127.0.0.1"

BASE_USERS = {
    "alice": "alice-pass-1",
    "bob": "bob-pass-2",
    "carol": "carol pass 3",
}

UIDVALIDITY_BASE = 1700000000
# Fixed INTERNALDATE base: 2024-03-01 09:00:00 UTC
DATE_BASE = 1709283600

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


# ---------------------------------------------------------------------------
# Deterministic message corpus
# ---------------------------------------------------------------------------

def _det_bytes(label, n):
    """n deterministic pseudo-random bytes."""
    return hashlib.shake_256(label.encode()).digest(n)


def _b64_lines(data):
    enc = base64.b64encode(data)
    return b"\n".join(enc[i:i + 76] for i in range(0, len(enc), 76))


def _date_hdr(i):
    t = time.gmtime(DATE_BASE + i * 3600)
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", t).encode()


def _hdrs(i, frm, to, subject, extra=b""):
    return (
        b"Return-Path: <" + frm.split(b"<")[-1].rstrip(b">") + b">\n"
        b"Date: " + _date_hdr(i) + b"\n"
        b"From: " + frm + b"\n"
        b"To: " + to + b"\n"
        b"Subject: " + subject + b"\n"
        b"Message-ID: <seed-" + str(i).encode() + b"@imapgate.test>\n"
        b"MIME-Version: 1.0\n" + extra
    )


def _inbox_messages():
    """List of (flags, bytes) for INBOX, LF line endings."""
    A = b"Alice Example <alice@example.org>"
    B = b"Bob Builder <bob@example.com>"
    msgs = []

    # 1: plain text
    msgs.append(("S", _hdrs(1, B, A, b"Plain text message",
                            b"Content-Type: text/plain; charset=us-ascii\n"
                            b"Content-Transfer-Encoding: 7bit\n") + b"\n" +
                 b"Hello Alice,\n\nthis is a plain text message.\nIt has a few lines.\n\n"
                 b"-- \nBob\n"))

    # 2: multipart/alternative text + html
    msgs.append(("FS", _hdrs(2, B, A, b"Alternative text and HTML",
                             b"Content-Type: multipart/alternative; boundary=\"alt-boundary-2\"\n") +
                 b"\nThis is a multi-part message in MIME format.\n"
                 b"--alt-boundary-2\n"
                 b"Content-Type: text/plain; charset=utf-8\n"
                 b"Content-Transfer-Encoding: 7bit\n\n"
                 b"Meeting at 10:00 in room 4.\n\nAgenda:\n * budget\n * roadmap\n\n"
                 b"--alt-boundary-2\n"
                 b"Content-Type: text/html; charset=utf-8\n"
                 b"Content-Transfer-Encoding: 7bit\n\n"
                 b"<html><head><title>Meeting</title></head><body>\n"
                 b"<p>Meeting at <b>10:00</b> in room 4.</p>\n"
                 b"<p>Agenda:</p><ul><li>budget</li><li>roadmap</li></ul>\n"
                 b"</body></html>\n\n"
                 b"--alt-boundary-2--\n"))

    # 3: multipart/mixed with a small PDF-like attachment
    pdf = (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
           + _det_bytes("pdf-3", 3000) + b"\n%%EOF\n")
    msgs.append(("", _hdrs(3, A, B, b"Quarterly report (PDF attached)",
                           b"Content-Type: multipart/mixed; boundary=\"mixed-3\"\n") +
                 b"\n--mixed-3\n"
                 b"Content-Type: text/plain; charset=us-ascii\n\n"
                 b"Please find the report attached.\n\n"
                 b"--mixed-3\n"
                 b"Content-Type: application/pdf; name=\"report-q1.pdf\"\n"
                 b"Content-Disposition: attachment; filename=\"report-q1.pdf\"\n"
                 b"Content-Transfer-Encoding: base64\n\n" + _b64_lines(pdf) + b"\n"
                 b"--mixed-3--\n"))

    # 4: 5 MiB attachment
    big = _det_bytes("big-4", 5 * 1024 * 1024)
    msgs.append(("S", _hdrs(4, B, A, b"Large attachment (5 MiB)",
                            b"Content-Type: multipart/mixed; boundary=\"mixed-4\"\n") +
                 b"\n--mixed-4\n"
                 b"Content-Type: text/plain; charset=us-ascii\n\n"
                 b"The disk image is attached.\n\n"
                 b"--mixed-4\n"
                 b"Content-Type: application/octet-stream; name=\"disk.img\"\n"
                 b"Content-Disposition: attachment; filename=\"disk.img\"\n"
                 b"Content-Transfer-Encoding: base64\n\n" + _b64_lines(big) + b"\n"
                 b"--mixed-4--\n"))

    # 5: RFC 2047 headers + 8-bit UTF-8 body
    subj = "Grüße aus München – 東京 ✓".encode("utf-8")
    msgs.append(("", _hdrs(
        5,
        b"=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>",
        b"=?UTF-8?B?" + base64.b64encode("Zoë Ærøskøbing".encode()) + b"?= <zoe@example.dk>",
        b"=?UTF-8?B?" + base64.b64encode(subj) + b"?=",
        b"Content-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: 8bit\n") + b"\n" +
        "Hallo Zoë,\n\nviele Grüße aus München! Straße, Äpfel, Öl, Übermut.\n"
        "日本語のテキスト。Ελληνικά. Русский текст. Emoji: 📬✉️\n".encode("utf-8")))

    # 6: very long header lines, folded
    refs = b"\n ".join(b"<ref-%03d.long-thread@lists.example.net>" % k for k in range(40))
    long_subj = (b"This is a very long subject line that goes on and on to exercise header\n"
                 b" folding in IMAP clients and servers; it continues here with more words\n"
                 b" and even more words until it is well beyond the usual seventy-eight\n"
                 b" character recommendation of RFC 5322 section 2.1.1")
    x_long = b"X-Very-Long: " + b" ".join(b"token%04d" % k for k in range(120))  # unfolded ~1.2 kB
    msgs.append(("S", _hdrs(6, b"Mailing List <list@lists.example.net>", A, long_subj,
                            b"References: " + refs + b"\n"
                            b"In-Reply-To: <ref-039.long-thread@lists.example.net>\n"
                            b"List-Id: Example discussion list <discuss.lists.example.net>\n"
                            + x_long + b"\n"
                            b"Received: from mx1.example.net (mx1.example.net [192.0.2.10])\n"
                            b"\tby mail.example.org (Postfix) with ESMTPS id 4F2A1C0123\n"
                            b"\tfor <alice@example.org>; Fri, 01 Mar 2024 14:00:00 +0000 (UTC)\n"
                            b"Content-Type: text/plain; charset=us-ascii\n") + b"\n" +
                 b"A message with very long, folded header lines.\n"))

    # 7: flagged, not seen
    msgs.append(("F", _hdrs(7, b"Carol <carol@example.com>", A, b"Important: flagged item",
                            b"Content-Type: text/plain; charset=us-ascii\n") + b"\n" +
                 b"Please do not forget the deadline on Friday.\n"))

    # 8: quoted-printable reply
    msgs.append(("RS", _hdrs(8, A, B, b"Re: Plain text message",
                             b"In-Reply-To: <seed-1@imapgate.test>\n"
                             b"References: <seed-1@imapgate.test>\n"
                             b"Content-Type: text/plain; charset=utf-8\n"
                             b"Content-Transfer-Encoding: quoted-printable\n") + b"\n" +
                 b"Hi Bob,\n\nthanks =E2=80=94 a long line that is wrapped by quoted-printable soft li=\n"
                 b"ne breaks so that it stays under 76 characters per encoded line.\n\n"
                 b"> Hello Alice,\n> this is a plain text message.\n"))

    # 9: many addresses, group syntax
    msgs.append(("S", _hdrs(9, B,
                            b"undisclosed-recipients:;",
                            b"Addresses galore",
                            b"Cc: \"Doe, John\" <john.doe@example.com>, jane@example.com,\n"
                            b" Team: alice@example.org, carol@example.com;\n"
                            b"Reply-To: replies@example.com\n"
                            b"Sender: Bob Builder <bob@example.com>\n"
                            b"Content-Type: text/plain; charset=us-ascii\n") + b"\n" +
                 b"Many addresses in the envelope.\n"))

    # 10: forwarded message/rfc822
    inner = (b"From: Dave <dave@example.net>\nTo: Bob Builder <bob@example.com>\n"
             b"Subject: Original message\nDate: Thu, 29 Feb 2024 12:00:00 +0000\n"
             b"Message-ID: <orig-10@example.net>\nMIME-Version: 1.0\n"
             b"Content-Type: multipart/alternative; boundary=\"inner-10\"\n\n"
             b"--inner-10\nContent-Type: text/plain; charset=us-ascii\n\nOriginal text.\n\n"
             b"--inner-10\nContent-Type: text/html; charset=us-ascii\n\n<p>Original text.</p>\n\n"
             b"--inner-10--\n")
    msgs.append(("", _hdrs(10, B, A, b"Fwd: Original message",
                           b"Content-Type: multipart/mixed; boundary=\"mixed-10\"\n") +
                 b"\n--mixed-10\nContent-Type: text/plain; charset=us-ascii\n\n"
                 b"See the forwarded message below.\n\n"
                 b"--mixed-10\nContent-Type: message/rfc822\n"
                 b"Content-Disposition: inline\n\n" + inner + b"\n--mixed-10--\n"))

    # 11: draft
    msgs.append(("DS", _hdrs(11, A, b"Bob Builder <bob@example.com>", b"Draft: unfinished",
                             b"Content-Type: text/plain; charset=us-ascii\n") + b"\n" +
                 b"This draft is not finished yet.\n"))
    return msgs


def _small_messages(folder, count, offset):
    out = []
    for k in range(1, count + 1):
        i = offset + k
        subj = ("%s message %d" % (folder, k)).encode("utf-8")
        if any(ord(c) > 127 for c in folder):
            subj = b"=?UTF-8?B?" + base64.b64encode(subj) + b"?="
        body = ("Message %d in folder %s.\n" % (k, folder)).encode("utf-8")
        cte = b"8bit" if any(b > 127 for b in body) else b"7bit"
        out.append(("S" if k == 1 else "",
                    _hdrs(i, b"Alice Example <alice@example.org>",
                          b"Bob Builder <bob@example.com>", subj,
                          b"Content-Type: text/plain; charset=utf-8\n"
                          b"Content-Transfer-Encoding: " + cte + b"\n") + b"\n" + body))
    return out


def _mutf7(name):
    """Encode a mailbox name in IMAP modified UTF-7 (RFC 3501 5.1.3)."""
    out, buf = [], []

    def flush():
        if buf:
            b = base64.b64encode("".join(buf).encode("utf-16-be")).rstrip(b"=")
            out.append("&" + b.decode().replace("/", ",") + "-")
            buf.clear()
    for c in name:
        if 0x20 <= ord(c) <= 0x7E:
            flush()
            out.append("&-" if c == "&" else c)
        else:
            buf.append(c)
    flush()
    return "".join(out)


_FOLDERS = [("Archive", 3), ("Sent", 2), ("Trash", 2), ("Folder With Spaces", 2),
            ("Entwürfe", 2)]


def _corpus():
    boxes = {"INBOX": _inbox_messages()}
    off = 100
    for name, n in _FOLDERS:
        boxes[name] = _small_messages(name, n, off)
        off += 10
    return boxes


_CORPUS = None


def corpus():
    """{mailbox: [(maildir_flags, bytes), ...]} (cached)."""
    global _CORPUS
    if _CORPUS is None:
        _CORPUS = _corpus()
    return _CORPUS


MAILBOXES = {"INBOX": 11}
MAILBOXES.update({name: n for name, n in _FOLDERS})
MAILBOX_WIRE_NAMES = {name: _mutf7(name) for name in MAILBOXES}


def message_bytes(mailbox, i):
    return corpus()[mailbox][i - 1][1]


# ---------------------------------------------------------------------------
# Instance files
# ---------------------------------------------------------------------------

def _users(n):
    users = dict(BASE_USERS)
    for k in range(1, n + 1):
        users["user%d" % k] = "user%d-pass" % k
    return users


def _short_dir(d):
    return "/tmp/dcv-" + hashlib.sha1(d.encode()).hexdigest()[:12]


def _base_dir(d):
    run = os.path.join(d, "run")
    # Longest socket below base_dir is about "login/imap-urlauth-worker" and
    # sun_path holds 107 bytes: keep base_dir short.
    if len(run) <= 60:
        return run
    return os.path.join(_short_dir(d), "run")


def _mail_owner():
    """(uid, gid) that mail processes run as: Dovecot refuses mail access as root."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    import pwd
    for name in ("mail", "nobody"):
        try:
            pw = pwd.getpwnam(name)
            return pw.pw_uid, pw.pw_gid
        except KeyError:
            pass
    raise RuntimeError("no unprivileged user (mail, nobody) to own the maildirs")


def _reachable(path, uid, gid):
    """Can (uid, gid) traverse every directory down to path (which may not exist yet)?"""
    if os.getuid() != 0:
        return True
    p = path
    while True:
        if os.path.exists(p):
            st = os.stat(p)
            if st.st_uid == uid:
                ok = st.st_mode & 0o100
            elif st.st_gid == gid:
                ok = st.st_mode & 0o010
            else:
                ok = st.st_mode & 0o001
            if not ok:
                return False
        parent = os.path.dirname(p)
        if parent == p:
            return True
        p = parent


def _free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


CERT_CONFIG = """\
[req]
distinguished_name = dn
x509_extensions = ext
prompt = no
[dn]
CN = localhost
[ext]
subjectAltName = DNS:localhost,IP:127.0.0.1
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
"""


def _make_cert(sdir, given=None):
    """Self-signed end-entity cert (CA:FALSE: plain rustls/webpki rejects a CA cert used as a
    server cert with CaUsedAsEndEntity; OpenSSL, curl and rustls all accept this one
    as its own trust anchor). `given` = (cert, key) files are copied instead; the cert must
    name IP:127.0.0.1 (start checks the TLS listener with it as the CA)."""
    os.makedirs(sdir, exist_ok=True)
    cert, key = os.path.join(sdir, "cert.pem"), os.path.join(sdir, "key.pem")
    if given:
        shutil.copyfile(given[0], cert)
        shutil.copyfile(given[1], key)
        os.chmod(key, 0o600)
        return cert, key
    cnf = os.path.join(sdir, "openssl.cnf")
    with open(cnf, "w") as f:
        f.write(CERT_CONFIG)
    subprocess.run(
        ["openssl", "req", "-x509", "-config", cnf, "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
         "-keyout", key, "-out", cert],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.chmod(key, 0o600)
    return cert, key


def _write_seed(d):
    """Write every message once into DIR/seed; return {mailbox: [(flags, path, mtime, size, vsize)]}."""
    seed = os.path.join(d, "seed")
    os.makedirs(seed, exist_ok=True)
    out = {}
    for bi, (box, msgs) in enumerate(corpus().items()):
        lst = []
        for i, (flags, data) in enumerate(msgs, 1):
            p = os.path.join(seed, "%02d-%02d.eml" % (bi, i))
            with open(p, "wb") as f:
                f.write(data)
            mtime = DATE_BASE + bi * 86400 + i * 60
            os.utime(p, (mtime, mtime))
            lst.append((flags, p, mtime, len(data), len(data) + data.count(b"\n")))
        out[box] = lst
    return out


def _write_maildir(home, seed, uid, gid):
    md = os.path.join(home, "Maildir")
    for bi, (box, msgs) in enumerate(seed.items()):
        path = md if box == "INBOX" else os.path.join(md, "." + _mutf7(box))
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(path, sub), exist_ok=True)
        lines = []
        for i, (flags, src, mtime, size, vsize) in enumerate(msgs, 1):
            base = "%d.M%dP%d.imapgate,S=%d,W=%d" % (mtime, i, bi, size, vsize)
            os.link(src, os.path.join(path, "cur", base + ":2," + flags))
            lines.append("%d :%s" % (i, base))
        guid = hashlib.md5(box.encode()).hexdigest()
        with open(os.path.join(path, "dovecot-uidlist"), "w") as f:
            f.write("3 V%d N%d G%s\n" % (UIDVALIDITY_BASE + bi, len(msgs) + 1, guid))
            f.write("\n".join(lines) + "\n")
        if box != "INBOX":
            open(os.path.join(path, "maildirfolder"), "w").close()
    with open(os.path.join(md, "subscriptions"), "w") as f:
        f.write("V\t2\n\n" + "".join(b + "\n" for b in seed if b != "INBOX"))
    if os.getuid() == 0 and uid != 0:
        for root, dirs, files in os.walk(home):
            os.lchown(root, uid, gid)
            for n in files:
                os.lchown(os.path.join(root, n), uid, gid)


CONFIG = """\
# Generated by scripts/dovecot.py -- a self-contained test instance.
base_dir = {base_dir}
state_dir = {dir}/state
instance_name = imapgate-{tag}
protocols = imap
listen = 127.0.0.1
log_path = {dir}/log/dovecot.log
info_log_path = {dir}/log/dovecot.log
debug_log_path = {dir}/log/dovecot.log
login_greeting = Dovecot ready.
shutdown_clients = yes

ssl = yes
ssl_cert = <{dir}/ssl/cert.pem
ssl_key = <{dir}/ssl/key.pem
disable_plaintext_auth = no

auth_mechanisms = {auth_mechanisms}
auth_failure_delay = 0
auth_cache_size = 0
auth_verbose = yes
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_location = maildir:~/Maildir
mail_fsync = never
# No list index: with it, LIST's \\UnMarked flags depend on timing.
mailbox_list_index = no
mailbox_idle_check_interval = 5 secs
# Log the ID a client (the proxy) sends after login: tests check which fields arrive.
imap_id_log = *

namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \\Sent
  }}
  mailbox Trash {{
    special_use = \\Trash
  }}
  mailbox Archive {{
    special_use = \\Archive
  }}
}}

protocol imap {{
  mail_max_userip_connections = 5000
  # COMPRESS=DEFLATE, as many real servers offer (the proxy must hide it)
  mail_plugins = $mail_plugins imap_zlib
}}

{passdb_extra}
# password passdb (an oauth2 passdb can be put in front of it: passdb_extra)
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
{passdb_mechanisms}}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dir}/passwd
}}

default_process_limit = 3000
default_client_limit = 10000
default_vsz_limit = 1G

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = 2
  process_limit = 4
  client_limit = 4000
}}
service imap {{
  process_limit = 2600
  client_limit = 1
}}
service anvil {{
  client_limit = 10000
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  client_limit = 10000
{auth_user}}}
service stats {{
  client_limit = 10000
}}
{extra}"""


def _write_config(d, base_dir, imap_port, imaps_port, uid, gid, auth_mechanisms="plain login",
                  passdb_extra="", passdb_mechanisms="", extra=""):
    conf = CONFIG.format(
        dir=d, base_dir=base_dir, tag=hashlib.sha1(d.encode()).hexdigest()[:8],
        imap_port=imap_port, imaps_port=imaps_port, uid=uid, gid=gid,
        auth_mechanisms=auth_mechanisms, passdb_extra=passdb_extra,
        passdb_mechanisms=("  mechanisms = %s\n" % passdb_mechanisms) if passdb_mechanisms else "",
        extra=extra,
        # The auth process runs as the "dovecot" user by default and could not
        # read DIR/passwd below a private (0700) temp dir.
        auth_user="  user = root\n" if os.getuid() == 0 else "")
    p = os.path.join(d, "dovecot.conf")
    with open(p, "w") as f:
        f.write(conf)
    return p


def _raise_limits():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    if os.getuid() == 0:
        p = "/proc/sys/fs/inotify/max_user_instances"
        try:
            with open(p) as f:
                cur = int(f.read())
            if cur < 8192:
                with open(p, "w") as f:
                    f.write("8192\n")
        except (OSError, ValueError):
            pass


def _log_tail(d, n=40):
    out = []
    for name in ("startup.log", "dovecot.log"):
        p = os.path.join(d, "log", name)
        try:
            with open(p, errors="replace") as f:
                lines = f.readlines()[-n:]
        except OSError:
            continue
        if lines:
            out.append("==> %s <==\n%s" % (p, "".join(lines)))
    return "\n".join(out)


def _read_greeting(port, ca_file, tls, timeout):
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        if tls:
            ctx = ssl.create_default_context(cafile=ca_file)
            s = ctx.wrap_socket(s, server_hostname=HOST)
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise OSError("connection closed before greeting")
            buf += chunk
        if not buf.startswith(b"* OK"):
            raise OSError("unexpected greeting %r" % buf)
        return buf
    finally:
        s.close()


def _wait_ready(info, timeout=20.0):
    deadline = time.monotonic() + timeout
    last = None
    for port, tls in ((info["imap_port"], False), (info["imaps_port"], True)):
        while True:
            try:
                _read_greeting(port, info["ca_file"], tls, 5.0)
                break
            except (OSError, ssl.SSLError) as e:
                last = e
                if time.monotonic() > deadline:
                    raise RuntimeError("Dovecot did not answer on port %d: %s" % (port, last))
                time.sleep(0.05)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A daemon whose parent does not reap it stays a zombie: count that as gone.
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _read_pid(pid_file):
    try:
        with open(pid_file) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _warm_up(info):
    """Open every mailbox of every user once, the way clients and tests will.

    Dovecot changes some state on first use: it builds indexes, hands out
    \\Recent once, and starts tracking modseqs when a CONDSTORE client first
    selects a mailbox (HIGHESTMODSEQ shows up in later SELECTs). Doing that here
    means later sessions see byte-identical responses. (The mailbox list index
    is off in the config: with it on, LIST adds \\UnMarked to a mailbox once a
    STATUS ran ~2 s after the mailbox's index last changed -- timing-dependent.)
    """
    import imaplib
    boxes = ['"%s"' % MAILBOX_WIRE_NAMES[b] for b in MAILBOXES]
    for user, pw in info["users"].items():
        c = imaplib.IMAP4(HOST, info["imap_port"], timeout=30)
        try:
            c.login(user, pw)
            for b in boxes:
                typ, data = c.select(b)
                if typ != "OK":
                    raise RuntimeError("warm-up SELECT %s for %s failed: %r" % (b, user, data))
            c.unselect()
            c.xatom("ENABLE", "CONDSTORE")
            for b in boxes:
                c.select(b)
            c.logout()
        finally:
            try:
                c.shutdown()
            except OSError:
                pass


def start(directory, users=0, auth_mechanisms="plain login", passdb_extra="",
          passdb_mechanisms="", extra_config="", warm_up=True, attempts=6, cert=None):
    """Create, seed and start an instance in `directory`. Returns the info dict.

    auth_mechanisms / passdb_extra (config text placed before the password passdb) /
    passdb_mechanisms (restrict the password passdb, e.g. "plain login") / extra_config
    let callers extend the config, e.g. with an oauth2 passdb. cert = (cert file, key file)
    makes Dovecot serve that certificate (ca_file then names the copy of it).
    """
    d = os.path.abspath(directory)
    base_dir = _base_dir(d)
    pid_file = os.path.join(base_dir, "master.pid")
    old = _read_pid(pid_file)
    if old and _pid_alive(old):
        raise RuntimeError("a Dovecot (pid %d) is already running for %s; stop it first" % (old, d))
    os.makedirs(d, exist_ok=True)
    for sub in ("home", "seed", "state", "log", "ssl"):
        p = os.path.join(d, sub)
        if os.path.islink(p):
            os.unlink(p)
        else:
            shutil.rmtree(p, ignore_errors=True)
    shutil.rmtree(base_dir, ignore_errors=True)
    for sub in ("state", "log"):
        os.makedirs(os.path.join(d, sub))
    # Mail processes run as an unprivileged user (first/last_valid_uid allow
    # exactly that uid). It must be able to reach the maildirs: when DIR lies
    # below a private directory (e.g. pytest's 0700 tmp dirs), the maildirs and
    # seed files go to /tmp/dcv-<hash of DIR>/ and DIR/home is a symlink to them.
    uid, gid = _mail_owner()
    os.chmod(d, 0o755)
    data_root = d
    if not _reachable(d, uid, gid):
        data_root = _short_dir(d)
        os.makedirs(data_root, exist_ok=True)
        os.chmod(data_root, 0o755)
        for sub in ("home", "seed"):
            shutil.rmtree(os.path.join(data_root, sub), ignore_errors=True)
        os.symlink(os.path.join(data_root, "home"), os.path.join(d, "home"))
    user_pw = _users(users)
    cert, _ = _make_cert(os.path.join(d, "ssl"), cert)
    seed = _write_seed(data_root)
    with open(os.path.join(d, "passwd"), "w") as f:
        for u, pw in user_pw.items():
            home = os.path.join(data_root, "home", u)
            _write_maildir(home, seed, uid, gid)
            f.write("%s:{PLAIN}%s:%d:%d::%s::\n" % (u, pw, uid, gid, home))
    os.chmod(os.path.join(d, "passwd"), 0o600)
    _raise_limits()

    env = dict(os.environ)
    env["TZ"] = "UTC"
    last_err = ""
    for attempt in range(attempts):
        imap_port = _free_port()
        imaps_port = _free_port()
        if imaps_port == imap_port:
            continue
        conf = _write_config(d, base_dir, imap_port, imaps_port, uid, gid, auth_mechanisms,
                             passdb_extra, passdb_mechanisms, extra_config)
        info = {"host": HOST, "imap_port": imap_port, "imaps_port": imaps_port,
                "ca_file": cert, "pid_file": pid_file, "dir": d, "users": user_pw}
        logf = os.path.join(d, "log", "startup.log")
        with open(logf, "ab") as lf:
            r = subprocess.run([DOVECOT, "-c", conf], stdin=subprocess.DEVNULL,
                               stdout=lf, stderr=lf, env=env, close_fds=True)
        if r.returncode != 0:
            last_err = _log_tail(d)
            if "Address already in use" in last_err:
                # Another process took the port between our probe and Dovecot's bind.
                _stop_pid_file(pid_file)
                time.sleep(0.1 * (attempt + 1))
                continue
            raise RuntimeError("dovecot failed to start (exit %d)\n%s" % (r.returncode, last_err))
        try:
            _wait_ready(info)
            if warm_up:
                _warm_up(info)
        except Exception as e:
            tail = _log_tail(d)
            _stop_pid_file(pid_file)
            if "Address already in use" in tail and attempt + 1 < attempts:
                last_err = tail
                continue
            raise RuntimeError("dovecot started but is not usable: %s\n%s" % (e, tail))
        with open(os.path.join(d, "instance.json"), "w") as f:
            json.dump(info, f)
        return info
    raise RuntimeError("dovecot could not bind free ports after %d attempts\n%s" % (attempts, last_err))


def _stop_pid_file(pid_file, timeout=15.0):
    pid = _read_pid(pid_file)
    if pid is None or not _pid_alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            break
        time.sleep(0.02)
    return True


def stop(directory, timeout=15.0):
    """Stop the instance in `directory` (via its pid file). Returns True if one was running."""
    d = os.path.abspath(directory)
    base_dir = _base_dir(d)
    pid_file = os.path.join(base_dir, "master.pid")
    try:
        with open(os.path.join(d, "instance.json")) as f:
            pid_file = json.load(f).get("pid_file", pid_file)
    except (OSError, ValueError):
        pass
    was = _stop_pid_file(pid_file, timeout)
    short = _short_dir(d)
    if os.path.isdir(short):
        shutil.rmtree(short, ignore_errors=True)
    return was


@contextmanager
def running(directory, **kw):
    info = start(directory, **kw)
    try:
        yield info
    finally:
        stop(directory)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run a self-contained Dovecot on loopback.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start", help="create, seed and start an instance in DIR")
    p.add_argument("dir")
    p.add_argument("--users", type=int, default=0, help="also create user1..userN")
    p = sub.add_parser("stop", help="stop the instance in DIR")
    p.add_argument("dir")
    a = ap.parse_args(argv)
    if a.cmd == "start":
        try:
            info = start(a.dir, users=a.users)
        except Exception as e:  # noqa: BLE001 - report and fail
            print("dovecot.py start: %s" % e, file=sys.stderr)
            return 1
        sys.stdout.write(json.dumps(info, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        return 0
    stop(a.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
