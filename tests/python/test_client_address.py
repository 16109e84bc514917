"""The client's address reaches the upstream: with `upstream.forward_client_address`, the proxy
sends Dovecot `ID ("x-originating-ip" ...)` before login, and Dovecot (trusting the proxy through
`login_trusted_networks`) logs the client's address -- here the one a load balancer named in a
PROXY header -- instead of the proxy's."""

import os
import socket
import time

import pytest

from conftest import HOST, Dovecot, dovecot_helper
import imapwire


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory):
    d = tmp_path_factory.mktemp("dovecot-trusted")
    info = dovecot_helper.start(str(d), users=4,
                                extra_config="login_trusted_networks = 127.0.0.0/8\n")
    try:
        yield Dovecot(info)
    finally:
        dovecot_helper.stop(str(d))


def login_via_balancer(proxy, user, password, client_ip, client_port):
    s = socket.create_connection((HOST, proxy.plain_port), timeout=10)
    s.sendall(b"PROXY TCP4 %s 127.0.0.1 %d 143\r\n" % (client_ip.encode(), client_port))
    c = imapwire.Conn(s)
    c.greeting()
    c.login(user, password)
    c.command("z", "LOGOUT")
    c.close()


def login_line(dovecot, user):
    deadline = time.time() + 5
    while time.time() < deadline:
        with open(os.path.join(dovecot.dir, "log", "dovecot.log"), errors="replace") as f:
            lines = [l for l in f if "Login: user=<%s>" % user in l]
        if lines:
            return lines[-1]
        time.sleep(0.1)
    raise AssertionError("no login line for %s:\n%s" % (user, dovecot.log_tail()))


@pytest.mark.parametrize("forward", [True, False])
def test_upstream_sees_the_client_address(start_proxy, dovecot, forward):
    env = {"IMAPGATE_UPSTREAM__FORWARD_CLIENT_ADDRESS": "true" if forward else "false"}
    proxy = start_proxy(upstream_tls="none", extra_args=["--proxy-protocol"], env=env)
    user, password = dovecot.take_user()
    login_via_balancer(proxy, user, password, "127.0.0.99", 40123)
    line = login_line(dovecot, user)
    if forward:
        assert "rip=127.0.0.99" in line, line
    else:
        assert "rip=127.0.0.1," in line, line
