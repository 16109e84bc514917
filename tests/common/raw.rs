//! A raw, line-oriented IMAP client over any async stream, for byte-level assertions.
//!
//! Every read has a timeout (10 s unless changed) so a proxy that hangs fails the test instead of
//! stalling it. The panicking helpers (`line`, `message`, `tagged`, ...) are for the expected
//! path; the `try_*` ones return errors for tests that expect a closed connection.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::show;

/// A raw IMAP connection.
pub struct Raw<S> {
    stream: S,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    /// How long each read may take.
    pub timeout: Duration,
    /// Every byte received so far (for diagnostics and exact comparisons).
    pub received: Vec<u8>,
}

/// The literal announced at the end of a line (`{n}`, `{n+}`, `~{n}`), if any.
pub fn literal_at_end(line: &[u8]) -> Option<usize> {
    let l = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))?;
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    let digits = &l[open + 1..];
    let digits = digits
        .strip_suffix(b"+")
        .or_else(|| digits.strip_suffix(b"-"))
        .unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether `msg` is the tagged completion for `tag`.
pub fn is_tagged(msg: &[u8], tag: &str) -> bool {
    msg.len() > tag.len() && msg.starts_with(tag.as_bytes()) && msg[tag.len()] == b' '
}

/// The status word after a tag (`OK`, `NO`, `BAD`), upper-cased.
pub fn status_of(msg: &[u8]) -> String {
    let mut parts = msg.splitn(3, |&b| b == b' ');
    let _tag = parts.next();
    parts
        .next()
        .map(|s| String::from_utf8_lossy(s).to_ascii_uppercase())
        .unwrap_or_default()
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    pub fn new(stream: S) -> Raw<S> {
        Raw {
            stream,
            buf: Vec::new(),
            timeout: Duration::from_secs(10),
            received: Vec::new(),
        }
    }

    /// The stream back; panics if bytes were read and not consumed (they would be lost).
    pub fn into_inner(self) -> S {
        assert!(self.buf.is_empty(), "unconsumed bytes: {}", show(&self.buf));
        self.stream
    }

    /// Bytes read but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Writes and flushes.
    pub async fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        self.stream.write_all(bytes.as_ref()).await?;
        self.stream.flush().await
    }

    /// Writes and flushes; panics on error.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let b = bytes.as_ref();
        if let Err(e) = self.try_send(b).await {
            panic!("sending {}: {e}", show(b));
        }
    }

    /// Reads more bytes into the buffer. EOF is `UnexpectedEof`, a timeout `TimedOut`.
    async fn fill(&mut self) -> io::Result<()> {
        let old = self.buf.len();
        self.buf.reserve(64 * 1024);
        let n = tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "read timed out"))??;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.received.extend_from_slice(&self.buf[old..]);
        Ok(())
    }

    /// One line including its CRLF.
    pub async fn try_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = memchr(b'\n', &self.buf) {
                return Ok(self.buf.drain(..=i).collect());
            }
            self.fill().await?;
        }
    }

    /// Exactly `n` bytes.
    pub async fn try_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// One whole response message: a line and, for every literal it announces, the literal and
    /// the rest of the line after it.
    pub async fn try_message(&mut self) -> io::Result<Vec<u8>> {
        let mut msg = self.try_line().await?;
        while let Some(n) = literal_at_end(&msg) {
            let lit = self.try_exact(n).await?;
            msg.extend_from_slice(&lit);
            let rest = self.try_line().await?;
            msg.extend_from_slice(&rest);
        }
        Ok(msg)
    }

    /// Messages up to and including the one tagged `tag`.
    pub async fn try_tagged(&mut self, tag: &str) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        loop {
            let m = self.try_message().await?;
            let done = is_tagged(&m, tag);
            out.push(m);
            if done {
                return Ok(out);
            }
        }
    }

    pub async fn line(&mut self) -> Vec<u8> {
        match self.try_line().await {
            Ok(l) => l,
            Err(e) => panic!("reading a line: {e}; received so far: {}", self.tail()),
        }
    }

    pub async fn message(&mut self) -> Vec<u8> {
        match self.try_message().await {
            Ok(l) => l,
            Err(e) => panic!("reading a message: {e}; received so far: {}", self.tail()),
        }
    }

    pub async fn exact(&mut self, n: usize) -> Vec<u8> {
        match self.try_exact(n).await {
            Ok(l) => l,
            Err(e) => panic!("reading {n} bytes: {e}; received so far: {}", self.tail()),
        }
    }

    /// Messages up to and including the one tagged `tag`.
    pub async fn tagged(&mut self, tag: &str) -> Vec<Vec<u8>> {
        match self.try_tagged(tag).await {
            Ok(l) => l,
            Err(e) => panic!(
                "waiting for tag {tag}: {e}; received so far: {}",
                self.tail()
            ),
        }
    }

    /// Sends `tag command\r\n` and returns the responses up to the tagged one.
    pub async fn cmd(&mut self, tag: &str, command: &str) -> Vec<Vec<u8>> {
        self.send(format!("{tag} {command}\r\n")).await;
        self.tagged(tag).await
    }

    /// Like [`cmd`](Self::cmd) and asserts the tagged status is OK; returns the responses.
    pub async fn ok(&mut self, tag: &str, command: &str) -> Vec<Vec<u8>> {
        let r = self.cmd(tag, command).await;
        let last = r.last().unwrap();
        assert_eq!(
            status_of(last),
            "OK",
            "{tag} {command} -> {}",
            show(&r.concat())
        );
        r
    }

    /// Waits for a continuation request (`+ ...`), returning anything else that came first.
    pub async fn continuation(&mut self) -> Vec<Vec<u8>> {
        let mut other = Vec::new();
        loop {
            let m = self.message().await;
            if m.starts_with(b"+") {
                other.push(m);
                return other;
            }
            assert!(
                m.starts_with(b"* "),
                "expected a continuation, got {}",
                show(&m)
            );
            other.push(m);
        }
    }

    /// LOGIN with quoted strings; asserts OK.
    pub async fn login(&mut self, user: &str, pw: &str) -> Vec<u8> {
        let r = self
            .ok("L1", &format!("LOGIN {} {}", quote(user), quote(pw)))
            .await;
        r.last().unwrap().clone()
    }

    /// Reads until the peer closes; returns what came. Panics on timeout. A reset counts as
    /// closed.
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        loop {
            match self.fill().await {
                Ok(()) => out.append(&mut self.buf),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => panic!(
                    "connection not closed within {:?}; got {}",
                    self.timeout,
                    show(&out)
                ),
                Err(_) => return out,
            }
        }
    }

    /// Reads until the peer closes and reports how: `Ok(bytes)` for a clean end of stream (over
    /// TLS: a close_notify), `Err((bytes, error))` for a reset or a TLS connection cut without
    /// close_notify. Panics on timeout.
    pub async fn read_to_close_clean(&mut self) -> Result<Vec<u8>, (Vec<u8>, String)> {
        let mut out = std::mem::take(&mut self.buf);
        loop {
            match self.fill().await {
                Ok(()) => out.append(&mut self.buf),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => panic!(
                    "connection not closed within {:?}; got {}",
                    self.timeout,
                    show(&out)
                ),
                Err(e)
                    if e.kind() == io::ErrorKind::UnexpectedEof
                        && e.to_string() == "connection closed" =>
                {
                    return Ok(out);
                }
                Err(e) => return Err((out, e.to_string())),
            }
        }
    }

    /// Reads whatever arrives within `d` (no error if nothing does; stops at close).
    pub async fn drain_for(&mut self, d: Duration) -> Vec<u8> {
        let saved = self.timeout;
        self.timeout = d;
        let mut out = std::mem::take(&mut self.buf);
        while self.fill().await.is_ok() {
            out.append(&mut self.buf);
        }
        self.timeout = saved;
        out
    }

    /// The last bytes received, for messages.
    pub fn tail(&self) -> String {
        let r = &self.received;
        show(&r[r.len().saturating_sub(600)..])
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

/// An IMAP quoted string.
pub fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn memchr(b: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&x| x == b)
}

/// Finds `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `hay` contains `needle`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// The literal body inside a FETCH response message (the first `{n}` literal).
pub fn first_literal(msg: &[u8]) -> Option<&[u8]> {
    let mut start = 0;
    while let Some(i) = find(&msg[start..], b"}\r\n") {
        let end = start + i;
        let open = msg[..end].iter().rposition(|&b| b == b'{')?;
        if let Ok(n) = std::str::from_utf8(&msg[open + 1..end])
            .unwrap_or("x")
            .parse::<usize>()
        {
            let body = end + 3;
            return msg.get(body..body + n);
        }
        start = end + 3;
    }
    None
}
