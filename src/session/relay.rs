//! The I/O driver of a logged-in session: one task, one poll loop over both sockets, no
//! lockstep. It reads into its thread's buffer, hands the bytes to the session [`Core`] (which
//! frames, classifies, runs the stages and decides what passes), and writes what the core queued
//! for each side. Partial frames are the only bytes kept between reads, output is bounded
//! (reading stops while the other side is slow), and buffers are released whenever a session
//! goes quiet, so an idle session holds no buffer at all. Bytes passed on unchanged are written
//! straight from the read buffer.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{SessionError, Side};
use crate::phases::{Event, Flow};
use crate::session::Stats;
use crate::session::core::Core;
use crate::session::pipe::{Pipe, flush};
use crate::stream::Stream;

/// Bytes read from a socket per call (into the thread's buffer, not kept).
const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// The worker thread's read buffer. Every session on the thread reads into it in turn (a
    /// read is framed and passed on, or kept as a partial frame, before the next), so no
    /// session holds 64 KiB. It was a 64 KiB array on the stack of every read, which made each
    /// read probe 16 stack pages (64 instructions and 16 dirtied cache lines, twice a command).
    /// Uninitialised: zeroing 64 KiB per read cost more than the framing (seen in perf).
    static SCRATCH: std::cell::RefCell<Box<[MaybeUninit<u8>]>> =
        std::cell::RefCell::new(Box::new_uninit_slice(READ_CHUNK));
}

/// Runs `f` with the thread's read buffer, or with a fresh one should it be in use (nothing
/// reads while a read is processed, so that is never expected).
fn with_scratch<R>(f: impl FnOnce(&mut [MaybeUninit<u8>]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Box::new_uninit_slice(READ_CHUNK)),
    })
}

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

/// Both sockets, their buffers, and the core between them.
pub struct Relay {
    /// The client's socket.
    client: Stream,
    /// The upstream socket.
    upstream: Stream,
    /// Client to upstream.
    c2u: Pipe,
    /// Upstream to client.
    u2c: Pipe,
    /// Framing, state, identity and stages: everything that is not I/O.
    pub core: Core,
    /// Bytes counted for the session summary.
    pub stats: Stats,
    /// Last time bytes arrived from either side.
    pub last_activity: Instant,
    /// Commands in flight before the client is no longer read.
    max_pipelined: usize,
    /// Output bytes towards one side before the other side is no longer read.
    max_buffered: usize,
    /// The upstream socket's receive low-water mark as last set (1: the kernel's default).
    upstream_lowat: u32,
}

/// A literal is read in batches of at least this many bytes when that much of it is still to come.
const MIN_BATCH: u64 = 16 * 1024;

/// The largest batch a session waits for (the kernel wakes a reader once this much is queued).
const MAX_BATCH: u64 = 64 * 1024;

/// The receive low-water mark for a socket with `remaining` bytes of a literal still to come,
/// of which the stream may already hold `held` (see [`Stream::held_back`]): a batch that is
/// sure to arrive, so the reader is never left waiting for bytes the server will not send.
/// 1 (wake for every arrival) outside large literals.
fn low_water(remaining: u64, held: u64) -> u32 {
    let sure = remaining.saturating_sub(held);
    if sure < MIN_BATCH {
        1
    } else {
        u32::try_from(sure.min(MAX_BATCH)).unwrap_or(1)
    }
}

