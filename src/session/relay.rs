//! The full-duplex relay after login: one task, one poll loop over both sockets, no lockstep.
//!
//! Each direction is a [`Pipe`]: bytes read land in a stack buffer, the framer splits them into
//! lines and literal chunks, and what passes is appended to the pipe's output for the other
//! socket. Lines and literal chunks go out as received; only capability lists are rewritten and
//! only a few commands are answered by the proxy itself. Partial frames are the only bytes kept
//! between reads, output is bounded (reading stops while the other side is slow), and buffers
//! are released whenever a session goes quiet, so an idle session holds no buffer at all.
//!
//! Messages the proxy writes itself (answers, BYE) go out only at a message boundary of the
//! stream they join, never inside a server response that is being streamed.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{SessionError, Side};
use crate::proto::command::{leading_tag, parse_command_line};
use crate::proto::framer::{Frame, Framer};
use crate::proto::response::{self, Response, filter_capability_line};
use crate::session::pipe::{Pipe, flush};
use crate::session::state::{State, Tracker, Verdict};
use crate::stream::Stream;

/// Bytes read from a socket per call (on the stack, not kept).
const READ_CHUNK: usize = 64 * 1024;

/// Why the relay stopped.
#[derive(Debug)]
pub enum End {
    /// The client closed its connection.
    ClientClosed,
    /// The upstream closed; `expected` when it had said BYE (LOGOUT, or its own autologout).
    UpstreamClosed {
        /// Whether a BYE came first.
        expected: bool,
    },
    /// Shutdown was requested and every command in flight has completed.
    Drained,
}

/// Both sockets and the state that lives between them.
pub struct Relay {
    /// The client's socket.
    client: Stream,
    /// The upstream socket.
    upstream: Stream,
    /// Client to upstream.
    c2u: Pipe,
    /// Upstream to client.
    u2c: Pipe,
    /// Protocol state.
    pub tracker: Tracker,
    /// The proxy's own responses waiting for a message boundary towards the client.
    local: Vec<u8>,
    /// Tag of a client command being dropped (answered locally); its further fragments are too.
    dropping: bool,
    /// Tag of a command whose over-long line is being discarded.
    overlong_tag: Option<Vec<u8>>,
    /// Stop taking new commands, finish the ones in flight.
    draining: bool,
    /// A BYE was seen from the upstream.
    bye_seen: bool,
    /// Last time bytes arrived from either side.
    pub last_activity: Instant,
    /// Commands in flight before the client is no longer read.
    max_pipelined: usize,
    /// Output bytes towards one side before the other side is no longer read.
    max_buffered: usize,
}

