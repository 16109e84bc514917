"""Token logins carried through the proxy unchanged: XOAUTH2 and OAUTHBEARER (RFC 7628), with
and without SASL-IR, against Dovecot's oauth2 passdb. Dovecot validates each bearer token at an
RFC 7662 introspection endpoint (a small HTTP server here that knows which tokens it issued).
A refused token takes the multi-step path: the server's `+` error challenge is relayed to the
client, the client's dummy answer back, and Dovecot's `NO [AUTHENTICATIONFAILED]` reaches the
client unchanged."""

import base64
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import HOST, Dovecot, dovecot_helper
import imapwire

CLIENT_ID = "dovecot"
CLIENT_SECRET = "dovecot-introspection-secret"


class Introspection(BaseHTTPRequestHandler):
    """POST /introspect (RFC 7662): token -> {"active", "username"}."""
    tokens = {}
    seen = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        form = urllib.parse.parse_qs(body.decode())
        ok_client = (form.get("client_id") == [CLIENT_ID]
                     and form.get("client_secret") == [CLIENT_SECRET])
        token = (form.get("token") or [""])[0]
        Introspection.seen.append(token)
        user = self.tokens.get(token) if ok_client else None
        answer = {"active": True, "username": user} if user else {"active": False}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def introspection():
    server = ThreadingHTTPServer((HOST, 0), Introspection)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield "http://%s:%d/introspect" % (HOST, server.server_address[1])
    server.shutdown()


@pytest.fixture(scope="module")
def dovecot(introspection, tmp_path_factory):
    d = tmp_path_factory.mktemp("dovecot-oauth")
    conf = d / "oauth2.conf.ext"
    conf.write_text(
        "introspection_mode = post\n"
        "introspection_url = %s\n"
        "client_id = %s\nclient_secret = %s\n"
        "username_attribute = username\nactive_attribute = active\nactive_value = true\n"
        "timeout_msecs = 5000\n" % (introspection, CLIENT_ID, CLIENT_SECRET))
    conf.chmod(0o644)
    info = dovecot_helper.start(
        str(d), users=2,
        auth_mechanisms="plain login xoauth2 oauthbearer",
        passdb_extra="passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                     "  args = %s\n}\n" % conf,
        passdb_mechanisms="plain login",
        extra_config="auth_cache_size = 0\n")
    try:
        yield Dovecot(info)
    finally:
        dovecot_helper.stop(str(d))


def xoauth2(user, token):
    return base64.b64encode(b"user=%s\x01auth=Bearer %s\x01\x01" % (user.encode(), token.encode()))


def oauthbearer(user, token):
    return base64.b64encode(b"n,a=%s,\x01host=%s\x01auth=Bearer %s\x01\x01"
                            % (user.encode(), HOST.encode(), token.encode()))


def issue(user):
    token = "tok-%s-%d" % (user, time.monotonic_ns())
    Introspection.tokens[token] = user
    return token


def connect_when_ready(proxy):
    """The proxy advertises token mechanisms once it has seen the upstream's capabilities."""
    deadline = time.time() + 10
    while True:
        c = proxy.connect()
        caps = imapwire.parse_capabilities(c.greet)
        if "AUTH=XOAUTH2" in caps and "AUTH=OAUTHBEARER" in caps:
            return c
        c.close()
        assert time.time() < deadline, "token mechanisms never advertised: %r" % caps
        time.sleep(0.1)


def test_token_mechanisms_follow_the_upstream(start_proxy, dovecot):
    proxy = start_proxy()
    c = connect_when_ready(proxy)
    r = c.command("a", "CAPABILITY")
    caps = imapwire.parse_capabilities(r[0])
    assert {"AUTH=XOAUTH2", "AUTH=OAUTHBEARER", "AUTH=PLAIN"} <= set(caps)
    c.close()


@pytest.mark.parametrize("mech,encode", [("XOAUTH2", xoauth2), ("OAUTHBEARER", oauthbearer)])
@pytest.mark.parametrize("sasl_ir", [True, False])
def test_valid_token_logs_in(start_proxy, dovecot, mech, encode, sasl_ir):
    proxy = start_proxy()
    user = "user1"  # read-only use: the tests may share it
    payload = encode(user, issue(user))
    c = connect_when_ready(proxy)
    if sasl_ir:
        c.send(b"t AUTHENTICATE %s %s\r\n" % (mech.encode(), payload))
    else:
        c.send(b"t AUTHENTICATE %s\r\n" % mech.encode())
        assert c.read_line().startswith(b"+")
        c.send(payload + b"\r\n")
    r = c.read_until_tagged("t")
    assert imapwire.tagged_status(r, "t") == b"OK", r
    assert b"[CAPABILITY " in r[-1] and b"COMPRESS" not in r[-1]
    r = c.command("s", "EXAMINE INBOX")
    assert imapwire.tagged_status(r, "s") == b"OK"
    c.close()


@pytest.mark.parametrize("mech,encode,dummy", [("XOAUTH2", xoauth2, b""),
                                               ("OAUTHBEARER", oauthbearer, b"AQ==")])
def test_refused_token_relays_the_challenge(start_proxy, dovecot, mech, encode, dummy):
    proxy = start_proxy()
    direct = dovecot.connect()
    through = connect_when_ready(proxy)
    answers = []
    for c in (direct, through):
        c.send(b"t AUTHENTICATE %s %s\r\n" % (mech.encode(), encode("user1", "not-a-token")))
        challenge = c.read_line()
        assert challenge.startswith(b"+ "), challenge
        json.loads(base64.b64decode(challenge[2:].strip()))
        c.send(dummy + b"\r\n")
        r = c.read_until_tagged("t")
        answers.append((challenge, imapwire.normalize(r[-1])))
        c.close()
    # The client sees exactly what Dovecot says, challenge and verdict.
    assert answers[0] == answers[1], answers
    assert b"NO [AUTHENTICATIONFAILED]" in answers[1][1]
