#!/usr/bin/env python3
"""A minimal stand-in for `imapgate`, used only to validate this test suite.

It is NOT the product and test.sh never runs it. It implements just enough of
the CLI contract the suite codes against so the tests can be checked while the
Rust proxy is being written:

    IMAPGATE_BIN=tests/python/reference_proxy.py IMAPGATE_PROXY_WIP=0 \\
        python3 -m pytest -q tests/python

    reference_proxy.py gen-cert --cert OUT.pem --key OUT.key HOST [HOST...]
    reference_proxy.py serve --upstream H:P --upstream-tls implicit|starttls|none
        [--upstream-ca FILE] [--listen-tls H:P] [--listen H:P] --cert F --key F
        [--insecure-auth]
    env IMAPGATE_AUTH__PLAINTEXT=never|loopback|always (default loopback)

Behaviour: own greeting with CAPABILITY; CAPABILITY/NOOP/ID/STARTTLS/LOGOUT
answered before login; LOGIN and AUTHENTICATE PLAIN (with or without SASL-IR)
are replayed upstream as AUTHENTICATE PLAIN; then bytes are relayed, with
COMPRESS=DEFLATE removed from capability lists (literal-aware). SIGTERM sends
`* BYE` to every session and exits 0.
"""

import argparse
import asyncio
import base64
import ipaddress
import os
import re
import signal
import ssl
import subprocess
import sys

LIT_RE = re.compile(rb"~?\{(\d+)\+?\}\r\n\Z")
PRE_CAPS = "IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE"


def gen_cert(a):
    sans = []
    for h in a.hosts:
        try:
            ipaddress.ip_address(h)
            sans.append("IP:" + h)
        except ValueError:
            sans.append("DNS:" + h)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "365", "-subj",
                    "/CN=" + a.hosts[0], "-keyout", a.key, "-out", a.cert,
                    "-addext", "subjectAltName=" + ",".join(sans),
                    "-addext", "basicConstraints=critical,CA:TRUE"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return 0


def log(*args):
    print("reference-proxy:", *args, file=sys.stderr, flush=True)


class Session:
    def __init__(self, srv, reader, writer, tls):
        self.srv, self.r, self.w, self.tls = srv, reader, writer, tls
        self.up_r = self.up_w = None

    def caps(self):
        c = PRE_CAPS
        if not self.tls:
            c += " STARTTLS"
            if self.srv.plaintext == "never":
                c += " LOGINDISABLED"
                return c
        return c + " AUTH=PLAIN"

    async def send(self, data):
        self.w.write(data)
        await self.w.drain()

    async def read_cmd_line(self):
        """A command line with its literals (synchronizing ones get '+ OK')."""
        parts = []
        while True:
            line = await self.r.readline()
            if not line:
                return None
            parts.append(line)
            m = LIT_RE.search(line)
            if not m:
                return b"".join(parts)
            if b"+}" not in line[-5:]:
                await self.send(b"+ OK\r\n")
            parts.append(await self.r.readexactly(int(m.group(1))))

    def login_allowed(self):
        if self.tls:
            return True
        return self.srv.plaintext != "never"

    async def run(self):
        await self.send(b"* OK [CAPABILITY " + self.caps().encode() + b"] imapgate ready.\r\n")
        while True:
            line = await self.read_cmd_line()
            if line is None:
                return
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            cmd, _, args = rest.partition(b" ")
            c = cmd.upper()
            if c == b"CAPABILITY":
                await self.send(b"* CAPABILITY " + self.caps().encode() + b"\r\n" + tag +
                                b" OK Capability completed.\r\n")
            elif c == b"NOOP":
                await self.send(tag + b" OK NOOP completed.\r\n")
            elif c == b"ID":
                await self.send(b'* ID ("name" "imapgate")\r\n' + tag + b" OK ID completed.\r\n")
            elif c == b"LOGOUT":
                await self.send(b"* BYE Logging out\r\n" + tag + b" OK Logout completed.\r\n")
                return
            elif c == b"STARTTLS" and not self.tls:
                await self.send(tag + b" OK Begin TLS negotiation now.\r\n")
                self.r._buffer.clear()  # never run plaintext pipelined after STARTTLS
                await self.w.start_tls(self.srv.server_ctx)
                self.tls = True
            elif c == b"LOGIN":
                if not self.login_allowed():
                    await self.send(tag + b" NO [PRIVACYREQUIRED] Plaintext authentication disallowed.\r\n")
                    continue
                vals = self._login_literals(line)
                if len(vals) != 2:
                    await self.send(tag + b" BAD Invalid arguments.\r\n")
                    continue
                if await self.upstream_login(tag, vals[0], vals[1]):
                    return await self.relay()
            elif c == b"AUTHENTICATE":
                a = args.split(b" ")
                if a[0].upper() != b"PLAIN":
                    await self.send(tag + b" NO Unsupported authentication mechanism.\r\n")
                    continue
                if not self.login_allowed():
                    await self.send(tag + b" NO [PRIVACYREQUIRED] Plaintext authentication disallowed.\r\n")
                    continue
                if len(a) > 1:
                    ir = a[1]
                else:
                    await self.send(b"+ \r\n")
                    ir = (await self.r.readline()).strip()
                    if ir == b"*":
                        await self.send(tag + b" BAD Authentication aborted by client.\r\n")
                        continue
                try:
                    _, user, pw = base64.b64decode(ir, validate=True).split(b"\0")
                except Exception:
                    await self.send(tag + b" BAD Invalid base64 data.\r\n")
                    continue
                if await self.upstream_login(tag, user, pw):
                    return await self.relay()
            else:
                await self.send(tag + b" BAD Error in IMAP command: not logged in.\r\n")

    def _login_literals(self, line):
        vals, i = [], line.find(b" ", line.find(b" ") + 1) + 1
        while i < len(line) and line[i:i + 2] != b"\r\n":
            if line[i:i + 1] == b" ":
                i += 1
                continue
            m = re.match(rb"~?\{(\d+)\+?\}\r\n", line[i:])
            if m:
                n = int(m.group(1))
                start = i + m.end()
                vals.append(line[start:start + n])
                i = start + n
            else:
                m2 = re.match(rb'"((?:[^"\\]|\\.)*)"|([^ \r]+)', line[i:])
                v = m2.group(1)
                vals.append(re.sub(rb"\\(.)", rb"\1", v) if v is not None else m2.group(2))
                i += m2.end()
        return vals

    async def upstream_login(self, tag, user, pw):
        s = self.srv
        ctx = s.upstream_ctx
        try:
            if s.upstream_tls == "implicit":
                self.up_r, self.up_w = await asyncio.open_connection(
                    s.up_host, s.up_port, ssl=ctx, server_hostname=s.up_host)
            else:
                self.up_r, self.up_w = await asyncio.open_connection(s.up_host, s.up_port)
            await self.up_r.readline()
            if s.upstream_tls == "starttls":
                self.up_w.write(b"S STARTTLS\r\n")
                await self.up_w.drain()
                while not (await self.up_r.readline()).startswith(b"S "):
                    pass
                await self.up_w.start_tls(ctx, server_hostname=s.up_host)
            ir = base64.b64encode(b"\0" + user + b"\0" + pw)
            self.up_w.write(b"A AUTHENTICATE PLAIN " + ir + b"\r\n")
            await self.up_w.drain()
            while True:
                line = await self.up_r.readline()
                if not line:
                    raise ConnectionError("upstream closed")
                if line.startswith(b"A "):
                    break
        except Exception as e:  # noqa: BLE001
            log("upstream failed:", e)
            await self.send(tag + b" NO [UNAVAILABLE] Upstream server unavailable.\r\n")
            return False
        await self.send(tag + filter_caps(line[1:]))
        if line.startswith(b"A OK"):
            return True
        self.up_w.close()
        return False

    async def relay(self):
        async def c2s():
            try:
                while True:
                    d = await self.r.read(65536)
                    if not d:
                        break
                    self.up_w.write(d)
                    await self.up_w.drain()
            finally:
                try:
                    self.up_w.close()
                except Exception:  # noqa: BLE001
                    pass

        async def s2c():
            while True:
                line = await self.up_r.readline()
                if not line:
                    break
                m = LIT_RE.search(line)
                if m:
                    self.w.write(line)
                    n = int(m.group(1))
                    while n:
                        d = await self.up_r.read(min(n, 65536))
                        if not d:
                            return
                        self.w.write(d)
                        n -= len(d)
                        await self.w.drain()
                else:
                    self.w.write(filter_caps(line))
                await self.w.drain()

        t1 = asyncio.ensure_future(c2s())
        try:
            await s2c()
        finally:
            t1.cancel()


