"""A real HAProxy in front of imapgate, sending the PROXY protocol (v1 and v2), the way replicas
are deployed behind a TCP load balancer: clients log in through HAProxy, and imapgate logs the
client's own address (from the header) with the balancer's as `via`."""

import imaplib
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import HOST
import imapwire

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def haproxy(tmp_path):
    """start(backend_port, version) -> frontend port; HAProxy stopped afterwards."""
    procs = []

    def start(backend_port, version):
        send = "send-proxy-v2" if version == 2 else "send-proxy"
        for _ in range(5):
            port = free_port()
            cfg = tmp_path / ("haproxy-%d.cfg" % port)
            cfg.write_text(
                "global\n  maxconn 100\n"
                "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n"
                "  timeout server 60s\n"
                "frontend imap\n  bind %s:%d\n  default_backend gate\n"
                "backend gate\n  server gate1 %s:%d %s\n" % (HOST, port, HOST, backend_port, send))
            p = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            deadline = time.time() + 5
            while time.time() < deadline and p.poll() is None:
                try:
                    socket.create_connection((HOST, port), timeout=0.2).close()
                    procs.append(p)
                    return port
                except OSError:
                    time.sleep(0.05)
            p.kill()
            p.wait()
        raise RuntimeError("haproxy did not start")

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


@pytest.mark.parametrize("version", [1, 2])
def test_login_through_haproxy_logs_the_client_address(start_proxy, haproxy, dovecot, version):
    proxy = start_proxy(extra_args=["--proxy-protocol"])
    front = haproxy(proxy.tls_port, version)
    user, password = dovecot.take_user()
    m = imaplib.IMAP4_SSL(HOST, front, ssl_context=imapwire.tls_context(proxy.cert))
    client_port = m.sock.getsockname()[1]
    assert m.login(user, password)[0] == "OK"
    typ, data = m.select("INBOX", readonly=True)
    assert typ == "OK"
    m.logout()
    deadline = time.time() + 5
    log = ""
    while time.time() < deadline:
        log = proxy.stderr_path.read_text(errors="replace")
        if "client=%s:%d" % (HOST, client_port) in log:
            break
        time.sleep(0.1)
    assert "client=%s:%d" % (HOST, client_port) in log, log[-2000:]
    assert "via=%s:" % HOST in log


def test_direct_connection_without_header_is_refused(start_proxy):
    proxy = start_proxy(extra_args=["--proxy-protocol"],
                        env={"IMAPGATE_TLS__HANDSHAKE_TIMEOUT_SECS": "1"})
    s = socket.create_connection((HOST, proxy.plain_port), timeout=10)
    s.sendall(b"a1 CAPABILITY\r\n")
    assert s.recv(100) == b""
    s.close()