impl Relay {
    /// Sets up the relay; `client_pending` holds bytes the client sent after its login.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Stream,
        upstream: Stream,
        core: Core,
        client_pending: Vec<u8>,
        upstream_pending: Vec<u8>,
        max_pipelined: usize,
        max_buffered: usize,
    ) -> Relay {
        Relay {
            client,
            upstream,
            c2u: Pipe::new(client_pending),
            u2c: Pipe::new(upstream_pending),
            core,
            stats: Stats::default(),
            last_activity: Instant::now(),
            max_pipelined,
            max_buffered,
            upstream_lowat: 1,
        }
    }

    /// Runs until the relay ends (or, when cancelled, stops where it is; it can be resumed).
    pub async fn run(&mut self) -> Result<End, SessionError> {
        // Bytes that arrived together with the login are processed before anything is read.
        self.core.set_now(crate::timer::now());
        self.process_pending()?;
        poll_fn(|cx| self.poll(cx)).await
    }

    /// Stops reading new commands; the relay ends once those in flight have completed.
    pub fn begin_drain(&mut self) {
        self.core.draining = true;
    }

    /// Whether a message can be written to the client now without splitting a response.
    pub fn client_at_boundary(&self) -> bool {
        self.core.client_stream_at_boundary()
    }

    /// Queues a line of the proxy's own for the client (sent at the next message boundary).
    pub fn say(&mut self, line: &[u8]) {
        self.core.say(line);
    }

    /// Whether the client is at a command boundary (no command half sent upstream), so the
    /// proxy may send a command of its own (LOGOUT) upstream.
    pub fn client_idle(&self) -> bool {
        // Bytes of a command not yet framed have not been sent upstream either.
        self.core.client_at_boundary()
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
        // A socket whose read was pending once in this poll is not read again before it
        // returns: the runtime notes readiness only between task polls, so the read would be
        // pending again (and take the registration's lock again, ~200 instructions).
        let (mut client_pending, mut upstream_pending) = (false, false);
        // One clock reading for everything this wake-up reads (a reading costs ~70
        // instructions; there were two per read).
        self.core.set_now(crate::timer::now());
        loop {
            let mut progress = false;
            if self.core.parked() && self.core.poll_parked(cx, &mut self.c2u).is_ready() {
                // The decision is in: frame what the client sent behind the parked command.
                self.process_pending()?;
                progress = true;
            }
            progress |= self.flush_side(Side::Upstream, cx)?;
            self.core.push_local(&mut self.u2c, &[]);
            progress |= self.flush_side(Side::Client, cx)?;

            if self.u2c.eof {
                // What the upstream said last (a BYE, LOGOUT's OK) is flushed by `finish`.
                if self.c2u.eof {
                    return Poll::Ready(Ok(End::ClientClosed));
                }
                return Poll::Ready(Ok(End::UpstreamClosed {
                    expected: self.core.bye_seen,
                }));
            }
            if self.c2u.eof {
                // The client half-closed. Its commands in flight are still answered (as a direct
                // server would), but the FIN is not passed on: over TLS a server may drop
                // everything pending when it sees close_notify. The session ends once the
                // answers are out; a command cut in half can never complete, so it ends at once.
                if !self.core.client.at_message_boundary() || self.all_answered() {
                    return Poll::Ready(Ok(End::ClientClosed));
                }
            }
            if self.core.draining && self.client_idle() && self.all_answered() {
                return Poll::Ready(Ok(End::Drained));
            }

            let read_client = !client_pending
                && !self.c2u.eof
                && self.c2u.queued() < self.max_buffered
                && self.core.local_len() < self.max_buffered
                && self.core.tracker.in_flight() < self.max_pipelined
                && self.core.takes_client_bytes()
                && !(self.core.draining && self.client_idle());
            if read_client {
                match self.read(Side::Client, cx)? {
                    Poll::Ready(true) => progress = true,
                    Poll::Ready(false) => {
                        self.c2u.eof = true;
                        progress = true;
                    }
                    Poll::Pending => client_pending = true,
                }
            }
            if !upstream_pending && !self.u2c.eof && self.u2c.queued() < self.max_buffered {
                let blocked = !self.core.takes_client_bytes();
                match self.read(Side::Upstream, cx)? {
                    Poll::Ready(true) => progress = true,
                    Poll::Ready(false) => {
                        self.u2c.eof = true;
                        progress = true;
                    }
                    Poll::Pending => upstream_pending = true,
                }
                if blocked && self.core.takes_client_bytes() && !self.c2u.pending.is_empty() {
                    // A `+` (or a refusal) released bytes the client had already sent: frame
                    // them now rather than wait for more from a client that may be waiting too.
                    self.process_pending()?;
                }
            }
            if !progress {
                self.c2u.release();
                self.u2c.release();
                self.core.release();
                return Poll::Pending;
            }
        }
    }

    /// Writes what is queued towards `side`; counts it.
    fn flush_side(&mut self, side: Side, cx: &mut Context<'_>) -> Result<bool, SessionError> {
        let (dst, pipe) = if side == Side::Client {
            (&mut self.client, &mut self.u2c)
        } else {
            (&mut self.upstream, &mut self.c2u)
        };
        let before = pipe.queued();
        let progress = flush(dst, pipe, cx, side)?;
        if progress {
            // A completed flush clears the queue, so what left is the difference.
            let sent = (before - pipe.queued()) as u64;
            self.count(side, Flow::Sent, sent);
        }
        Ok(progress)
    }

    /// Counts bytes for the summary and tells the stages.
    fn count(&mut self, side: Side, flow: Flow, bytes: u64) {
        let slot = match (side, flow) {
            (Side::Client, Flow::Received) => &mut self.stats.client_in,
            (Side::Client, Flow::Sent) => &mut self.stats.client_out,
            (_, Flow::Received) => &mut self.stats.upstream_in,
            (_, Flow::Sent) => &mut self.stats.upstream_out,
        };
        *slot += bytes;
        if !self.core.stages.is_empty() {
            self.core
                .stages
                .observe(&Event::Traffic { side, flow, bytes });
        }
    }

    /// Every command relayed has been answered (an IDLE aside) and the answers are out.
    fn all_answered(&self) -> bool {
        self.core.all_answered() && self.u2c.queued() == 0
    }

    /// Reads once from `side` and processes what came. `Ready(false)` on end of stream.
    fn read(&mut self, side: Side, cx: &mut Context<'_>) -> Poll<Result<bool, SessionError>> {
        with_scratch(|scratch| self.read_into(side, cx, scratch))
    }

    /// [`Relay::read`] into `scratch`.
    fn read_into(
        &mut self,
        side: Side,
        cx: &mut Context<'_>,
        scratch: &mut [MaybeUninit<u8>],
    ) -> Poll<Result<bool, SessionError>> {
        let mut buf = ReadBuf::uninit(scratch);
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
                self.last_activity = self.core.now();
                let data = buf.filled();
                self.count(side, Flow::Received, data.len() as u64);
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
                if side == Side::Upstream {
                    self.pace_upstream();
                }
                Poll::Ready(result.map(|()| true))
            }
        }
    }

    /// While a large server literal streams (a message body), lets the kernel wake the session
    /// only once a batch of it has arrived rather than for every segment: over TLS from a
    /// server that writes in small records this was one wake-up per 2.5 KB, a third of the
    /// proxy's CPU on a bulk FETCH. The mark is sized to bytes the literal still has to bring.
    fn pace_upstream(&mut self) {
        let want = low_water(
            self.core.upstream.literal_remaining(),
            self.upstream.held_back(),
        );
        if want != self.upstream_lowat {
            if let Err(e) = self.upstream.set_recv_lowat(want) {
                crate::telemetry::in_session(|| {
                    tracing::debug!(error = %e, "could not set the upstream receive low-water mark");
                });
            }
            self.upstream_lowat = want;
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
        let pipe = if side == Side::Client {
            &mut self.c2u
        } else {
            &mut self.u2c
        };
        // In place only when nothing is queued before it, so order is kept.
        pipe.in_place = (pipe.queued() == 0).then_some(0);
        let used = match side {
            Side::Client => self.core.client_bytes(data, pipe),
            _ => self.core.upstream_bytes(data, pipe),
        };
        let in_place = pipe.in_place.take().unwrap_or(0);
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
        if written > 0 {
            self.count(dst_side, Flow::Sent, written as u64);
        }
        Ok(())
    }

    /// Whether an IDLE is in progress.
    pub fn idling(&self) -> bool {
        self.core.tracker.idling()
    }

    /// Whether an IDLE waits for the line that ends it (`DONE`).
    pub fn idle_open(&self) -> bool {
        self.core.tracker.idle_open()
    }

    /// Writes what is queued (plus `upstream_tail` towards the upstream) and closes both sockets,
    /// giving up after `within`.
    pub async fn finish(mut self, upstream_tail: &[u8], within: std::time::Duration) {
        self.core.push_local(&mut self.u2c, &[]);
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
        let _ = crate::timer::timeout(within, done).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_water_waits_only_for_bytes_sure_to_come() {
        // Outside a literal, or near its end: every arrival wakes the reader.
        assert_eq!(low_water(0, 0), 1);
        assert_eq!(low_water(MIN_BATCH - 1, 0), 1);
        assert_eq!(low_water(40 * 1024, 32 * 1024), 1);
        // Inside a large one: a batch, never more than the literal still has to bring.
        assert_eq!(low_water(MIN_BATCH, 0), MIN_BATCH as u32);
        assert_eq!(low_water(50_000, 32 * 1024), 50_000 - 32 * 1024);
        assert_eq!(low_water(10 << 20, 0), MAX_BATCH as u32);
        assert_eq!(low_water(u64::MAX, 32 * 1024), MAX_BATCH as u32);
    }
}
