//! Whole-message reading and writing for the phases that talk to one peer at a time (the proxy's
//! own pre-login dialogue with the client, and the login dialogue with the upstream). Messages
//! there are small and bounded, so they are assembled whole; the relay after login never does
//! this and streams instead.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{SessionError, Side};
use crate::proto::command::leading_tag;
use crate::proto::framer::{Direction, Frame, Framer, Limits};
use crate::stream::Stream;

/// Bytes read from a socket at a time in these phases.
const READ_CHUNK: usize = 4096;

/// The continuation the proxy sends for a client's synchronizing literal before login.
const LITERAL_GO_AHEAD: &[u8] = b"+ Ready for literal data\r\n";

/// One peer's socket with its framer and the bytes read but not yet consumed.
pub struct Wire {
    /// The socket.
    pub stream: Stream,
    /// Bytes read and not yet framed (kept across messages: a client may pipeline).
    pub buf: Vec<u8>,
    /// Frames `buf`.
    pub framer: Framer,
    /// Which peer this is, for errors.
    side: Side,
}

/// What [`Wire::read_message`] returns.
#[derive(Debug)]
pub enum Message {
    /// A whole message: its lines with their line endings and its literals inline.
    Complete(Vec<u8>),
    /// A line went over the limit (before login this ends the connection, as Dovecot's
    /// "Input buffer full" does); the rest of it is not read.
    Overlong,
    /// A synchronizing literal over the limit was refused before its bytes were sent.
    LiteralTooLarge {
        /// The tag to answer with `BAD`.
        tag: Option<Vec<u8>>,
    },
}

impl Wire {
    /// Wraps a stream; `direction` says whose bytes it reads.
    pub fn new(stream: Stream, side: Side, direction: Direction, limits: Limits) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
            framer: Framer::new(direction, limits),
            side,
        }
    }

    fn io_error(&self, source: std::io::Error) -> SessionError {
        SessionError::Io {
            side: self.side,
            source,
        }
    }

    /// Writes all of `bytes` and flushes.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| self.io_error(e))?;
        self.stream.flush().await.map_err(|e| self.io_error(e))
    }

    /// Sends a last line before closing, giving up after a second (the peer may not be reading).
    pub async fn bye(&mut self, line: &[u8]) {
        let _ = crate::timer::timeout(std::time::Duration::from_secs(1), self.send(line)).await;
    }

    /// Shuts the connection down (TLS close_notify, then FIN), giving up after a second.
    pub async fn close(&mut self) {
        let _ =
            crate::timer::timeout(std::time::Duration::from_secs(1), self.stream.shutdown()).await;
    }

    /// Reads more bytes into the buffer; a closed connection is an error.
    async fn fill(&mut self) -> Result<(), SessionError> {
        self.buf.reserve(READ_CHUNK);
        let n = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| self.io_error(e))?;
        if n == 0 {
            return Err(SessionError::Closed(self.side));
        }
        Ok(())
    }

    /// Waits until `deadline`, noticing meanwhile if the peer hangs up (an error then, so a
    /// session that waits out a penalty does not outlive its client). Bytes the peer pipelines
    /// meanwhile are kept for later, up to `max_buffered`; beyond that they are left unread.
    pub async fn hold_until(
        &mut self,
        deadline: std::time::Instant,
        max_buffered: usize,
    ) -> Result<(), SessionError> {
        loop {
            if self.buf.len() >= max_buffered {
                crate::timer::sleep_until(deadline).await;
                return Ok(());
            }
            tokio::select! {
                () = crate::timer::sleep_until(deadline) => return Ok(()),
                read = self.fill() => read?,
            }
        }
    }

    /// Drops the first `n` bytes of the buffer, wiping them first: before login they may hold
    /// a password or a token.
    fn consume(&mut self, n: usize) {
        use zeroize::Zeroize as _;
        self.buf[..n].zeroize();
        self.buf.drain(..n);
    }

    /// Reads one raw line (a SASL response: not a command, so not framed; no literals), without
    /// its line ending. `None` when it would exceed `max` bytes.
    pub async fn read_raw_line(&mut self, max: usize) -> Result<Option<Vec<u8>>, SessionError> {
        let mut searched = 0;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[searched..]) {
                let end = searched + i;
                if end > max {
                    return Ok(None);
                }
                let mut line: Vec<u8> = self.buf[..=end].to_vec();
                self.consume(end + 1);
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            searched = self.buf.len();
            if searched > max {
                return Ok(None);
            }
            self.fill().await?;
        }
    }

    /// Reads one whole message. `max_total` bounds the assembled size (lines plus literals).
    /// A client's synchronizing literal is answered with `+` here.
    pub async fn read_message(&mut self, max_total: usize) -> Result<Message, SessionError> {
        let mut msg = Vec::new();
        let mut pos = 0;
        loop {
            let step =
                self.framer
                    .next(&self.buf[pos..])
                    .map_err(|source| SessionError::Framing {
                        side: self.side,
                        source,
                    })?;
            let Some((frame, used)) = step else {
                self.consume(pos);
                pos = 0;
                if self.framer.awaiting_continuation() {
                    self.framer.literal_accepted();
                    self.send(LITERAL_GO_AHEAD).await?;
                    continue;
                }
                self.fill().await?;
                continue;
            };
            match frame {
                Frame::Line(line) => {
                    msg.extend_from_slice(line.bytes);
                    if line.complete && line.literal.is_none() {
                        pos += used;
                        self.consume(pos);
                        return Ok(Message::Complete(msg));
                    }
                }
                Frame::Literal { data, .. } => msg.extend_from_slice(data),
                Frame::Overlong { .. } => return Ok(Message::Overlong),
                Frame::Skipped | Frame::Discarded => {}
                Frame::LiteralTooLarge {
                    line,
                    first,
                    literal,
                } => {
                    let first_line = if first { line } else { &msg[..] };
                    let tag = leading_tag(first_line).map(<[u8]>::to_vec);
                    pos += used;
                    self.consume(pos);
                    if literal.sync && first {
                        return Ok(Message::LiteralTooLarge { tag });
                    }
                    return Err(SessionError::TooBig(self.side));
                }
            }
            pos += used;
            if msg.len() > max_total {
                return Err(SessionError::Protocol {
                    side: self.side,
                    what: "message too large",
                });
            }
        }
    }
}
