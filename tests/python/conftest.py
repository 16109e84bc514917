"""Fixtures: a real Dovecot (scripts/dovecot.py) and the imapgate proxy in front of it.

- ``dovecot``: one seeded Dovecot per test module (alice, bob, carol, plus
  user1..userN with N = the module's DOVECOT_USERS, default 4). Tests that change
  mailboxes take a user of their own with ``dovecot.take_user()``.
- ``proxy_cert``: a cert/key pair made once per session with ``imapgate gen-cert``.
- ``start_proxy``: factory starting ``imapgate serve`` in front of the module's
  Dovecot (any upstream mode / extra args / env); stopped at module end.
- ``proxy``: the default proxy (upstream implicit TLS, verified with Dovecot's CA).

The binary is ``$IMAPGATE_BIN`` or target/debug/imapgate. Everything listens on
127.0.0.1 with kernel-chosen ports.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dovecot as dovecot_helper  # noqa: E402
import imapwire  # noqa: E402

HOST = "127.0.0.1"
DEFAULT_USERS = 4

def proxy_bin():
    b = os.environ.get("IMAPGATE_BIN")
    return os.path.abspath(b) if b else str(ROOT / "target" / "debug" / "imapgate")


def proxy_env(extra=None):
    """The proxy's environment: ours without IMAPGATE_* config overrides, plus `extra`."""
    # (IMAPGATE_BIN names the binary for the tests; the proxy would read it as config.)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAPGATE_")}
    env.setdefault("RUST_BACKTRACE", "1")
    # Every client here comes from 127.0.0.1 and module-scoped proxies live across tests: the
    # per-address limits are off and failed-login delays short (tests/guard.rs covers them).
    env.update({
        "IMAPGATE_LIMITS__ACCEPT_RATE_PER_IP": "0",
        "IMAPGATE_LIMITS__MAX_CONNECTIONS_PER_IP": "0",
        "IMAPGATE_LIMITS__MAX_PREAUTH_PER_IP": "0",
        "IMAPGATE_AUTH_PENALTY__BASE_DELAY_MS": "10",
        "IMAPGATE_AUTH_PENALTY__MAX_DELAY_SECS": "1",
        "IMAPGATE_AUTH_PENALTY__MAX_FAILURES_PER_IP": "1000",
    })
    env.update(extra or {})
    return env


