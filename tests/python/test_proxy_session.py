"""Session behaviour of the proxy itself: greeting, pre-login commands, STARTTLS,
LOGINDISABLED, failed logins, upstream TLS modes, SIGTERM."""

import socket
import ssl
import time

import pytest

from conftest import HOST, dovecot_helper
import imapwire

DOVECOT_USERS = 2
INBOX_N = dovecot_helper.MAILBOXES["INBOX"]


def status(resp, tag):
    return imapwire.tagged_status(resp, tag)


# --- before login --------------------------------------------------------------

def test_greeting_tls_listener(proxy):
    c = proxy.connect(tls=True)
    g = c.greet
    assert g.startswith(b"* OK [CAPABILITY "), g
    caps = imapwire.parse_capabilities(g)
    assert "IMAP4REV1" in caps and "AUTH=PLAIN" in caps
    assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps
    c.close()


def test_greeting_plain_listener_offers_starttls(proxy):
    c = proxy.connect(tls=False)
    caps = imapwire.parse_capabilities(c.greet)
    assert "IMAP4REV1" in caps and "STARTTLS" in caps
    c.close()


def test_prelogin_commands_answered(proxy):
    c = proxy.connect()
    r = c.command("a1", "CAPABILITY")
    assert status(r, "a1") == b"OK"
    caps = imapwire.parse_capabilities(r[0])
    assert caps and "IMAP4REV1" in caps and "AUTH=PLAIN" in caps
    r = c.command("a2", "NOOP")
    assert status(r, "a2") == b"OK"
    r = c.command("a3", 'ID ("name" "pytest" "version" "1")')
    assert status(r, "a3") == b"OK" and r[0].startswith(b"* ID ")
    r = c.command("a4", "ID NIL")
    assert status(r, "a4") == b"OK"
    r = c.command("a5", "SELECT INBOX")
    assert status(r, "a5") in (b"BAD", b"NO")
    r = c.command("a6", "LOGOUT")
    assert r[0].startswith(b"* BYE") and status(r, "a6") == b"OK"
    assert c.at_eof()


def test_starttls_not_offered_on_tls_listener(proxy):
    c = proxy.connect(tls=True)
    r = c.command("a1", "STARTTLS")
    assert status(r, "a1") in (b"BAD", b"NO")
    c.close()


def test_starttls_then_login(proxy, dovecot):
    c = proxy.connect(tls=False)
    r = c.command("s1", "STARTTLS")
    assert status(r, "s1") == b"OK"
    c.starttls(proxy.cert)
    r = c.command("a1", "CAPABILITY")
    caps = imapwire.parse_capabilities(r[0])
    assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps and "AUTH=PLAIN" in caps
    c.login("bob", dovecot.users["bob"])
    r = c.command("a2", "EXAMINE INBOX")
    assert b"* %d EXISTS\r\n" % INBOX_N in r
    c.close()


def test_starttls_discards_pipelined_plaintext(proxy):
    """Bytes sent after STARTTLS in the same packet must never be executed."""
    c = proxy.connect(tls=False)
    c.send(b"s1 STARTTLS\r\nx1 CAPABILITY\r\n")
    r = c.read_until_tagged("s1")
    assert status(r, "s1") == b"OK"
    assert not c.buf.startswith(b"x1"), c.buf
    try:
        c.starttls(proxy.cert)
    except (ssl.SSLError, OSError):
        return  # refusing the polluted handshake is fine too
    c.send(b"y1 NOOP\r\n")
    try:
        r = c.read_until_tagged("y1")
    except (EOFError, ssl.SSLError, OSError):
        return
    assert not any(x.startswith(b"x1 ") for x in r), r


def test_post_login_capabilities_are_dovecots_minus_compress(proxy, dovecot):
    d = dovecot.connect()
    resp = d.login("bob", dovecot.users["bob"])
    r = d.command("c1", "CAPABILITY")
    dovecot_caps = imapwire.parse_capabilities(r[0])
    d.close()
    assert "COMPRESS=DEFLATE" in dovecot_caps
    want = [x for x in dovecot_caps if x != "COMPRESS=DEFLATE"]

    c = proxy.connect()
    resp = c.login("bob", dovecot.users["bob"])
    in_ok = imapwire.parse_capabilities(resp[-1])
    if in_ok is not None:
        assert in_ok == want
    r = c.command("c1", "CAPABILITY")
    assert imapwire.parse_capabilities(r[0]) == want
    c.close()


# --- failed logins -------------------------------------------------------------

def test_wrong_password_same_as_dovecot(proxy, dovecot):
    d = dovecot.connect()
    want = d.command("a1", "LOGIN bob wrong-password")
    d.close()
    assert want[-1].startswith(b"a1 NO [AUTHENTICATIONFAILED]")

    c = proxy.connect()
    got = c.command("a1", "LOGIN bob wrong-password")
    assert got[-1] == want[-1]
    # the same connection may try again (as with Dovecot), or have been closed
    try:
        r = c.command("a2", "LOGIN bob %s" % imapwire.quote(dovecot.users["bob"]))
        assert status(r, "a2") == b"OK"
    except (EOFError, OSError):
        pass
    c.close()
    # a new session works
    c2 = proxy.connect()
    c2.login("bob", dovecot.users["bob"])
    r = c2.command("a3", "STATUS INBOX (MESSAGES)")
    assert r[0] == b"* STATUS INBOX (MESSAGES %d)\r\n" % INBOX_N
    c2.close()


