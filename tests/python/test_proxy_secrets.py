"""Credentials never reach the proxy's logs, at any level: passwords given with LOGIN (quoted
and as literals), AUTHENTICATE PLAIN (SASL-IR and continuation), AUTHENTICATE LOGIN, failed
and successful logins, with RUST_LOG=trace and both log formats."""

import base64

import pytest

from conftest import dovecot_helper  # noqa: F401
import imapwire


@pytest.mark.parametrize("log_format", ["human", "json"])
def test_no_credentials_in_trace_logs(start_proxy, dovecot, log_format):
    proxy = start_proxy(env={"RUST_LOG": "trace"}, extra_args=["--log-format", log_format])
    user = "bob"
    password = dovecot.users[user]
    wrong = "Wr0ng-Secret-Canary"
    secrets = [password, wrong]

    # LOGIN with a quoted wrong password, then with literals and the right one.
    c = proxy.connect()
    r = c.command("a1", "LOGIN %s %s" % (user, imapwire.quote(wrong)))
    assert imapwire.tagged_status(r, "a1") == b"NO"
    c.login(user, password, tag="a2", literals=True)
    r = c.command("a3", "LOGOUT")
    c.close()

    # AUTHENTICATE PLAIN with SASL-IR, and with a continuation.
    for tag, inline in (("b1", True), ("b2", False)):
        c = proxy.connect()
        payload = imapwire.sasl_plain(user, password)
        secrets.append(payload)
        if inline:
            r = c.command(tag, "AUTHENTICATE PLAIN %s" % payload)
        else:
            c.send(b"%s AUTHENTICATE PLAIN\r\n" % tag.encode())
            assert c.read_line().startswith(b"+")
            c.send(payload.encode() + b"\r\n")
            r = c.read_until_tagged(tag)
        assert imapwire.tagged_status(r, tag) == b"OK"
        c.close()

    # AUTHENTICATE LOGIN (user and password in two continuations).
    c = proxy.connect()
    c.send(b"c1 AUTHENTICATE LOGIN\r\n")
    assert c.read_line().startswith(b"+ ")
    c.send(base64.b64encode(user.encode()) + b"\r\n")
    assert c.read_line().startswith(b"+ ")
    b64pw = base64.b64encode(password.encode())
    secrets.append(b64pw.decode())
    c.send(b64pw + b"\r\n")
    r = c.read_until_tagged("c1")
    assert imapwire.tagged_status(r, "c1") == b"OK"
    c.close()

    proxy.stop()
    logs = proxy.stderr_path.read_text(errors="replace")
    assert "logged in" in logs and "TRACE" in logs.upper(), "trace logging did not run"
    for s in secrets:
        assert s not in logs, "a credential reached the log"
