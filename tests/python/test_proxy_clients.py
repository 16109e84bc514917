"""Real clients (imaplib, imapclient) through the proxy, TLS verified against the
gen-cert certificate. Read-only tests use bob; tests that change mailboxes take a
user of their own (dovecot.take_user()). Expected values come from a direct
Dovecot session or from the seeded bytes."""

import imaplib
import re
import socket
import threading
import time

import pytest
from imapclient import IMAPClient

from conftest import HOST, dovecot_helper
import imapwire

DOVECOT_USERS = 16
INBOX_N = dovecot_helper.MAILBOXES["INBOX"]
ENTW = dovecot_helper.MAILBOX_WIRE_NAMES["Entwürfe"]


def crlf(b):
    return b.replace(b"\n", b"\r\n")


def msg(box, i):
    return crlf(dovecot_helper.message_bytes(box, i))


def imaplib_proxy(proxy, user=None, pw=None):
    c = imaplib.IMAP4_SSL(HOST, proxy.tls_port, ssl_context=imapwire.tls_context(proxy.cert),
                          timeout=30)
    if user:
        c.login(user, pw)
    return c


def imaplib_direct(dovecot, user):
    c = imaplib.IMAP4_SSL(HOST, dovecot.imaps_port,
                          ssl_context=imapwire.tls_context(dovecot.ca_file), timeout=30)
    c.login(user, dovecot.users[user])
    return c


def imapclient_proxy(proxy, user, pw):
    c = IMAPClient(HOST, port=proxy.tls_port, ssl=True,
                   ssl_context=imapwire.tls_context(proxy.cert), timeout=30)
    c.login(user, pw)
    return c


def fetch_parts(c, seq, items):
    """imaplib FETCH -> list of literal payloads (bytes) in order."""
    typ, data = c.fetch(seq, items)
    assert typ == "OK", data
    return [d[1] for d in data if isinstance(d, tuple)]


# --- login ----------------------------------------------------------------

def test_imaplib_login_select_logout(proxy, dovecot):
    c = imaplib_proxy(proxy)
    assert "IMAP4REV1" in c.capabilities
    typ, data = c.login("bob", dovecot.users["bob"])
    assert typ == "OK"
    typ, data = c.select("INBOX", readonly=True)
    assert typ == "OK" and int(data[0]) == INBOX_N
    typ, data = c.logout()
    assert typ == "BYE"


def test_imaplib_login_password_with_spaces(proxy, dovecot):
    c = imaplib_proxy(proxy, "carol", dovecot.users["carol"])
    typ, data = c.select("INBOX", readonly=True)
    assert int(data[0]) == INBOX_N
    c.logout()


def test_imaplib_authenticate_plain(proxy, dovecot):
    c = imaplib_proxy(proxy)
    pw = dovecot.users["bob"]
    typ, data = c.authenticate("PLAIN", lambda _: ("\0bob\0%s" % pw).encode())
    assert typ == "OK"
    typ, data = c.select("INBOX", readonly=True)
    assert int(data[0]) == INBOX_N
    c.logout()


def test_sasl_ir_authenticate_plain(proxy, dovecot):
    c = proxy.connect()
    r = c.command("a1", "AUTHENTICATE PLAIN " + imapwire.sasl_plain("bob", dovecot.users["bob"]))
    assert r[-1].startswith(b"a1 OK"), r
    r = c.command("a2", "EXAMINE INBOX")
    assert b"* %d EXISTS\r\n" % INBOX_N in r
    c.close()


def test_login_with_literals(proxy, dovecot):
    c = proxy.connect()
    c.login("carol", dovecot.users["carol"], literals=True)
    r = c.command("a2", "STATUS INBOX (MESSAGES)")
    assert r[0] == b"* STATUS INBOX (MESSAGES %d)\r\n" % INBOX_N
    c.close()


def test_imapclient_login_list_and_capabilities(proxy, dovecot):
    c = imapclient_proxy(proxy, "bob", dovecot.users["bob"])
    caps = c.capabilities()
    assert b"IMAP4REV1" in caps and b"MOVE" in caps and b"UIDPLUS" in caps
    assert b"COMPRESS=DEFLATE" not in caps
    names = sorted(f[2] for f in c.list_folders())
    assert names == sorted(["INBOX", "Archive", "Sent", "Trash", "Folder With Spaces",
                            "Entwürfe"])
    flags = {f[2]: f[0] for f in c.list_folders()}
    assert b"\\Sent" in flags["Sent"] and b"\\Trash" in flags["Trash"]
    info = c.select_folder("Entwürfe", readonly=True)
    assert info[b"EXISTS"] == dovecot_helper.MAILBOXES["Entwürfe"]
    info = c.select_folder("Folder With Spaces", readonly=True)
    assert info[b"EXISTS"] == dovecot_helper.MAILBOXES["Folder With Spaces"]
    c.logout()