def test_wrong_password_authenticate_plain_and_unknown_user(proxy, dovecot):
    c = proxy.connect()
    r = c.command("a1", "AUTHENTICATE PLAIN " + imapwire.sasl_plain("bob", "nope"))
    assert r[-1].startswith(b"a1 NO [AUTHENTICATIONFAILED]"), r
    c.close()
    c = proxy.connect()
    r = c.command("a2", "LOGIN nosuchuser whatever")
    assert r[-1].startswith(b"a2 NO [AUTHENTICATIONFAILED]"), r
    c.close()
    c = proxy.connect()
    c.send("a3 AUTHENTICATE PLAIN\r\n")
    assert c.read_response().startswith(b"+")
    c.send(imapwire.sasl_plain("bob", dovecot.users["bob"]) + "\r\n")
    r = c.read_until_tagged("a3")
    assert status(r, "a3") == b"OK"
    c.close()


def test_many_failed_logins_do_not_block_good_ones(proxy, dovecot):
    # Under the per-user threshold (10): delayed (briefly, as configured here), not refused.
    for i in range(5):
        c = proxy.connect()
        r = c.command("f%d" % i, "LOGIN bob bad%d" % i)
        assert status(r, "f%d" % i) == b"NO"
        c.close()
    t = time.monotonic()
    c = proxy.connect()
    c.login("bob", dovecot.users["bob"])
    assert time.monotonic() - t < 3
    c.close()


# --- plaintext policy ------------------------------------------------------------

def test_plaintext_never_logindisabled_until_starttls(start_proxy, dovecot):
    p = start_proxy(env={"IMAPGATE_AUTH__PLAINTEXT": "never"})
    c = p.connect(tls=False)
    caps = imapwire.parse_capabilities(c.greet)
    assert "STARTTLS" in caps and "LOGINDISABLED" in caps
    assert "AUTH=PLAIN" not in caps
    r = c.command("a1", "LOGIN bob %s" % imapwire.quote(dovecot.users["bob"]))
    assert status(r, "a1") in (b"NO", b"BAD")
    r = c.command("a2", "AUTHENTICATE PLAIN " + imapwire.sasl_plain("bob", dovecot.users["bob"]))
    assert status(r, "a2") in (b"NO", b"BAD")
    r = c.command("s1", "STARTTLS")
    assert status(r, "s1") == b"OK"
    c.starttls(p.cert)
    r = c.command("a3", "CAPABILITY")
    caps = imapwire.parse_capabilities(r[0])
    assert "LOGINDISABLED" not in caps and "STARTTLS" not in caps
    c.login("bob", dovecot.users["bob"], tag="a4")
    c.close()
    # the implicit-TLS listener is unaffected
    c = p.connect(tls=True)
    assert "LOGINDISABLED" not in imapwire.parse_capabilities(c.greet)
    c.login("bob", dovecot.users["bob"])
    c.close()


# --- upstream modes ----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["starttls", "none"])
def test_upstream_modes(start_proxy, dovecot, mode):
    p = start_proxy(upstream_tls=mode)
    c = p.connect()
    c.login("bob", dovecot.users["bob"])
    c.command("e", "EXAMINE INBOX")
    r = c.command("f", "FETCH 1 (BODY.PEEK[])")
    assert imapwire.literal_payload(r[0]) == \
        dovecot_helper.message_bytes("INBOX", 1).replace(b"\n", b"\r\n")
    c.close()


def test_upstream_down_gives_no_and_proxy_survives(start_proxy, dovecot):
    s = socket.socket()
    s.bind((HOST, 0))
    dead_port = s.getsockname()[1]  # nobody listens here
    s.close()
    p = start_proxy(upstream_port=dead_port, listen_plain=False)
    c = p.connect()
    c.send("a1 LOGIN bob %s\r\n" % imapwire.quote(dovecot.users["bob"]))
    got = []
    try:
        while not (got and got[-1].startswith(b"a1 ")):
            got.append(c.read_response())
    except EOFError:
        pass
    # either a tagged NO, or "* BYE ..." and the connection closed
    assert (got and got[-1].startswith(b"a1 NO")) or \
        any(x.startswith(b"* BYE") for x in got), got
    c.close()
    c = p.connect()
    r = c.command("a2", "NOOP")
    assert status(r, "a2") == b"OK"
    c.close()
    assert p.stop() == 0, p.output()


# --- shutdown --------------------------------------------------------------------

def test_sigterm_sends_bye_and_exits_zero(start_proxy, dovecot):
    p = start_proxy()
    logged_in = p.connect()
    logged_in.login("bob", dovecot.users["bob"])
    logged_in.command("e", "EXAMINE INBOX")
    fresh = p.connect(tls=False)
    time.sleep(0.2)
    t = time.monotonic()
    code = p.stop(timeout=15)
    assert code == 0, p.output()
    assert time.monotonic() - t < 15
    for c in (logged_in, fresh):
        c.sock.settimeout(5)
        rest = []
        try:
            while True:
                rest.append(c.read_response())
        except (EOFError, OSError, ssl.SSLError):
            pass
        assert any(x.startswith(b"* BYE") for x in rest), rest
        c.close()
