//! Replays a byte stream through a [`Framer`] the way a connection does (bytes arriving in
//! arbitrary chunks, unconsumed bytes kept for the next read) and records what it framed in an
//! owned, chunking-independent form. Used by the split-at-every-byte tests and the fuzz targets:
//! however the input is cut, the record must be the same.

use super::framer::{Frame, FrameError, Framer};

/// One framing event, with parts of long lines and chunks of literals joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole line (parts joined); `first` when it starts a message.
    Line {
        /// The line's bytes, including the line ending.
        bytes: Vec<u8>,
        /// Whether it started a message.
        first: bool,
        /// Whether it tokenized (always true for server lines).
        valid: bool,
    },
    /// A whole literal (chunks joined).
    Literal(Vec<u8>),
    /// A line over the limit was dropped, with the message it belonged to.
    Discarded {
        /// Whether the dropped line started a message.
        first: bool,
    },
    /// A literal over the limit was announced by this line.
    LiteralTooLarge(Vec<u8>),
}

/// Frames `chunks` in order. Synchronizing literals are accepted at once when `accept` is true (as
/// if the server sent `+`), refused otherwise. Stops at the first error, returning what was framed.
pub fn replay(
    framer: &mut Framer,
    chunks: &[&[u8]],
    accept: bool,
) -> (Vec<Event>, Option<FrameError>) {
    let mut events = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut literal: Vec<u8> = Vec::new();
    let mut overlong_first = None;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            if framer.awaiting_continuation() {
                if accept {
                    framer.literal_accepted();
                } else {
                    framer.literal_refused();
                }
            }
            let (frame, used) = match framer.next(&buf) {
                Ok(Some(step)) => step,
                Ok(None) => break,
                Err(e) => return (events, Some(e)),
            };
            match frame {
                Frame::Line(l) => {
                    line.extend_from_slice(l.bytes);
                    if l.complete {
                        events.push(Event::Line {
                            bytes: std::mem::take(&mut line),
                            first: l.first,
                            valid: l.syntax.is_none(),
                        });
                    }
                }
                Frame::Literal { data, remaining } => {
                    literal.extend_from_slice(data);
                    if remaining == 0 {
                        events.push(Event::Literal(std::mem::take(&mut literal)));
                    }
                }
                Frame::Overlong { first, .. } => overlong_first = Some(first),
                Frame::Skipped => {}
                Frame::Discarded => events.push(Event::Discarded {
                    first: overlong_first.take().unwrap_or(true),
                }),
                Frame::LiteralTooLarge { line: last, .. } => {
                    // A streamed server line may have had parts before this last one.
                    line.extend_from_slice(last);
                    events.push(Event::LiteralTooLarge(std::mem::take(&mut line)));
                }
            }
            buf.drain(..used);
        }
    }
    (events, None)
}

/// Cuts `input` into chunks whose lengths cycle through a small pattern picked by `seed`: the
/// arbitrary read sizes the split-independence fuzz targets replay a stream with.
pub fn cycle_chunks(input: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    let mut at = 0;
    let mut step = usize::from(seed % 17) + 1;
    while at < input.len() {
        let end = (at + step).min(input.len());
        chunks.push(&input[at..end]);
        at = end;
        step = step * 7 % 23 + 1;
    }
    chunks
}