class Dovecot:
    def __init__(self, info):
        self.info = info
        self.host = info["host"]
        self.imap_port = info["imap_port"]
        self.imaps_port = info["imaps_port"]
        self.ca_file = info["ca_file"]
        self.dir = info["dir"]
        self.users = info["users"]
        self._next = 1

    def take_user(self):
        """A user no other test of this module touches: (name, password)."""
        if "user%d" % self._next not in self.users:
            raise RuntimeError("out of fresh users; raise DOVECOT_USERS in the test module")
        u = "user%d" % self._next
        self._next += 1
        return u, self.users[u]

    def connect(self, tls=True):
        """Raw connection straight to Dovecot (implicit TLS by default); greeting consumed."""
        if tls:
            c = imapwire.Conn.connect(self.host, self.imaps_port, self.ca_file, tls=True)
        else:
            c = imapwire.Conn.connect(self.host, self.imap_port)
        c.greeting()
        return c

    def log_tail(self, n=30):
        try:
            with open(os.path.join(self.dir, "log", "dovecot.log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


@pytest.fixture(scope="module")
def dovecot(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("dovecot")
    info = dovecot_helper.start(str(d), users=getattr(request.module, "DOVECOT_USERS",
                                                      DEFAULT_USERS))
    try:
        yield Dovecot(info)
    finally:
        dovecot_helper.stop(str(d))


class Proxy:
    def __init__(self, args, env, workdir, cert):
        self.args = args
        self.env = env
        self.workdir = workdir
        self.cert = cert
        self.proc = None
        self.tls_port = None
        self.plain_port = None
        self.returncode = None

    def start(self, timeout=20.0):
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, env=self.env, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        want = {a for a in ("--listen-tls", "--listen") if a in self.args}
        while True:
            listening = self._listening()
            if all(("tls" if a == "--listen-tls" else "plain") in listening for a in want):
                self.tls_port = listening.get("tls")
                self.plain_port = listening.get("plain")
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("imapgate exited with %s before listening\n%s"
                                   % (self.proc.returncode, self.output()))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("imapgate did not print LISTENING lines in %ss\n%s"
                                   % (timeout, self.output()))
            time.sleep(0.02)

    def _listening(self):
        found = {}
        try:
            text = self.stdout_path.read_text(errors="replace")
        except OSError:
            return found
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "LISTENING" and parts[1] in ("tls", "plain"):
                host, _, port = parts[2].rpartition(":")
                found[parts[1]] = int(port)
        return found

    def output(self):
        out = []
        for p in (self.stdout_path, self.stderr_path):
            try:
                out.append("==> %s <==\n%s" % (p.name, p.read_text(errors="replace")[-6000:]))
            except OSError:
                pass
        return "\n".join(out)

    def connect(self, tls=True, greeting=True):
        """Raw connection to the proxy (implicit TLS listener, or the plain one)."""
        if tls:
            c = imapwire.Conn.connect(HOST, self.tls_port, self.cert, tls=True)
        else:
            c = imapwire.Conn.connect(HOST, self.plain_port)
        if greeting:
            c.greet = c.greeting()
        return c

    def stop(self, timeout=10.0):
        """SIGTERM, wait; SIGKILL after timeout. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.returncode = self.proc.returncode
        return self.returncode


@pytest.fixture(scope="session")
def proxy_cert(tmp_path_factory):
    """(cert, key) made by `imapgate gen-cert` for localhost and 127.0.0.1."""
    d = tmp_path_factory.mktemp("proxy-cert")
    cert, key = d / "proxy.pem", d / "proxy.key"
    r = subprocess.run([proxy_bin(), "gen-cert", "--cert", str(cert), "--key", str(key),
                        "localhost", "127.0.0.1"],
                       capture_output=True, text=True, timeout=60, env=proxy_env())
    if r.returncode != 0 or not cert.is_file() or not key.is_file():
        raise RuntimeError("imapgate gen-cert failed (exit %s)\n%s%s"
                           % (r.returncode, r.stdout, r.stderr))
    return str(cert), str(key)


@pytest.fixture(scope="module")
def start_proxy(dovecot, proxy_cert, tmp_path_factory):
    """Factory: start_proxy(upstream_tls="implicit", extra_args=(), env=None) -> Proxy."""
    started = []

    def start(upstream_tls="implicit", extra_args=(), env=None, listen_plain=True,
              listen_tls=True, upstream_ca=True, upstream_port=None):
        cert, key = proxy_cert
        port = dovecot.imaps_port if upstream_tls == "implicit" else dovecot.imap_port
        port = upstream_port or port
        args = [proxy_bin(), "serve", "--upstream", "%s:%d" % (HOST, port),
                "--upstream-tls", upstream_tls]
        if upstream_ca and upstream_tls != "none":
            args += ["--upstream-ca", dovecot.ca_file]
        if listen_tls:
            args += ["--listen-tls", "%s:0" % HOST]
        if listen_plain:
            args += ["--listen", "%s:0" % HOST]
        args += ["--cert", cert, "--key", key]
        args += list(extra_args)
        p = Proxy(args, proxy_env(env), tmp_path_factory.mktemp("proxy"), cert)
        started.append(p)
        return p.start()

    yield start
    for p in started:
        p.stop()


@pytest.fixture(scope="module")
def proxy(start_proxy):
    return start_proxy()


def require_tool(name, package):
    """Skips the test when `name` is not on PATH, except under scripts/test.sh (which installed
    it and sets TEST_IMAPGATE_REQUIRE_TOOLS): there a missing tool fails, so a fresh machine
    without the install step cannot pass green."""
    import shutil
    if shutil.which(name):
        return
    if os.environ.get("TEST_IMAPGATE_REQUIRE_TOOLS"):
        pytest.fail("%s (Debian package %s) is required but not on PATH" % (name, package))
    pytest.skip("%s (Debian package %s) not installed" % (name, package))