impl Relay {
    /// Sets up the relay; `client_pending` holds bytes the client sent after its login.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Stream,
        upstream: Stream,
        client_framer: Framer,
        client_pending: Vec<u8>,
        upstream_framer: Framer,
        upstream_pending: Vec<u8>,
        max_pipelined: usize,
        max_buffered: usize,
    ) -> Relay {
        Relay {
            client,
            upstream,
            c2u: Pipe::new(client_framer, client_pending),
            u2c: Pipe::new(upstream_framer, upstream_pending),
            tracker: Tracker::default(),
            local: Vec::new(),
            dropping: false,
            overlong_tag: None,
            draining: false,
            bye_seen: false,
            last_activity: Instant::now(),
            max_pipelined,
            max_buffered,
        }
    }

    /// Runs until the relay ends (or, when cancelled, stops where it is; it can be resumed).
    pub async fn run(&mut self) -> Result<End, SessionError> {
        // Bytes that arrived together with the login are processed before anything is read.
        self.process_pending()?;
        poll_fn(|cx| self.poll(cx)).await
    }

    /// Stops reading new commands; the relay ends once those in flight have completed.
    pub fn begin_drain(&mut self) {
        self.draining = true;
    }

    /// Whether a message can be written to the client now without splitting a response.
    pub fn client_at_boundary(&self) -> bool {
        self.u2c.framer.at_message_boundary() && self.local.is_empty()
    }

    /// Queues a line of the proxy's own for the client (sent at the next message boundary).
    pub fn say(&mut self, line: &[u8]) {
        self.local.extend_from_slice(line);
    }

    /// Whether the client is at a command boundary (no command half sent upstream), so the
    /// proxy may send a command of its own (LOGOUT) upstream.
    pub fn client_idle(&self) -> bool {
        // Bytes of a command not yet framed have not been sent upstream either.
        self.c2u.framer.at_message_boundary()
    }

    fn process_pending(&mut self) -> Result<(), SessionError> {
        for side in [Side::Client, Side::Upstream] {
            let pending = std::mem::take(&mut self.pipe(side).pending);
            if !pending.is_empty() {
                let (used, in_place) = self.process(side, &pending)?;
                let pipe = self.pipe(side);
                pipe.out.extend_from_slice(&pending[..in_place]);
                pipe.pending.extend_from_slice(&pending[used..]);
            }
        }
        Ok(())
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<End, SessionError>> {
        loop {
            let mut progress = false;
            progress |= flush(&mut self.upstream, &mut self.c2u, cx, Side::Upstream)?;
            self.push_local();
            progress |= flush(&mut self.client, &mut self.u2c, cx, Side::Client)?;

            if self.u2c.eof {
                // What the upstream said last (a BYE, LOGOUT's OK) is flushed by `finish`.
                if self.c2u.eof {
                    return Poll::Ready(Ok(End::ClientClosed));
                }
                return Poll::Ready(Ok(End::UpstreamClosed {
                    expected: self.bye_seen,
                }));
            }
            if self.c2u.eof {
                // The client half-closed. Its commands in flight are still answered (as a direct
                // server would), but the FIN is not passed on: over TLS a server may drop
                // everything pending when it sees close_notify. The session ends once the
                // answers are out; a command cut in half can never complete, so it ends at once.
                if !self.c2u.framer.at_message_boundary() || self.all_answered() {
                    return Poll::Ready(Ok(End::ClientClosed));
                }
            }
            if self.draining && self.client_idle() && self.all_answered() {
                return Poll::Ready(Ok(End::Drained));
            }

            let read_client = !self.c2u.eof
                && self.c2u.queued() < self.max_buffered
                && self.local.len() < self.max_buffered
                && self.tracker.in_flight() < self.max_pipelined
                && !self.c2u.framer.awaiting_continuation()
                && !(self.draining && self.client_idle());
            if read_client {
                match self.read(Side::Client, cx)? {
                    Poll::Ready(true) => progress = true,
                    Poll::Ready(false) => {
                        self.c2u.eof = true;
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            if !self.u2c.eof && self.u2c.queued() < self.max_buffered {
                match self.read(Side::Upstream, cx)? {
                    Poll::Ready(true) => progress = true,
                    Poll::Ready(false) => {
                        self.u2c.eof = true;
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            if !progress {
                self.c2u.release();
                self.u2c.release();
                if self.local.is_empty() && self.local.capacity() > 0 {
                    self.local = Vec::new();
                }
                self.tracker.compact();
                return Poll::Pending;
            }
        }
    }

    /// Every command relayed has been answered (an IDLE aside) and the answers are out.
    fn all_answered(&self) -> bool {
        self.tracker.quiescent()
            && self.u2c.queued() == 0
            && self.local.is_empty()
            && self.u2c.framer.at_message_boundary()
    }

    /// Reads once from `side` and processes what came. `Ready(false)` on end of stream.
    fn read(&mut self, side: Side, cx: &mut Context<'_>) -> Poll<Result<bool, SessionError>> {
        // Uninitialised: zeroing 64 KiB per call cost more than the framing (seen in perf).
        let mut scratch = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut scratch);
        let stream = if side == Side::Client {
            &mut self.client
        } else {
            &mut self.upstream
        };
        match Pin::new(stream).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(SessionError::Io { side, source: e })),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Ok(false)),
            Poll::Ready(Ok(())) => {
                self.last_activity = Instant::now();
                let data = buf.filled();
                let pending = std::mem::take(&mut self.pipe(side).pending);
                let result = if pending.is_empty() {
                    self.process(side, data).and_then(|(used, in_place)| {
                        self.write_through(side, &data[..in_place], cx)?;
                        self.pipe(side).pending.extend_from_slice(&data[used..]);
                        Ok(())
                    })
                } else {
                    let mut pending = pending;
                    pending.extend_from_slice(data);
                    self.process(side, &pending).and_then(|(used, in_place)| {
                        self.write_through(side, &pending[..in_place], cx)?;
                        pending.drain(..used);
                        self.pipe(side).pending = pending;
                        Ok(())
                    })
                };
                Poll::Ready(result.map(|()| true))
            }
        }
    }

    /// The pipe that carries bytes read from `side`.
    fn pipe(&mut self, side: Side) -> &mut Pipe {
        if side == Side::Client {
            &mut self.c2u
        } else {
            &mut self.u2c
        }
    }

    /// Processes `data` read from `side`. Returns how many bytes were used, and how many of
    /// them (from the start) are to be passed on unchanged and have not been copied to the
    /// pipe's output yet: the caller writes or copies them.
    fn process(&mut self, side: Side, data: &[u8]) -> Result<(usize, usize), SessionError> {
        let pipe = self.pipe(side);
        // In place only when nothing is queued before it, so order is kept.
        pipe.in_place = (pipe.queued() == 0).then_some(0);
        let used = match side {
            Side::Client => self.client_bytes(data),
            _ => self.upstream_bytes(data),
        };
        let in_place = self.pipe(side).in_place.take().unwrap_or(0);
        used.map(|used| (used, in_place))
    }

    /// Writes bytes passed on in place straight to the other side's socket, as far as it takes
    /// them now; the rest is queued. Saves copying bulk data (literals) through `out`.
    fn write_through(
        &mut self,
        side: Side,
        bytes: &[u8],
        cx: &mut Context<'_>,
    ) -> Result<(), SessionError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let (dst, pipe, dst_side) = if side == Side::Client {
            (&mut self.upstream, &mut self.c2u, Side::Upstream)
        } else {
            (&mut self.client, &mut self.u2c, Side::Client)
        };
        let mut written = 0;
        while written < bytes.len() {
            match Pin::new(&mut *dst).poll_write(cx, &bytes[written..]) {
                Poll::Ready(Ok(0)) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "write returned 0");
                    return Err(SessionError::Io {
                        side: dst_side,
                        source: e,
                    });
                }
                Poll::Ready(Ok(n)) => {
                    written += n;
                    pipe.unflushed = true;
                }
                Poll::Ready(Err(e)) => {
                    return Err(SessionError::Io {
                        side: dst_side,
                        source: e,
                    });
                }
                Poll::Pending => break,
            }
        }
        // Nothing else is queued (in-place forwarding requires an empty queue), so order holds.
        pipe.out.extend_from_slice(&bytes[written..]);
        Ok(())
    }

    /// Frames client bytes and relays (or answers) them. Returns how many bytes were used.
    fn client_bytes(&mut self, data: &[u8]) -> Result<usize, SessionError> {
        let mut pos = 0;
        // While draining, no new command starts: what follows stays unread.
        while !(self.draining && self.c2u.framer.at_message_boundary()) {
            let step =
                self.c2u
                    .framer
                    .next(&data[pos..])
                    .map_err(|source| SessionError::Framing {
                        side: Side::Client,
                        source,
                    })?;
            let Some((frame, used)) = step else { break };
            match frame {
                Frame::Line(line) => {
                    if line.first {
                        self.dropping = false;
                        if let Some(cmd) = parse_command_line(line.bytes) {
                            if let Verdict::Answer(text) = self.tracker.on_command(&cmd) {
                                self.answer(cmd.tag, text);
                                self.dropping = true;
                            }
                        }
                    }
                    if self.dropping {
                        // The answer stands in for the server's: a synchronizing literal of
                        // this command will not be sent.
                        self.c2u.framer.literal_refused();
                    } else {
                        self.c2u.forward(data, pos, used);
                    }
                }
                Frame::Literal { .. } => {
                    if !self.dropping {
                        self.c2u.forward(data, pos, used);
                    }
                }
                Frame::Overlong { head, first } => {
                    if !first && !self.dropping {
                        return Err(SessionError::Protocol {
                            side: Side::Client,
                            what: "line too long inside a command",
                        });
                    }
                    self.overlong_tag = leading_tag(head).map(<[u8]>::to_vec);
                }
                Frame::Skipped => {}
                Frame::Discarded => {
                    let tag = self.overlong_tag.take();
                    self.answer_raw(tag.as_deref(), "BAD Command line too long.");
                }
                Frame::LiteralTooLarge {
                    line,
                    first,
                    literal,
                } => {
                    if !(first && literal.sync) {
                        return Err(SessionError::TooBig(Side::Client));
                    }
                    self.answer_raw(leading_tag(line), "BAD [TOOBIG] Literal too large.");
                }
            }
            pos += used;
        }
        Ok(pos)
    }

    /// Frames upstream bytes and relays them, following the state and filtering capabilities.
    fn upstream_bytes(&mut self, data: &[u8]) -> Result<usize, SessionError> {
        let mut pos = 0;
        loop {
            let step =
                self.u2c
                    .framer
                    .next(&data[pos..])
                    .map_err(|source| SessionError::Framing {
                        side: Side::Upstream,
                        source,
                    })?;
            let Some((frame, used)) = step else { break };
            match frame {
                Frame::Line(line) => {
                    if line.first && line.start {
                        self.on_response(line.bytes);
                    }
                    let rewritten = if line.first && line.start && line.complete {
                        filter_capability_line(line.bytes)
                    } else {
                        None
                    };
                    match rewritten {
                        Some(r) => self.u2c.push(data, &r),
                        None => self.u2c.forward(data, pos, used),
                    }
                }
                Frame::Literal { .. } => self.u2c.forward(data, pos, used),
                Frame::Overlong { .. } | Frame::Skipped | Frame::Discarded => {}
                Frame::LiteralTooLarge { .. } => {
                    return Err(SessionError::TooBig(Side::Upstream));
                }
            }
            pos += used;
            if !self.local.is_empty() && self.u2c.framer.at_message_boundary() {
                let local = std::mem::take(&mut self.local);
                self.u2c.push(data, &local);
            }
        }
        Ok(pos)
    }

    /// Follows the state from the first line of a server response.
    fn on_response(&mut self, line: &[u8]) {
        match response::classify(line) {
            Some(Response::Continuation) => self.c2u.framer.literal_accepted(),
            Some(Response::Tagged { tag, status }) => {
                if self.c2u.framer.awaiting_continuation() && self.tracker.newest_tag() == Some(tag)
                {
                    self.c2u.framer.literal_refused();
                }
                self.tracker.on_tagged(tag, status);
            }
            Some(Response::Untagged { keyword, .. }) if keyword.eq_ignore_ascii_case(b"BYE") => {
                self.bye_seen = true;
                self.tracker.on_bye();
            }
            _ => {}
        }
    }

    fn answer(&mut self, tag: &[u8], text: &str) {
        self.answer_raw(Some(tag), text);
    }

    fn answer_raw(&mut self, tag: Option<&[u8]>, text: &str) {
        self.local.extend_from_slice(tag.unwrap_or(b"*"));
        self.local.push(b' ');
        self.local.extend_from_slice(text.as_bytes());
        self.local.extend_from_slice(b"\r\n");
    }

    /// Moves the proxy's own responses into the client's output at a message boundary.
    fn push_local(&mut self) {
        if !self.local.is_empty() && self.u2c.framer.at_message_boundary() {
            self.u2c.out.extend_from_slice(&self.local);
            self.local.clear();
        }
    }

    /// Whether the session has logged out.
    pub fn logged_out(&self) -> bool {
        self.tracker.state == State::Logout
    }

    /// Whether an IDLE is in progress.
    pub fn idling(&self) -> bool {
        self.tracker.idling()
    }

    /// Writes what is queued (plus `upstream_tail` towards the upstream) and closes both sockets,
    /// giving up after `within`.
    pub async fn finish(mut self, upstream_tail: &[u8], within: std::time::Duration) {
        self.push_local();
        self.c2u.out.extend_from_slice(upstream_tail);
        let done = async {
            let _ = poll_fn(|cx| -> Poll<Result<(), SessionError>> {
                flush(&mut self.upstream, &mut self.c2u, cx, Side::Upstream)?;
                flush(&mut self.client, &mut self.u2c, cx, Side::Client)?;
                if self.c2u.queued() == 0
                    && self.u2c.queued() == 0
                    && !self.c2u.unflushed
                    && !self.u2c.unflushed
                {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                }
            })
            .await;
            use tokio::io::AsyncWriteExt;
            let _ = self.client.shutdown().await;
            let _ = self.upstream.shutdown().await;
        };
        let _ = tokio::time::timeout(within, done).await;
    }
}