# --- FETCH ------------------------------------------------------------------

def test_fetch_headers_bodies_sections_partials(proxy, dovecot):
    c = imaplib_proxy(proxy, "bob", dovecot.users["bob"])
    d = imaplib_direct(dovecot, "bob")
    for x in (c, d):
        x.select("INBOX", readonly=True)
    # full bodies, every message incl. the 5 MiB one
    bodies = fetch_parts(c, "1:*", "(BODY.PEEK[])")
    assert len(bodies) == INBOX_N
    for i, b in enumerate(bodies, 1):
        assert b == msg("INBOX", i), "message %d differs" % i
    # headers
    hdrs = fetch_parts(c, "1:*", "(BODY.PEEK[HEADER])")
    for i, h in enumerate(hdrs, 1):
        full = msg("INBOX", i)
        assert h == full[:full.index(b"\r\n\r\n") + 4]
    fields = fetch_parts(c, "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
    assert fields == fetch_parts(d, "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
    assert fields[0] == b"From: Bob Builder <bob@example.com>\r\nSubject: Plain text message\r\n\r\n"
    # sections
    for seq, items in [("2", "(BODY.PEEK[1] BODY.PEEK[2] BODY.PEEK[2.MIME])"),
                       ("3", "(BODY.PEEK[2] BODY.PEEK[1.MIME])"),
                       ("10", "(BODY.PEEK[2.HEADER] BODY.PEEK[2.1] BODY.PEEK[2.2.MIME] BODY.PEEK[TEXT])"),
                       ("4", "(BODY.PEEK[2])")]:
        assert fetch_parts(c, seq, items) == fetch_parts(d, seq, items), (seq, items)
    html = fetch_parts(c, "2", "(BODY.PEEK[2])")[0]
    assert html.startswith(b"<html>")
    # partials
    assert fetch_parts(c, "1", "(BODY.PEEK[]<0.100>)") == [msg("INBOX", 1)[:100]]
    assert fetch_parts(c, "4", "(BODY.PEEK[]<5000000.100000>)") == \
        [msg("INBOX", 4)[5000000:5100000]]
    c.logout()
    d.logout()


def test_bodystructure_and_envelope_match_direct(proxy, dovecot):
    c = imaplib_proxy(proxy, "bob", dovecot.users["bob"])
    d = imaplib_direct(dovecot, "bob")
    for x in (c, d):
        x.select("INBOX", readonly=True)
    for items in ("(BODYSTRUCTURE)", "(ENVELOPE)", "(FLAGS INTERNALDATE RFC822.SIZE)"):
        assert c.fetch("1:*", items) == d.fetch("1:*", items), items
    typ, data = c.fetch("2", "(BODYSTRUCTURE)")
    assert b'"alternative"' in data[0].lower()
    typ, data = c.fetch("5", "(ENVELOPE)")
    assert b"=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?=" in data[0]
    c.logout()
    d.logout()


def test_imapclient_fetch_envelope_and_bodystructure(proxy, dovecot):
    c = imapclient_proxy(proxy, "bob", dovecot.users["bob"])
    c.select_folder("INBOX", readonly=True)
    res = c.fetch([1, 4, 5, 10], ["ENVELOPE", "BODYSTRUCTURE", "RFC822.SIZE", "FLAGS"])
    assert sorted(res) == [1, 4, 5, 10]
    env = res[5][b"ENVELOPE"]
    assert env.from_[0].mailbox == b"juergen" and env.from_[0].host == b"example.de"
    assert res[4][b"RFC822.SIZE"] == len(msg("INBOX", 4))
    assert res[1][b"FLAGS"] == (b"\\Seen",)
    assert res[10][b"BODYSTRUCTURE"].is_multipart
    c.logout()


# --- SEARCH -------------------------------------------------------------------

def test_search_including_utf8_literal(proxy, dovecot):
    c = imaplib_proxy(proxy, "bob", dovecot.users["bob"])
    c.select("INBOX", readonly=True)
    assert c.search(None, "ALL")[1][0].split() == [str(i).encode() for i in range(1, INBOX_N + 1)]
    assert c.search(None, "FLAGGED")[1][0].split() == [b"2", b"7"]
    assert c.search(None, "UNSEEN")[1][0].split() == [b"3", b"5", b"7", b"10"]
    assert c.search(None, 'FROM "carol@example.com"')[1][0].split() == [b"7"]
    # imaplib sends the literal as a synchronizing literal {n}
    c.literal = "Grüße".encode("utf-8")
    typ, data = c.search("UTF-8", "SUBJECT")
    assert typ == "OK" and data[0].split() == [b"5"]
    c.literal = "München".encode("utf-8")
    typ, data = c.search("UTF-8", "BODY")
    assert data[0].split() == [b"5"]
    typ, data = c.uid("SEARCH", "UID 2:* NOT DELETED")
    assert data[0].split() == [str(i).encode() for i in range(2, INBOX_N + 1)]
    c.logout()


def test_imapclient_search_utf8(proxy, dovecot):
    c = imapclient_proxy(proxy, "bob", dovecot.users["bob"])
    c.select_folder("INBOX", readonly=True)
    assert c.search(["SUBJECT", "Grüße"], charset="UTF-8") == [5]
    assert c.search(["FLAGGED"]) == [2, 7]
    c.logout()


# --- changing mailboxes ----------------------------------------------------

def test_uid_fetch_store_copy_move_expunge(proxy, dovecot):
    user, pw = dovecot.take_user()
    c = imaplib_proxy(proxy, user, pw)
    c.select("INBOX")
    typ, data = c.uid("FETCH", "1:*", "(UID FLAGS)")
    assert len(data) == INBOX_N
    typ, data = c.uid("STORE", "3", "+FLAGS", "(\\Flagged $Important)")
    assert typ == "OK" and b"\\Flagged" in data[0] and b"$Important" in data[0]
    typ, data = c.store("1", "-FLAGS.SILENT", "(\\Seen)")
    assert typ == "OK"
    assert c.uid("SEARCH", "FLAGGED")[1][0].split() == [b"2", b"3", b"7"]
    assert c.search(None, "KEYWORD $Important")[1][0].split() == [b"3"]
    typ, data = c.copy("1:2", "Archive")
    assert typ == "OK" and b"COPYUID" in data[0]
    typ, data = c.uid("MOVE", "7", "Trash")
    assert typ == "OK"
    assert c.response("EXPUNGE") == ("EXPUNGE", [b"7"])
    typ, data = c.store("1", "+FLAGS", "(\\Deleted)")
    typ, data = c.expunge()
    assert typ == "OK" and data == [b"1"]
    d = imaplib_direct(dovecot, user)
    st = {}
    for box in ("INBOX", "Archive", "Trash"):
        typ, data = d.status(box, "(MESSAGES)")
        st[box] = int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
    assert st == {"INBOX": INBOX_N - 2,
                  "Archive": dovecot_helper.MAILBOXES["Archive"] + 2,
                  "Trash": dovecot_helper.MAILBOXES["Trash"] + 1}
    d.select("INBOX", readonly=True)
    typ, data = d.uid("FETCH", "3", "(FLAGS)")
    assert b"\\Flagged" in data[0] and b"$Important" in data[0]
    c.logout()
    d.logout()


def test_imapclient_move_and_flags(proxy, dovecot):
    user, pw = dovecot.take_user()
    c = imapclient_proxy(proxy, user, pw)
    c.select_folder("INBOX")
    c.add_flags([9], [b"\\Answered"])
    assert b"\\Answered" in c.get_flags([9])[9]
    c.move([9], "Entwürfe")
    c.select_folder("Entwürfe", readonly=True)
    res = c.search(["HEADER", "Message-ID", "seed-9@imapgate.test"])
    assert len(res) == 1
    c.logout()


def test_append_sync_literal_and_fetch_back(proxy, dovecot):
    user, pw = dovecot.take_user()
    c = imaplib_proxy(proxy, user, pw)
    body = crlf("From: a@example.org\nSubject: appended över proxy\n\nbody ✓\n".encode("utf-8"))
    typ, data = c.append("Sent", "(\\Seen)", imaplib.Time2Internaldate(1700000000), body)
    assert typ == "OK" and b"APPENDUID" in data[0]
    uid = data[0].split()[2].rstrip(b"]")
    c.select("Sent", readonly=True)
    typ, data = c.uid("FETCH", uid.decode(), "(BODY.PEEK[] FLAGS)")
    assert data[0][1] == body and b"\\Seen" in data[0][0]
    c.logout()


@pytest.mark.parametrize("size", [200, 3 * 1024 * 1024])
def test_append_nonsync_literal_raw(proxy, dovecot, size):
    """LITERAL+ ({n+}): the client sends the literal without waiting for '+'."""
    user, pw = dovecot.take_user()
    c = proxy.connect()
    c.login(user, pw)
    head = b"From: raw@example.org\r\nSubject: literal plus\r\n\r\n"
    filler = (b"0123456789abcdef" * ((size // 16) + 1))
    body = head + filler[:size - len(head) - 2] + b"\r\n"
    r = c.command("a1", "APPEND INBOX (\\Flagged) {}", [body], nonsync=True)
    assert not any(x.startswith(b"+") for x in r), "server asked for a continuation"
    assert r[-1].startswith(b"a1 OK [APPENDUID "), r[-1]
    uid = int(r[-1].split()[4].rstrip(b"]"))
    r = c.command("a2", "EXAMINE INBOX")
    r = c.command("a3", "UID FETCH %d (BODY.PEEK[])" % uid)
    assert imapwire.literal_payload(r[0]) == body
    # two commands pipelined, each with a literal, in one write
    c.send(b"p1 APPEND Trash {5+}\r\nhello\r\np2 APPEND Trash {5+}\r\nworld\r\n")
    r1 = c.read_until_tagged("p1")
    r2 = c.read_until_tagged("p2")
    assert r1[-1].startswith(b"p1 OK") and r2[-1].startswith(b"p2 OK")
    c.close()


def test_expunge_responses(proxy, dovecot):
    user, pw = dovecot.take_user()
    c = proxy.connect()
    c.login(user, pw)
    c.command("a1", "SELECT INBOX")
    r = c.command("a2", "STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    assert r[-1].startswith(b"a2 OK")
    r = c.command("a3", "EXPUNGE")
    assert r[:-1] == [b"* 4 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n"]
    r = c.command("a4", "SEARCH ALL")
    assert r[0] == b"* SEARCH " + b" ".join(str(i).encode() for i in range(1, INBOX_N - 1)) + b"\r\n"
    c.close()


# --- IDLE ---------------------------------------------------------------------

def test_imapclient_idle_sees_append_from_second_session(proxy, dovecot):
    user, pw = dovecot.take_user()
    idler = imapclient_proxy(proxy, user, pw)
    idler.select_folder("INBOX")
    idler.idle()
    other = imaplib_proxy(proxy, user, pw)
    other.append("INBOX", None, None, b"Subject: new mail\r\n\r\nwake up\r\n")
    deadline = time.monotonic() + 20
    seen = []
    while time.monotonic() < deadline and (INBOX_N + 1, b"EXISTS") not in seen:
        seen += idler.idle_check(timeout=2)
    text, resp = idler.idle_done()
    assert (INBOX_N + 1, b"EXISTS") in seen, seen
    other.logout()
    idler.logout()


def test_raw_idle_done(proxy, dovecot):
    user, pw = dovecot.take_user()
    c = proxy.connect()
    c.login(user, pw)
    c.command("s", "SELECT INBOX")
    c.send("i1 IDLE\r\n")
    assert c.read_response().startswith(b"+ ")
    other = proxy.connect()
    other.login(user, pw)
    other.command("x", "APPEND INBOX {}", [b"Subject: x\r\n\r\ny\r\n"], nonsync=True)
    c.sock.settimeout(20)
    assert c.read_response() == b"* %d EXISTS\r\n" % (INBOX_N + 1)
    c.send("DONE\r\n")
    r = c.read_until_tagged("i1")
    assert r[-1].startswith(b"i1 OK")
    other.close()
    c.close()


# --- STARTTLS ---------------------------------------------------------------------

def test_imaplib_starttls_on_plain_listener(proxy, dovecot):
    c = imaplib.IMAP4(HOST, proxy.plain_port, timeout=30)
    assert "STARTTLS" in c.capabilities
    c.starttls(ssl_context=imapwire.tls_context(proxy.cert))
    c.login("bob", dovecot.users["bob"])
    typ, data = c.select("INBOX", readonly=True)
    assert int(data[0]) == INBOX_N
    c.logout()


def test_starttls_verification_fails_with_wrong_ca(proxy, dovecot):
    """The client must not trust the proxy with Dovecot's CA (a different cert)."""
    import ssl
    s = socket.create_connection((HOST, proxy.tls_port), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        imapwire.tls_context(dovecot.ca_file).wrap_socket(s, server_hostname=HOST)
    s.close()


def test_concurrent_sessions(proxy, dovecot):
    """A handful of sessions at once, each fetching the large message."""
    errors = []
    want = msg("INBOX", 4)

    def worker():
        try:
            c = imaplib_proxy(proxy, "bob", dovecot.users["bob"])
            c.select("INBOX", readonly=True)
            assert fetch_parts(c, "4", "(BODY.PEEK[])")[0] == want
            c.logout()
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    ts = [threading.Thread(target=worker) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors

