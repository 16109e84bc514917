"""A small raw-socket IMAP client for byte-exact tests.

It never interprets more than needed: a *response* is one server line plus every
literal it announces (``{n}``, ``{n+}`` or literal8 ``~{n}`` at the end of a line),
returned as the exact bytes received. Commands can carry synchronizing literals
(wait for the ``+`` continuation) or non-synchronizing ones (LITERAL+, ``{n+}``).
"""

import re
import socket
import ssl

LITERAL_RE = re.compile(rb"~?\{(\d+)\+?\}\r\n\Z")
TIMING_RE = re.compile(rb" \(\d+\.\d+ \+ \d+\.\d+(?: \+ \d+\.\d+)? secs\)")


class ImapError(Exception):
    pass


def tls_context(ca_file):
    """Client TLS context that verifies the server against ca_file only."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Conn:
    def __init__(self, sock, timeout=30.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""
        self.received = []  # every server chunk since the last take_received()

    @classmethod
    def connect(cls, host, port, ca_file=None, tls=False, timeout=30.0):
        s = socket.create_connection((host, port), timeout=timeout)
        if tls:
            s = tls_context(ca_file).wrap_socket(s, server_hostname=host)
        return cls(s, timeout)

    def starttls(self, ca_file, host="127.0.0.1"):
        if self.buf:
            raise ImapError("data buffered before TLS handshake: %r" % self.buf)
        self.sock = tls_context(ca_file).wrap_socket(self.sock, server_hostname=host)

    # -- reading ---------------------------------------------------------
    def _fill(self):
        chunk = self.sock.recv(1 << 18)
        if not chunk:
            raise EOFError("connection closed by server (buffered: %r)" % self.buf[:200])
        self.buf += chunk

    def read_line(self):
        """One CRLF-terminated line (bytes, CRLF included)."""
        start = 0
        while True:
            i = self.buf.find(b"\r\n", start)
            if i >= 0:
                line, self.buf = self.buf[:i + 2], self.buf[i + 2:]
                return line
            start = max(0, len(self.buf) - 1)
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self):
        """One full response: a line and all literals it announces, as raw bytes."""
        parts = []
        while True:
            line = self.read_line()
            parts.append(line)
            m = LITERAL_RE.search(line)
            if not m:
                return b"".join(parts)
            parts.append(self.read_exact(int(m.group(1))))

    def read_until_tagged(self, tag):
        """All responses up to and including the tagged one for `tag`."""
        if isinstance(tag, str):
            tag = tag.encode()
        out = []
        while True:
            r = self.read_response()
            out.append(r)
            if r.startswith(tag + b" "):
                return out

    def greeting(self):
        return self.read_response()

    def at_eof(self, timeout=5.0):
        """True if the server closes the connection (reads nothing more) within timeout."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            while True:
                try:
                    chunk = self.sock.recv(65536)
                except (ConnectionResetError, ssl.SSLError):
                    return True
                if not chunk:
                    return True
                self.buf += chunk
        except socket.timeout:
            return False
        finally:
            try:
                self.sock.settimeout(old)
            except OSError:
                pass

    # -- writing ---------------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def command(self, tag, text, literals=(), nonsync=False):
        """Send `tag text` and return the list of responses (bytes) up to the tagged one.

        `text` may contain ``{}`` placeholders, one per literal in `literals`; each is
        replaced by ``{n}`` (synchronizing: waits for the server's ``+``; the
        continuation line is included in the returned responses) or ``{n+}``.
        """
        if isinstance(text, str):
            text = text.encode()
        pieces = text.split(b"{}")
        if len(pieces) != len(literals) + 1:
            raise ValueError("placeholder count does not match literals")
        out = []
        cur = tag.encode() + b" " + pieces[0]
        for lit, rest in zip(literals, pieces[1:]):
            if nonsync:
                cur += b"{%d+}\r\n" % len(lit) + lit
            else:
                self.send(cur + b"{%d}\r\n" % len(lit))
                while True:
                    r = self.read_response()
                    out.append(r)
                    if r.startswith(b"+"):
                        break
                    if r.startswith(tag.encode() + b" "):
                        return out  # rejected before the literal
                cur = lit
            cur += rest
        self.send(cur + b"\r\n")
        out.extend(self.read_until_tagged(tag))
        return out

    def login(self, user, password, tag="L1", literals=False):
        if literals:
            resp = self.command(tag, "LOGIN {} {}", [user.encode(), password.encode()])
        else:
            resp = self.command(tag, "LOGIN %s %s" % (quote(user), quote(password)))
        if not resp[-1].startswith(tag.encode() + b" OK"):
            raise ImapError("login failed: %r" % resp[-1])
        return resp

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tagged_status(responses, tag):
    last = responses[-1]
    assert last.startswith(tag.encode() + b" "), last
    return last.split(b" ", 2)[1]


def normalize(resp):
    """Drop Dovecot's per-command timing text `(0.001 + 0.000 secs)` from a response."""
    return TIMING_RE.sub(b"", resp)


def literal_payload(resp):
    """The payload of the first literal in a response (bytes), or None."""
    m = re.search(rb"~?\{(\d+)\+?\}\r\n", resp)
    if not m:
        return None
    n = int(m.group(1))
    return resp[m.end():m.end() + n]


def parse_capabilities(line):
    """Capabilities from '* CAPABILITY a b' or '... [CAPABILITY a b] ...' (upper-cased list)."""
    m = re.search(rb"\[CAPABILITY ([^\]]*)\]", line)
    if m:
        caps = m.group(1)
    else:
        m = re.match(rb"\* CAPABILITY (.*)\r\n", line)
        if not m:
            return None
        caps = m.group(1)
    return [c.decode().upper() for c in caps.split()]


def sasl_plain(user, password, authzid=""):
    import base64
    return base64.b64encode(("%s\0%s\0%s" % (authzid, user, password)).encode()).decode()