def filter_caps(line):
    if line.startswith(b"* CAPABILITY ") or b"[CAPABILITY " in line:
        line = line.replace(b" COMPRESS=DEFLATE", b"")
    return line


class Server:
    def __init__(self, a):
        self.up_host, _, port = a.upstream.rpartition(":")
        self.up_port = int(port)
        self.upstream_tls = a.upstream_tls
        self.insecure = a.insecure_auth
        self.plaintext = os.environ.get("IMAPGATE_AUTH__PLAINTEXT", "loopback")
        self.server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_ctx.load_cert_chain(a.cert, a.key)
        self.upstream_ctx = ssl.create_default_context(cafile=a.upstream_ca)
        self.sessions = set()

    async def handle(self, reader, writer, tls):
        sess = Session(self, reader, writer, tls)
        self.sessions.add(sess)
        try:
            await sess.run()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        finally:
            self.sessions.discard(sess)
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass
            if sess.up_w:
                sess.up_w.close()


async def serve(a):
    srv = Server(a)
    listeners = []
    for opt, tls in ((a.listen_tls, True), (a.listen, False)):
        if not opt:
            continue
        host, _, port = opt.rpartition(":")
        s = await asyncio.start_server(
            lambda r, w, tls=tls: srv.handle(r, w, tls), host, int(port),
            ssl=srv.server_ctx if tls else None)
        listeners.append(s)
        sock = s.sockets[0].getsockname()
        print("LISTENING %s %s:%d" % ("tls" if tls else "plain", sock[0], sock[1]), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for s in listeners:
        s.close()
    for sess in list(srv.sessions):
        try:
            sess.w.write(b"* BYE imapgate shutting down\r\n")
            await asyncio.wait_for(sess.w.drain(), 2)
            sess.w.close()
        except Exception:  # noqa: BLE001
            pass
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen-cert")
    g.add_argument("--cert", required=True)
    g.add_argument("--key", required=True)
    g.add_argument("hosts", nargs="+")
    s = sub.add_parser("serve")
    s.add_argument("--upstream", required=True)
    s.add_argument("--upstream-tls", choices=["implicit", "starttls", "none"], default="implicit")
    s.add_argument("--upstream-ca")
    s.add_argument("--listen-tls")
    s.add_argument("--listen")
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--insecure-auth", action="store_true")
    a = ap.parse_args()
    if a.cmd == "gen-cert":
        return gen_cert(a)
    return asyncio.run(serve(a))


if __name__ == "__main__":
    sys.exit(main())
