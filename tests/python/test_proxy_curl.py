"""curl as an IMAP client: the same URL through the proxy and straight to Dovecot
gives the same bytes."""

import subprocess

import pytest

from conftest import HOST, dovecot_helper, require_tool


@pytest.fixture(autouse=True)
def _curl_installed():
    require_tool("curl", "curl")


USER = "bob"


def curl(url, ca, user, pw, *extra):
    r = subprocess.run(["curl", "-sS", "--max-time", "60", "--cacert", ca, "-u",
                        "%s:%s" % (user, pw), *extra, url],
                       capture_output=True, timeout=90)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout


@pytest.mark.parametrize("uid", [1, 4, 5, 10])
def test_curl_fetch_same_as_direct(proxy, dovecot, uid):
    pw = dovecot.users[USER]
    direct = curl("imaps://%s:%d/INBOX;UID=%d" % (HOST, dovecot.imaps_port, uid),
                  dovecot.ca_file, USER, pw)
    via = curl("imaps://%s:%d/INBOX;UID=%d" % (HOST, proxy.tls_port, uid),
               proxy.cert, USER, pw)
    assert via == direct
    assert via == dovecot_helper.message_bytes("INBOX", uid).replace(b"\n", b"\r\n")


def test_curl_list_same_as_direct(proxy, dovecot):
    pw = dovecot.users[USER]
    direct = curl("imaps://%s:%d/" % (HOST, dovecot.imaps_port), dovecot.ca_file, USER, pw)
    via = curl("imaps://%s:%d/" % (HOST, proxy.tls_port), proxy.cert, USER, pw)
    assert via == direct
    assert b"Entw&APw-rfe" in via and b'"Folder With Spaces"' in via


def test_curl_starttls_on_plain_listener(proxy, dovecot):
    via = curl("imap://%s:%d/INBOX;UID=2" % (HOST, proxy.plain_port), proxy.cert, USER,
               dovecot.users[USER], "--ssl-reqd")
    assert via == dovecot_helper.message_bytes("INBOX", 2).replace(b"\n", b"\r\n")


def test_curl_nonascii_mailbox(proxy, dovecot):
    url = "imaps://%s:%d/%s;UID=1" % (HOST, proxy.tls_port,
                                      dovecot_helper.MAILBOX_WIRE_NAMES["Entwürfe"])
    via = curl(url, proxy.cert, USER, dovecot.users[USER])
    assert via == dovecot_helper.message_bytes("Entwürfe", 1).replace(b"\n", b"\r\n")


def test_curl_wrong_password_fails(proxy):
    r = subprocess.run(["curl", "-sS", "--max-time", "30", "--cacert", proxy.cert, "-u",
                        "bob:wrong", "imaps://%s:%d/" % (HOST, proxy.tls_port)],
                       capture_output=True, timeout=60)
    assert r.returncode == 67, r  # CURLE_LOGIN_DENIED
