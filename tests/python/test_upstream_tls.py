"""The upstream's certificate is verified: against the system roots by default (where Dovecot's
self-signed certificate is not trusted), against a configured CA file, and for the configured
server name (SNI). A failed verification ends the login with `* BYE [UNAVAILABLE]`."""

import pytest

import imapwire


def login_result(proxy, dovecot):
    user, password = dovecot.take_user()
    c = proxy.connect()
    c.send(b"a LOGIN %s %s\r\n" % (imapwire.quote(user).encode(), imapwire.quote(password).encode()))
    got = []
    while True:
        try:
            line = c.read_line()
        except Exception:
            break
        if not line:
            break
        got.append(line)
        if line.startswith(b"a "):
            break
    c.close()
    return got


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_untrusted_upstream_is_refused(start_proxy, dovecot, mode):
    proxy = start_proxy(upstream_tls=mode, upstream_ca=False)
    got = login_result(proxy, dovecot)
    assert got and got[0].startswith(b"* BYE [UNAVAILABLE]"), got
    proxy.stop()
    log = proxy.stderr_path.read_text(errors="replace")
    assert "certificate" in log.lower(), log[-2000:]


def test_wrong_server_name_is_refused(start_proxy, dovecot):
    proxy = start_proxy(env={"IMAPGATE_UPSTREAM__SERVER_NAME": "imap.wrong.example"})
    got = login_result(proxy, dovecot)
    assert got and got[0].startswith(b"* BYE [UNAVAILABLE]"), got


def test_server_name_matching_the_certificate_works(start_proxy, dovecot):
    # Dovecot's certificate names DNS:localhost and IP:127.0.0.1; connect by IP, verify by name.
    proxy = start_proxy(env={"IMAPGATE_UPSTREAM__SERVER_NAME": "localhost"})
    got = login_result(proxy, dovecot)
    assert got and got[-1].startswith(b"a OK"), got
