//! One direction of the relay: the bytes of a partial frame kept between reads, and the output
//! queued for the destination socket, with in-place forwarding (bytes passed on unchanged are
//! written straight from the read buffer rather than copied into the queue). The framing itself
//! is the session core's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use crate::error::{SessionError, Side};
use crate::stream::Stream;

/// One direction of the relay.
pub struct Pipe {
    /// Bytes read but not yet framed (a partial line); empty most of the time.
    pub(crate) pending: Vec<u8>,
    /// Bytes to write to the destination socket.
    pub(crate) out: Vec<u8>,
    /// How much of `out` has been written.
    pub(crate) written: usize,
    /// Whether the destination needs a flush (TLS buffers records until flushed).
    pub(crate) unflushed: bool,
    /// The source closed its side.
    pub(crate) eof: bool,
    /// While a read is processed: `Some(n)` when everything passed on so far is the first `n`
    /// bytes of the input, unchanged, so they can be written straight from the read buffer
    /// instead of being copied into `out` (the common case: nothing rewritten or dropped).
    pub(crate) in_place: Option<usize>,
}

impl Pipe {
    pub fn new(pending: Vec<u8>) -> Pipe {
        Pipe {
            pending,
            out: Vec::new(),
            written: 0,
            unflushed: false,
            eof: false,
            in_place: None,
        }
    }

    /// Passes on `input[start..start + len]`: in place if it directly follows what was passed
    /// on in place so far, else copied.
    ///
    /// Inlined: it runs for every frame both ways, and the in-place case is one comparison; the
    /// copy is out of line.
    #[inline]
    pub fn forward(&mut self, input: &[u8], start: usize, len: usize) {
        match self.in_place {
            Some(n) if n == start => self.in_place = Some(start + len),
            _ => self.copy(input, start, len),
        }
    }

    /// [`Pipe::forward`]'s copying case.
    #[inline(never)]
    fn copy(&mut self, input: &[u8], start: usize, len: usize) {
        self.spill(input);
        self.out.extend_from_slice(&input[start..start + len]);
    }

    /// Appends bytes that are not a piece of the input (rewritten or the proxy's own).
    pub fn push(&mut self, input: &[u8], bytes: &[u8]) {
        self.spill(input);
        self.out.extend_from_slice(bytes);
    }

    /// Ends in-place forwarding: what was kept in place is copied to `out`.
    pub fn spill(&mut self, input: &[u8]) {
        if let Some(n) = self.in_place.take() {
            self.out.extend_from_slice(&input[..n]);
        }
    }

    /// The bytes queued and not yet written.
    pub fn output(&self) -> &[u8] {
        &self.out[self.written..]
    }

    /// How many bytes are queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len() - self.written
    }

    /// Gives memory back while nothing is buffered.
    pub fn release(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = Vec::new();
        }
        if self.queued() == 0 && self.out.capacity() > 0 {
            self.out = Vec::new();
            self.written = 0;
        }
    }
}

/// Writes a pipe's output to `dst` until done or blocked. Returns whether anything was written.
pub(crate) fn flush(
    dst: &mut Stream,
    pipe: &mut Pipe,
    cx: &mut Context<'_>,
    side: Side,
) -> Result<bool, SessionError> {
    let mut progress = false;
    let err = |source: io::Error| SessionError::Io { side, source };
    while pipe.queued() > 0 {
        match Pin::new(&mut *dst).poll_write(cx, &pipe.out[pipe.written..]) {
            Poll::Ready(Ok(0)) => {
                return Err(err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "write returned 0",
                )));
            }
            Poll::Ready(Ok(n)) => {
                pipe.written += n;
                pipe.unflushed = true;
                progress = true;
            }
            Poll::Ready(Err(e)) => return Err(err(e)),
            Poll::Pending => return Ok(progress),
        }
    }
    pipe.out.clear();
    pipe.written = 0;
    if pipe.unflushed {
        match Pin::new(&mut *dst).poll_flush(cx) {
            Poll::Ready(Ok(())) => pipe.unflushed = false,
            Poll::Ready(Err(e)) => return Err(err(e)),
            Poll::Pending => {}
        }
    }
    Ok(progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn pipe() -> Pipe {
        Pipe::new(Vec::new())
    }

    #[test]
    fn contiguous_pieces_stay_in_place() {
        let input = b"abcdefgh";
        let mut p = pipe();
        p.in_place = Some(0);
        p.forward(input, 0, 3);
        p.forward(input, 3, 2);
        assert_eq!(p.in_place, Some(5));
        assert!(p.out.is_empty());
    }

    #[test]
    fn a_gap_or_a_rewrite_spills_in_order() {
        let input = b"abcdefgh";
        let mut p = pipe();
        p.in_place = Some(0);
        p.forward(input, 0, 2); // "ab" in place
        p.forward(input, 4, 2); // "cd" dropped: "ef" must follow "ab"
        assert_eq!(p.in_place, None);
        assert_eq!(p.out, b"abef");
        p.push(input, b"XY");
        p.forward(input, 6, 2);
        assert_eq!(p.out, b"abefXYgh");

        let mut p = pipe();
        p.in_place = Some(0);
        p.forward(input, 0, 1);
        p.push(input, b"!");
        assert_eq!(p.out, b"a!");
    }

    #[test]
    fn without_in_place_everything_is_copied() {
        let input = b"abcdefgh";
        let mut p = pipe();
        p.forward(input, 2, 3);
        assert_eq!(p.out, b"cde");
        assert_eq!(p.in_place, None);
    }
}
