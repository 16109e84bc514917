"""scripts/dovecot.py itself: the JSON contract, parallel instances, seeded content."""

import concurrent.futures
import imaplib
import json
import os
import subprocess
import sys
import time

from conftest import ROOT, dovecot_helper
import imapwire

SCRIPT = str(ROOT / "scripts" / "dovecot.py")


def _start_cli(d, users=0):
    args = [sys.executable, SCRIPT, "start", str(d)]
    if users:
        args += ["--users", str(users)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    return json.loads(lines[0])


def _alive(pid):
    return dovecot_helper._pid_alive(pid)


def test_cli_two_instances_in_parallel(tmp_path):
    dirs = [tmp_path / "a", tmp_path / "b"]
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        infos = list(ex.map(lambda d: _start_cli(d, users=2), dirs))
    try:
        ports = set()
        for d, info in zip(dirs, infos):
            assert set(info) == {"host", "imap_port", "imaps_port", "ca_file", "pid_file",
                                 "dir", "users"}
            assert info["host"] == "127.0.0.1"
            assert info["dir"] == str(d)
            assert os.path.isabs(info["ca_file"]) and os.path.isfile(info["ca_file"])
            assert os.path.isabs(info["pid_file"]) and os.path.isfile(info["pid_file"])
            assert set(info["users"]) == {"alice", "bob", "carol", "user1", "user2"}
            ports |= {info["imap_port"], info["imaps_port"]}
            ctx = imapwire.tls_context(info["ca_file"])
            with imaplib.IMAP4_SSL(info["host"], info["imaps_port"], ssl_context=ctx,
                                   timeout=30) as c:
                c.login("alice", info["users"]["alice"])
                typ, data = c.select("INBOX", readonly=True)
                assert typ == "OK" and int(data[0]) == dovecot_helper.MAILBOXES["INBOX"]
                c.logout()
            with imaplib.IMAP4(info["host"], info["imap_port"], timeout=30) as c:
                assert "STARTTLS" in c.capabilities
                c.starttls(ssl_context=ctx)
                c.login("carol", info["users"]["carol"])  # password with spaces
                typ, data = c.select('"%s"' % dovecot_helper.MAILBOX_WIRE_NAMES["Entwürfe"],
                                     readonly=True)
                assert int(data[0]) == dovecot_helper.MAILBOXES["Entwürfe"]
                c.logout()
        assert len(ports) == 4
    finally:
        pids = []
        for info in infos:
            pids.append(int(open(info["pid_file"]).read()))
            r = subprocess.run([sys.executable, SCRIPT, "stop", info["dir"]], timeout=60)
            assert r.returncode == 0
    for pid in pids:
        assert not _alive(pid)


def test_seeded_content_is_exact_and_deterministic(dovecot):
    user = "bob"
    ctx = imapwire.tls_context(dovecot.ca_file)
    with imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=ctx, timeout=30) as c:
        c.login(user, dovecot.users[user])
        for box, n in dovecot_helper.MAILBOXES.items():
            typ, data = c.select('"%s"' % dovecot_helper.MAILBOX_WIRE_NAMES[box], readonly=True)
            assert int(data[0]) == n
            typ, data = c.fetch("1:*", "(UID BODY.PEEK[])")
            bodies = [d[1] for d in data if isinstance(d, tuple)]
            assert len(bodies) == n
            for i, body in enumerate(bodies, 1):
                assert body == dovecot_helper.message_bytes(box, i).replace(b"\n", b"\r\n")
        c.select("INBOX", readonly=True)
        typ, data = c.fetch("4", "(RFC822.SIZE)")
        assert int(data[0].split()[-1].rstrip(b")")) > 5 * 1024 * 1024
        typ, data = c.search(None, "FLAGGED")
        assert data[0].split() == [b"2", b"7"]
        c.logout()


def test_stop_is_idempotent(tmp_path):
    assert dovecot_helper.stop(str(tmp_path / "never-started")) is False


def test_start_is_fast(tmp_path):
    t = time.monotonic()
    info = dovecot_helper.start(str(tmp_path / "d"))
    took = time.monotonic() - t
    dovecot_helper.stop(info["dir"])
    assert took < 10, took
