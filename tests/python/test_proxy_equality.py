"""Byte equality: the same command script, after login, straight to Dovecot and
through the proxy must produce identical response byte streams (per command).

The only normalization is Dovecot's own per-command timing text in tagged
replies, e.g. "OK Fetch completed (0.001 + 0.000 secs).", which differs between
any two runs. The script never changes mailbox state (BODY.PEEK, no STORE), so
every run sees the same mailboxes. Dovecot still changes internal state on the
first runs (cache decisions, its list index, which decides when LIST shows
\\UnMarked), so the script is run once directly before the recorded run, and a
command whose proxied bytes differ is compared once more against a fresh direct
run made after the proxied one.
"""

import pytest

from conftest import dovecot_helper
import imapwire

USER = "bob"
ENTW = dovecot_helper.MAILBOX_WIRE_NAMES["Entwürfe"]

# (tag, command text with {} per literal, literals). Sync literals: the server's
# "+" continuation is part of the compared bytes.
SCRIPT = [
    ("c01", "CAPABILITY", []),
    ("c02", 'LIST "" "*"', []),
    ("c03", 'LIST "" "%" RETURN (SPECIAL-USE CHILDREN)', []),
    ("c04", 'LSUB "" "*"', []),
    ("c05", "NAMESPACE", []),
    ("c06", "STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT)", []),
    ("c07", 'STATUS "%s" (MESSAGES UIDNEXT UIDVALIDITY)' % ENTW, []),
    ("c08", "SELECT INBOX", []),
    ("c09", "FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)", []),
    ("c10", "FETCH 1:* (UID BODY.PEEK[HEADER])", []),
    ("c11", "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM DATE MESSAGE-ID)])", []),
    ("c12", "FETCH 1:* (BODY.PEEK[])", []),                       # incl. the 5 MiB message
    ("c13", "FETCH 2 (BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[2.MIME] BODY.PEEK[TEXT])", []),
    ("c14", "FETCH 3 (BODY.PEEK[2]<0.100> BODY.PEEK[2]<100.200> BODY.PEEK[1.MIME])", []),
    ("c15", "FETCH 4 (BODY.PEEK[2])", []),
    ("c16", "FETCH 4 (BODY.PEEK[]<1000000.3000000>)", []),
    ("c17", "FETCH 10 (BODY.PEEK[2.HEADER] BODY.PEEK[2.1] BODY.PEEK[2.2.MIME] BODYSTRUCTURE)", []),
    ("c18", "FETCH 3 (BINARY.PEEK[2] BINARY.SIZE[2])", []),       # literal8 ~{n}
    ("c19", "FETCH 5:6 (BODY.PEEK[1] RFC822.HEADER)", []),
    ("c20", "UID FETCH 1:* (UID FLAGS RFC822.SIZE)", []),
    ("c21", "FETCH 1:* (PREVIEW)", []),
    ("c22", "SEARCH ALL", []),
    ("c23", "SEARCH FLAGGED", []),
    ("c24", "SEARCH UNSEEN NOT DRAFT", []),
    ("c25", 'SEARCH FROM "bob" SINCE 1-Jan-2024', []),
    ("c26", "SEARCH CHARSET UTF-8 SUBJECT {}", ["Grüße".encode()]),
    ("c27", "SEARCH CHARSET UTF-8 BODY {}", ["München".encode()]),
    ("c28", "UID SEARCH 2:* NOT DELETED", []),
    ("c29", "SEARCH RETURN (MIN MAX COUNT ALL) ALL", []),
    ("c30", "SORT (DATE REVERSE SUBJECT) UTF-8 ALL", []),
    ("c31", "THREAD REFERENCES UTF-8 ALL", []),
    ("c32", "NOOP", []),
    ("c33", 'EXAMINE "%s"' % ENTW, []),
    ("c34", "FETCH 1:* (FLAGS ENVELOPE BODY.PEEK[])", []),
    ("c35", 'EXAMINE "Folder With Spaces"', []),
    ("c36", "UID FETCH 1:* (BODY.PEEK[TEXT])", []),
    ("c37", "UNSELECT", []),
    ("c38", 'ID ("name" "equality-test")', []),
    ("c39", "ENABLE CONDSTORE", []),
    ("c40", "SELECT INBOX", []),
    ("c41", "FETCH 1:* (MODSEQ FLAGS)", []),
    ("c42", "CHECK", []),
    ("c43", "FETCH 99 (FLAGS)", []),                              # error reply
    ("c44", "BOGUS", []),                                         # BAD
    ("c45", "LOGOUT", []),
]


