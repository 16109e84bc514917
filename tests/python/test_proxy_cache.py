"""The FETCH cache against a real Dovecot, through raw client sockets.

Every check compares bytes: a command straight to Dovecot, through a proxy whose cache is cold,
and through the same proxy once the cache is warm, must give identical responses (Dovecot's
timing text aside). The admin metrics show that the warm answers really came from the cache
and that the upstream sent less.
"""

import re
import socket
import time
import urllib.request

import pytest

import imapwire
from conftest import require_tool

DOVECOT_USERS = 16

# Read-only commands (EXAMINE, PEEK) covering every cached item kind.
READ_ONLY = [
    "UID FETCH 1:3 (UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (DATE FROM TO SUBJECT)])",
    "UID FETCH 1:3 (BODY.PEEK[HEADER.FIELDS (From Subject)])",
    "UID FETCH 1:3,5:6 (ENVELOPE BODYSTRUCTURE)",
    "UID FETCH 2 (BODY)",
    "UID FETCH 1:3,5 (BODY.PEEK[])",
    "UID FETCH 2:3 (BODY.PEEK[1] BODY.PEEK[TEXT] FLAGS)",
    "UID FETCH 3 (BODY.PEEK[2]<0.100> BODY.PEEK[2]<100.200> UID)",
    "UID FETCH 5:6 (RFC822.HEADER BODY.PEEK[HEADER])",
    "UID FETCH 1:2 (MODSEQ BODY.PEEK[HEADER] FLAGS)",
    "UID FETCH 1 (BODY[HEADER] ENVELOPE)",  # non-PEEK under EXAMINE: no \\Seen
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def cached(start_proxy):
    port = free_port()
    p = start_proxy(extra_args=["--admin", "127.0.0.1:%d" % port, "--cache-size", "16MiB"])
    p.admin = port
    return p


def metrics(proxy):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % proxy.admin).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("imapgate_cache_") or line.startswith("imapgate_bytes_total"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def upstream_in(proxy):
    return metrics(proxy).get('imapgate_bytes_total{direction="received",side="upstream"}', 0)


def session(conn, user, password, commands, mailbox="INBOX", examine=True):
    conn.login(user, password)
    verb = "EXAMINE" if examine else "SELECT"
    conn.command("s", "%s %s" % (verb, mailbox))
    out = []
    for i, text in enumerate(commands):
        resp = conn.command("t%d" % i, text)
        out.append([imapwire.normalize(r) for r in resp])
    conn.command("z", "LOGOUT")
    conn.close()
    return out


def direct(dovecot, user, password, commands, **kw):
    return session(dovecot.connect(), user, password, commands, **kw)


def proxied(proxy, user, password, commands, **kw):
    return session(proxy.connect(tls=True), user, password, commands, **kw)


def assert_same(a, b, commands, what):
    for cmd, x, y in zip(commands, a, b):
        assert x == y, "%s differs for %s:\n direct: %r\n  proxy: %r" % (what, cmd, x, y)


def test_cold_and_warm_equal_direct(cached, dovecot):
    user, pw = dovecot.take_user()
    want = direct(dovecot, user, pw, READ_ONLY)
    before = metrics(cached)
    cold = proxied(cached, user, pw, READ_ONLY)
    assert_same(want, cold, READ_ONLY, "cold")
    mid = metrics(cached)
    assert mid["imapgate_cache_entries"] > before.get("imapgate_cache_entries", 0)
    warm = proxied(cached, user, pw, READ_ONLY)
    assert_same(want, warm, READ_ONLY, "warm")
    after = metrics(cached)
    assert after["imapgate_cache_hits_total"] > mid["imapgate_cache_hits_total"]
    assert after["imapgate_cache_saved_bytes_total"] > 20000
    # Once more: still equal to a direct run.
    assert_same(direct(dovecot, user, pw, READ_ONLY), warm, READ_ONLY, "direct again")


def test_list_view_spares_the_upstream(cached, dovecot):
    user, pw = dovecot.take_user()
    view = ["UID FETCH 1:3,5:11 (UID RFC822.SIZE FLAGS INTERNALDATE "
            "BODY.PEEK[HEADER.FIELDS (DATE FROM TO SUBJECT)] ENVELOPE BODYSTRUCTURE)"]
    a = upstream_in(cached)
    cold = proxied(cached, user, pw, view)
    time.sleep(0.2)
    b = upstream_in(cached)
    warm = proxied(cached, user, pw, view)
    time.sleep(0.2)
    c = upstream_in(cached)
    assert cold == warm
    assert b - a > 0 and c - b < (b - a) * 0.6, (b - a, c - b)


def test_seen_stays_exact(cached, dovecot):
    # Two users seeded alike: one direct, one through the cache, same commands.
    script = [
        "UID FETCH 3 (BODY.PEEK[HEADER] RFC822.SIZE)",   # fills the cache, no \\Seen
        "UID FETCH 3 (FLAGS)",
        "UID FETCH 3 (BODY[HEADER] RFC822.SIZE)",        # served: sets \\Seen, implicit FLAGS
        "UID FETCH 3 (BODY[HEADER] RFC822.SIZE)",        # served: already seen, no FLAGS
        "UID FETCH 3 (FLAGS)",
    ]
    u1, p1 = dovecot.take_user()
    u2, p2 = dovecot.take_user()
    want = direct(dovecot, u1, p1, script, examine=False)
    got = proxied(cached, u2, p2, script, examine=False)
    assert_same(want, got, script, "select")
    assert b"FLAGS (\\Seen)" in b"".join(got[2])
    # A second session sees the change.
    other = proxied(cached, u2, p2, ["UID FETCH 3 (FLAGS)"])
    assert b"FLAGS (\\Seen)" in b"".join(other[0])
    # Under EXAMINE a served non-PEEK fetch changes nothing.
    ro = ["UID FETCH 6 (BODY.PEEK[] FLAGS)", "UID FETCH 6 (BODY[] FLAGS)", "UID FETCH 6 (FLAGS)"]
    u3, p3 = dovecot.take_user()
    u4, p4 = dovecot.take_user()
    flags_before = direct(dovecot, u4, p4, ["UID FETCH 6 (FLAGS)"])
    assert_same(direct(dovecot, u3, p3, ro), proxied(cached, u4, p4, ro), ro, "examine")
    assert direct(dovecot, u4, p4, ["UID FETCH 6 (FLAGS)"]) == flags_before


def test_vanished_uid_and_expunge(cached, dovecot):
    user, pw = dovecot.take_user()
    cmds = ["UID FETCH 1:3 (BODY.PEEK[HEADER] ENVELOPE)", "FETCH 1:2 (UID FLAGS)"]
    proxied(cached, user, pw, cmds)  # cold
    # Another session expunges UID 2.
    c = dovecot.connect()
    c.login(user, pw)
    c.command("s", "SELECT INBOX")
    assert c.command("a", "UID STORE 2 +FLAGS.SILENT (\\Deleted)")[-1].startswith(b"a OK")
    assert c.command("b", "EXPUNGE")[-1].startswith(b"b OK")
    c.close()
    got = proxied(cached, user, pw, cmds)
    want = direct(dovecot, user, pw, cmds)
    assert_same(want, got, cmds, "after expunge")
    assert b"UID 2 " not in b"".join(got[0])


def create_twins(dovecot, users, name):
    """Creates `name` for each user within one second (equal UIDVALIDITY on Dovecot) and
    appends a different message to each."""
    conns = []
    for u, p in users:
        c = dovecot.connect()
        c.login(u, p)
        conns.append(c)
    for _ in range(5):
        t = time.time()
        if t - int(t) < 0.7:
            break
        time.sleep(1.0 - (t - int(t)) + 0.01)
    for c in conns:
        assert c.command("c", "CREATE %s" % name)[-1].startswith(b"c OK")
    vals = []
    for i, c in enumerate(conns):
        msg = ("From: twin%d@example.org\r\nSubject: secret %d\r\n\r\nbody of twin %d\r\n"
               % (i, i, i)).encode()
        assert c.command("a", "APPEND %s {}" % name, [msg])[-1].startswith(b"a OK")
        st = b"".join(c.command("s", "STATUS %s (UIDVALIDITY)" % name))
        vals.append(re.search(rb"UIDVALIDITY (\d+)", st).group(1))
        c.close()
    return vals


def test_two_users_same_mailbox_and_uidvalidity(cached, dovecot):
    a = dovecot.take_user()
    b = dovecot.take_user()
    vals = create_twins(dovecot, [a, b], "Twin")
    assert vals[0] == vals[1], vals
    cmds = ["UID FETCH 1 (BODY.PEEK[] ENVELOPE RFC822.SIZE)"]
    ga = proxied(cached, a[0], a[1], cmds, mailbox="Twin")
    ga2 = proxied(cached, a[0], a[1], cmds, mailbox="Twin")
    gb = proxied(cached, b[0], b[1], cmds, mailbox="Twin")
    assert_same(direct(dovecot, a[0], a[1], cmds, mailbox="Twin"), ga, cmds, "user a")
    assert ga == ga2
    assert_same(direct(dovecot, b[0], b[1], cmds, mailbox="Twin"), gb, cmds, "user b")
    assert b"twin 0" in b"".join(ga[0]) and b"twin 1" in b"".join(gb[0])


def test_delete_then_create_serves_no_stale_bytes(cached, dovecot):
    user, pw = dovecot.take_user()
    c = cached.connect(tls=True)
    c.login(user, pw)
    cmd = "UID FETCH 1 (BODY.PEEK[] RFC822.SIZE)"
    for round_ in range(2):
        assert c.command("c", "CREATE Again")[-1].startswith(b"c OK")
        msg = ("Subject: round %d\r\n\r\nround %d body\r\n" % (round_, round_)).encode()
        assert c.command("a", "APPEND Again {}", [msg])[-1].startswith(b"a OK")
        c.command("s", "EXAMINE Again")
        first = [imapwire.normalize(r) for r in c.command("f", cmd)]
        second = [imapwire.normalize(r) for r in c.command("f", cmd)]
        assert first[-1].startswith(b"f OK") and first == second
        second = b"".join(second)
        assert ("round %d body" % round_).encode() in second
        c.command("u", "UNSELECT")
        assert c.command("d", "DELETE Again")[-1].startswith(b"d OK")
    c.close()


def test_large_body_streams_and_is_cached(cached, dovecot):
    user, pw = dovecot.take_user()
    c = dovecot.connect()
    c.login(user, pw)
    assert c.command("c", "CREATE Big")[-1].startswith(b"c OK")
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ!\r\n"
    msg = b"Subject: big\r\n\r\n" + line * (900 * 1000 // len(line))
    assert c.command("a", "APPEND Big {}", [msg])[-1].startswith(b"a OK")
    # And one of 3 MB: over limits.max_assembled (1 MiB), under max_item_bytes (4 MiB).
    big = b"Subject: bigger\r\n\r\n" + line * (3000 * 1000 // len(line))
    assert c.command("a", "APPEND Big {}", [big])[-1].startswith(b"a OK")
    c.close()
    cmds = ["UID FETCH 1 (BODY.PEEK[] RFC822.SIZE)", "UID FETCH 1 (FLAGS)",
            "UID FETCH 2 (BODY.PEEK[])"]
    want = direct(dovecot, user, pw, cmds, mailbox="Big")
    before = metrics(cached)["imapgate_cache_saved_bytes_total"]
    t0 = time.monotonic()
    cold = proxied(cached, user, pw, cmds, mailbox="Big")
    t1 = time.monotonic()
    warm = proxied(cached, user, pw, cmds, mailbox="Big")
    t2 = time.monotonic()
    assert_same(want, cold, cmds, "cold")
    assert_same(want, warm, cmds, "warm")
    assert metrics(cached)["imapgate_cache_saved_bytes_total"] - before > 3900000
    print("900 KB + 3 MB bodies: cold %.1f ms, warm %.1f ms" % ((t1 - t0) * 1e3, (t2 - t1) * 1e3))
    # Non-PEEK served from the cache sets \Seen as Dovecot would, in SELECT.
    seen = ["UID FETCH 1 (BODY[] FLAGS)", "UID FETCH 1 (FLAGS)"]
    got = proxied(cached, user, pw, seen, mailbox="Big", examine=False)
    # (\\Recent: this session is the first to select the new mailbox.)
    assert got[0][0].startswith(b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) BODY[] {900016}"), \
        got[0][0][:100]
    assert got[1][0] == b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent))\r\n"


def test_condstore_qresync_binary_and_bypasses(cached, dovecot):
    user, pw = dovecot.take_user()
    cmds = [
        "ENABLE QRESYNC",
        "UID FETCH 1:3 (MODSEQ FLAGS BODY.PEEK[HEADER] ENVELOPE)",
        "UID FETCH 1:3 (FLAGS BODY.PEEK[HEADER]) (CHANGEDSINCE 1)",
        "UID FETCH 1:3 (FLAGS) (CHANGEDSINCE 1 VANISHED)",
        "UID FETCH 3 (BINARY.PEEK[2] BINARY.SIZE[2])",  # literal8 ~{n}
        "FETCH 1:2 ALL",
        "FETCH 1:2 FAST",
        "UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
    ]

    def run(conn):
        conn.login(user, pw)
        out = [[imapwire.normalize(r) for r in conn.command("e", cmds[0])]]
        out.append([imapwire.normalize(r) for r in conn.command("s", "EXAMINE INBOX (QRESYNC (1 1))")])
        for i, text in enumerate(cmds[1:]):
            out.append([imapwire.normalize(r) for r in conn.command("t%d" % i, text)])
        conn.close()
        return out

    want = run(dovecot.connect())
    assert any(b"~{" in r for r in want[5]), "no literal8"
    cold = run(cached.connect(tls=True))
    before = metrics(cached)["imapgate_cache_hits_total"]
    warm = run(cached.connect(tls=True))
    hits = metrics(cached)["imapgate_cache_hits_total"] - before
    labels = cmds[:1] + ["EXAMINE"] + cmds[1:]
    assert_same(want, cold, labels, "cold")
    assert_same(want, warm, labels, "warm")
    # Served: the UID FETCH with MODSEQ (2 items x 3 messages), the CHANGEDSINCE one (1 x 3) and
    # the BINARY one (2 x 1); not the VANISHED one (no cacheable item), not the macros, not 1:*.
    assert hits == 11, hits


def test_a_tiny_cache_evicts_and_stays_exact(start_proxy, dovecot):
    port = free_port()
    p = start_proxy(extra_args=["--admin", "127.0.0.1:%d" % port, "--cache-size", "3KiB"])
    p.admin = port
    user, pw = dovecot.take_user()
    cmds = ["UID FETCH %d (BODY.PEEK[] ENVELOPE)" % uid for uid in (1, 2, 3, 5, 6, 1, 2, 3, 5, 6)]
    want = direct(dovecot, user, pw, cmds)
    assert_same(want, proxied(p, user, pw, cmds), cmds, "first")
    assert_same(want, proxied(p, user, pw, cmds), cmds, "second")
    m = metrics(p)
    assert m["imapgate_cache_evictions_total"] > 0
    assert m["imapgate_cache_bytes"] <= 3 * 1024


def mbsync(tmp, name, port, user, pw, ca):
    """Pulls INBOX into a fresh maildir with isync's mbsync; returns its messages (content and
    flags), sorted."""
    import os
    import subprocess
    require_tool("mbsync", "isync")
    d = tmp / name
    d.mkdir()
    conf = d / "mbsyncrc"
    conf.write_text(
        "IMAPAccount acc\nHost 127.0.0.1\nPort %d\nUser %s\nPass \"%s\"\nSSLType IMAPS\n"
        # mbsync's default pipelining (unlimited): the cache serves UID FETCHes pipelined
        # behind each other.
        "CertificateFile %s\n\nIMAPStore remote\nAccount acc\n\n"
        "MaildirStore local\nPath %s/\nInbox %s/INBOX\n\n"
        "Channel ch\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Near\nSync Pull\n"
        "SyncState *\n" % (port, user, pw, ca, d, d))
    r = subprocess.run(["mbsync", "-c", str(conf), "ch"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = []
    for sub in ("cur", "new"):
        for f in os.listdir(d / "INBOX" / sub):
            flags = f.split(":2,")[1] if ":2," in f else ""
            body = open(d / "INBOX" / sub / f, "rb").read()
            # mbsync marks each message with a random X-TUID header of its own.
            body = re.sub(rb"(?m)^X-TUID: [^\n]*\n", b"", body, count=1)
            out.append((body, flags))
    return sorted(out)


def test_mbsync_twice_through_the_cache(cached, dovecot, tmp_path):
    user, pw = dovecot.take_user()
    want = mbsync(tmp_path, "direct", dovecot.imaps_port, user, pw, dovecot.ca_file)
    assert len(want) >= 10
    first = mbsync(tmp_path, "cold", cached.tls_port, user, pw, cached.cert)
    before = metrics(cached)
    second = mbsync(tmp_path, "warm", cached.tls_port, user, pw, cached.cert)
    after = metrics(cached)
    assert first == want
    assert second == want
    hits = after["imapgate_cache_hits_total"] - before["imapgate_cache_hits_total"]
    saved = after["imapgate_cache_saved_bytes_total"] - before["imapgate_cache_saved_bytes_total"]
    print("mbsync second run: %d items served, %d bytes saved" % (hits, saved))
    # Every message's content came from the cache, though mbsync pipelines its FETCHes; but
    # the 7 MB one (over max_item_bytes, 4 MiB: it streams and is not kept).
    small = sum(1 for body, _ in want if len(body) < 4 << 20)
    assert small < len(want) and hits >= small, (hits, small, len(want))
    assert saved > 10000
