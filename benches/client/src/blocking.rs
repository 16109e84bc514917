//! A minimal blocking IMAP client connection for the sequential measurements (latency,
//! throughput): one socket, one reusable read buffer, no allocation per response. Responses are
//! read line by line; literals (`{n}`) are skipped without copying, so a 7 MB FETCH costs the
//! client little more than the `read` calls.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::tls;

/// Read buffer size (also the largest line the client accepts).
const BUF: usize = 256 * 1024;

enum Sock {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Plain(s) => s.read(buf),
            Sock::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Plain(s) => s.write(buf),
            Sock::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Plain(s) => s.flush(),
            Sock::Tls(s) => s.flush(),
        }
    }
}

/// One IMAP connection.
pub struct Conn {
    sock: Sock,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    next_tag: u64,
    cmd: Vec<u8>,
    /// Negotiated TLS version and cipher suite, if TLS.
    pub cipher: Option<String>,
}

fn proto_err(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// `{123}\r\n` (or `{123+}`) at the end of a line: the literal's length.
pub fn literal_len(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|&b| b == b'{')?;
    let digits = &line[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl Conn {
    /// Connects (and completes the TLS handshake when `tls` is given), reads the greeting.
    pub fn connect(addr: &str, tls: Option<&Arc<ClientConfig>>) -> io::Result<Conn> {
        let tcp = TcpStream::connect(addr)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
        let (sock, cipher) = match tls {
            None => (Sock::Plain(tcp), None),
            Some(cfg) => {
                let conn = ClientConnection::new(cfg.clone(), tls::server_name())
                    .map_err(io::Error::other)?;
                let mut s = StreamOwned::new(conn, tcp);
                while s.conn.is_handshaking() {
                    s.conn.complete_io(&mut s.sock)?;
                }
                let cipher = format!(
                    "{:?} {:?}",
                    s.conn.protocol_version().unwrap(),
                    s.conn.negotiated_cipher_suite().unwrap().suite()
                );
                (Sock::Tls(Box::new(s)), Some(cipher))
            }
        };
        let mut c = Conn {
            sock,
            buf: vec![0u8; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            next_tag: 1,
            cmd: Vec::with_capacity(256),
            cipher,
        };
        let greeting = c.read_line()?;
        if !greeting.starts_with(b"* OK") {
            return Err(proto_err(format!(
                "unexpected greeting: {}",
                greeting.escape_ascii()
            )));
        }
        Ok(c)
    }

    /// Connects, logs in and selects `mailbox`.
    pub fn open(
        addr: &str,
        tls: Option<&Arc<ClientConfig>>,
        user: &str,
        pass: &str,
        mailbox: &str,
    ) -> io::Result<Conn> {
        let mut c = Conn::connect(addr, tls)?;
        let login = format!("LOGIN {} {}", quote(user), quote(pass));
        let (_, ok, last) = c.command_verbose(login.as_bytes())?;
        if !ok {
            return Err(proto_err(format!("LOGIN failed: {}", last.escape_ascii())));
        }
        let (_, ok, last) = c.command_verbose(format!("SELECT {}", quote(mailbox)).as_bytes())?;
        if !ok {
            return Err(proto_err(format!("SELECT failed: {}", last.escape_ascii())));
        }
        Ok(c)
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < 16 * 1024 {
            if self.start == 0 {
                return Err(proto_err("line longer than the client's buffer"));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.sock.read(&mut self.buf[self.end..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        self.end += n;
        Ok(())
    }

    /// The next line's range in `buf` (with its CRLF), consumed.
    fn next_line(&mut self) -> io::Result<(usize, usize)> {
        let mut searched = 0;
        loop {
            let window = &self.buf[self.start + searched..self.end];
            if let Some(i) = window.iter().position(|&b| b == b'\n') {
                let s = self.start;
                let e = self.start + searched + i + 1;
                self.start = e;
                return Ok((s, e));
            }
            searched = self.end - self.start;
            // `fill` may move the data to the front; `searched` is relative, so it holds.
            self.fill()?;
        }
    }

    /// Reads one line (for greetings and continuation requests).
    pub fn read_line(&mut self) -> io::Result<Vec<u8>> {
        let (s, e) = self.next_line()?;
        Ok(self.buf[s..e].to_vec())
    }

    /// Skips `n` literal bytes.
    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let avail = (self.end - self.start) as u64;
        if avail >= n {
            self.start += n as usize;
            return Ok(());
        }
        n -= avail;
        self.start = 0;
        self.end = 0;
        while n > 0 {
            let got = self.sock.read(&mut self.buf[..])?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed inside a literal",
                ));
            }
            if (got as u64) > n {
                self.start = n as usize;
                self.end = got;
                n = 0;
            } else {
                n -= got as u64;
            }
        }
        Ok(())
    }

    /// Reads responses until the tagged one. Returns (bytes received, OK?, tagged line).
    fn read_tagged(&mut self, tag: &[u8]) -> io::Result<(u64, bool, Vec<u8>)> {
        let mut total = 0u64;
        let mut new_response = true;
        loop {
            let (s, e) = self.next_line()?;
            total += (e - s) as u64;
            let line = &self.buf[s..e];
            if new_response
                && line.len() > tag.len()
                && line.starts_with(tag)
                && line[tag.len()] == b' '
            {
                let ok = line[tag.len() + 1..].starts_with(b"OK");
                return Ok((total, ok, line.to_vec()));
            }
            match literal_len(line) {
                Some(n) => {
                    self.skip(n)?;
                    total += n;
                    new_response = false;
                }
                None => new_response = true,
            }
        }
    }

    /// Sends `tag SP body CRLF` and reads up to the tagged response.
    pub fn command_verbose(&mut self, body: &[u8]) -> io::Result<(u64, bool, Vec<u8>)> {
        let tag = self.write_command(body)?;
        let tag = tag.to_vec();
        self.read_tagged(&tag)
    }

    /// Sends a command and reads its responses; returns the bytes received. Not OK is an error.
    pub fn command(&mut self, body: &[u8]) -> io::Result<u64> {
        let (n, ok, last) = self.command_verbose(body)?;
        if !ok {
            return Err(proto_err(format!(
                "command {} failed: {}",
                String::from_utf8_lossy(body),
                last.escape_ascii()
            )));
        }
        Ok(n)
    }

    fn write_command(&mut self, body: &[u8]) -> io::Result<Vec<u8>> {
        self.cmd.clear();
        write!(self.cmd, "b{}", self.next_tag)?;
        self.next_tag += 1;
        let tag = self.cmd.clone();
        self.cmd.push(b' ');
        self.cmd.extend_from_slice(body);
        self.cmd.extend_from_slice(b"\r\n");
        self.sock.write_all(&self.cmd)?;
        self.sock.flush()?;
        Ok(tag)
    }

    /// Pipelining: writes `depth` commands (cycling over `cmds` from `start`) in one write, then
    /// reads every tagged response, in order. Not OK is an error.
    pub fn batch(&mut self, cmds: &[Vec<u8>], start: usize, depth: usize) -> io::Result<()> {
        self.cmd.clear();
        let first = self.next_tag;
        for i in 0..depth {
            write!(self.cmd, "b{} ", self.next_tag)?;
            self.next_tag += 1;
            self.cmd.extend_from_slice(&cmds[(start + i) % cmds.len()]);
            self.cmd.extend_from_slice(b"\r\n");
        }
        self.sock.write_all(&self.cmd)?;
        self.sock.flush()?;
        let mut tag = Vec::with_capacity(24);
        for t in first..self.next_tag {
            tag.clear();
            write!(tag, "b{t}")?;
            let (_, ok, last) = self.read_tagged(&tag)?;
            if !ok {
                return Err(proto_err(format!(
                    "pipelined command failed: {}",
                    last.escape_ascii()
                )));
            }
        }
        Ok(())
    }

    /// Sends a login command (LOGIN, or AUTHENTICATE with an initial response) and reads up to
    /// its tagged answer. A continuation request (`+ ...`: XOAUTH2's error challenge, or a
    /// server without SASL-IR asking for the response) is answered with an empty line, which
    /// ends the exchange, so a refused login comes back as a NO instead of hanging. A `* BYE` is
    /// an error. Returns (OK?, tagged line).
    pub fn login_command(&mut self, body: &[u8]) -> io::Result<(bool, Vec<u8>)> {
        let tag = self.write_command(body)?;
        loop {
            let (s, e) = self.next_line()?;
            let line = &self.buf[s..e];
            if line.len() > tag.len() && line.starts_with(&tag) && line[tag.len()] == b' ' {
                return Ok((line[tag.len() + 1..].starts_with(b"OK"), line.to_vec()));
            }
            if line.starts_with(b"* BYE") {
                return Err(proto_err(format!("login: {}", line.escape_ascii())));
            }
            if line.starts_with(b"+") {
                self.sock.write_all(b"\r\n")?;
                self.sock.flush()?;
            }
        }
    }

    /// APPEND with a non-synchronizing literal (LITERAL+, which Dovecot has). Not OK is an error.
    pub fn append(&mut self, mailbox: &str, msg: &[u8]) -> io::Result<()> {
        self.cmd.clear();
        write!(self.cmd, "b{}", self.next_tag)?;
        self.next_tag += 1;
        let tag = self.cmd.clone();
        write!(
            self.cmd,
            " APPEND {} {{{}+}}\r\n",
            quote(mailbox),
            msg.len()
        )?;
        self.sock.write_all(&self.cmd)?;
        self.sock.write_all(msg)?;
        self.sock.write_all(b"\r\n")?;
        self.sock.flush()?;
        let (_, ok, last) = self.read_tagged(&tag)?;
        if !ok {
            return Err(proto_err(format!("APPEND failed: {}", last.escape_ascii())));
        }
        Ok(())
    }

    /// LOGOUT, best effort.
    pub fn logout(mut self) {
        let _ = self.command_verbose(b"LOGOUT");
    }
}

/// An IMAP quoted string.
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for ch in s.chars() {
        if ch == '"' || ch == '\\' {
            q.push('\\');
        }
        q.push(ch);
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_lengths() {
        assert_eq!(
            literal_len(b"* 4 FETCH (UID 4 BODY[] {7123}\r\n"),
            Some(7123)
        );
        assert_eq!(literal_len(b"a {5+}\r\n"), Some(5));
        assert_eq!(literal_len(b"* OK {x}\r\n"), None);
        assert_eq!(literal_len(b"* 1 FETCH (FLAGS ())\r\n"), None);
    }
}