def run_script(conn, password):
    conn.login(USER, password)
    out = []
    for tag, text, lits in SCRIPT:
        resp = conn.command(tag, text, [bytes(x) for x in lits])
        out.append((tag, [imapwire.normalize(r) for r in resp]))
    return out


def describe_difference(a, b):
    ja, jb = b"".join(a), b"".join(b)
    n = next((i for i in range(min(len(ja), len(jb))) if ja[i] != jb[i]), min(len(ja), len(jb)))
    return ("lengths %d vs %d; first difference at byte %d:\n direct: %r\n  proxy: %r"
            % (len(ja), len(jb), n, ja[max(0, n - 80):n + 80], jb[max(0, n - 80):n + 80]))


def run_direct(dovecot, tls=True):
    c = dovecot.connect(tls=tls)
    try:
        return run_script(c, dovecot.users[USER])
    finally:
        c.close()


@pytest.fixture(scope="module")
def direct_transcript(dovecot):
    run_direct(dovecot)  # let Dovecot settle its internal state first
    return run_direct(dovecot)


def test_direct_runs_are_deterministic(dovecot, direct_transcript):
    """Sanity check of the method: two direct runs are identical."""
    again = run_direct(dovecot, tls=False)
    for (tag, a), (_, b) in zip(direct_transcript, again):
        assert a == b, "%s: %s" % (tag, describe_difference(a, b))


def test_script_covers_what_it_should(direct_transcript):
    got = dict(direct_transcript)
    assert any(b"~{" in r for r in got["c18"]), "no literal8 in BINARY fetch"
    assert got["c26"][0].startswith(b"+"), "no continuation for the sync literal"
    assert b"* SEARCH 5\r\n" in got["c26"]
    assert sum(len(r) for r in got["c12"]) > 7 * 1000 * 1000
    assert got["c43"][-1].startswith(b"c43 BAD") or got["c43"][-1].startswith(b"c43 NO")
    assert got["c45"][0].startswith(b"* BYE")


@pytest.mark.parametrize("listener", ["tls", "starttls"])
def test_proxy_bytes_equal_direct(proxy, dovecot, direct_transcript, listener):
    if listener == "tls":
        c = proxy.connect(tls=True)
    else:
        c = proxy.connect(tls=False)
        r = c.command("s1", "STARTTLS")
        assert r[-1].startswith(b"s1 OK"), r
        c.starttls(proxy.cert)
    try:
        via_proxy = run_script(c, dovecot.users[USER])
    finally:
        c.close()
    diffs = []
    later = None
    for i, ((tag, a), (tag2, b)) in enumerate(zip(direct_transcript, via_proxy)):
        assert tag == tag2
        if tag == "c01":
            # CAPABILITY: the proxy hides COMPRESS=DEFLATE and nothing else.
            ca = imapwire.parse_capabilities(a[0])
            cb = imapwire.parse_capabilities(b[0])
            assert "COMPRESS=DEFLATE" in ca
            assert cb == [x for x in ca if x != "COMPRESS=DEFLATE"], (ca, cb)
            assert a[1:] == b[1:]
            continue
        if a != b:
            if later is None:
                later = run_direct(dovecot)
            if later[i][1] == b:
                continue
            diffs.append("%s %s: %s" % (tag, dict((t, x) for t, x, _ in SCRIPT)[tag],
                                        describe_difference(a, b)))
    assert not diffs, "\n".join(diffs)
