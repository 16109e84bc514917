//! Replays a byte stream through a [`Framer`] the way a connection does (bytes arriving in
//! arbitrary chunks, unconsumed bytes kept for the next read) and records what it framed in an
//! owned, chunking-independent form. Used by the split-at-every-byte tests and the fuzz targets:
//! however the input is cut, the record must be the same.

use super::framer::{Frame, FrameError, Framer, RunStep};
use super::message::is_numbered;

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
    replay_inner(framer, chunks, accept, None)
}

/// [`replay`] with [`Framer::pass_run`] tried before each frame, as the session core does for
/// the server messages `pass` takes. Each run is checked against [`Framer::next`]: a copy of
/// the framer from before the run frames the same bytes, whole frames only, each message's
/// first line taken by `pass`, nothing after a message taken as the last, and ends in the
/// same state; its frames are what is recorded, so the record must equal [`replay`]'s. With
/// `unasked`, numbered messages ([`is_numbered`]) pass without `pass` being asked, as the
/// session core lets them when no stage listens to them.
///
/// # Panics
/// When a run frames differently from `next`.
pub fn replay_runs(
    framer: &mut Framer,
    chunks: &[&[u8]],
    accept: bool,
    unasked: bool,
    mut pass: impl FnMut(&[u8]) -> RunStep,
) -> (Vec<Event>, Option<FrameError>) {
    replay_inner(framer, chunks, accept, Some((&mut pass, unasked)))
}

/// The predicate of [`Framer::pass_run`], as [`replay_inner`] takes it.
type Pass<'p> = dyn FnMut(&[u8]) -> RunStep + 'p;

/// One replay; with `pass`, runs are tried and checked (see [`replay_runs`]).
fn replay_inner(
    framer: &mut Framer,
    chunks: &[&[u8]],
    accept: bool,
    mut pass: Option<(&mut Pass<'_>, bool)>,
) -> (Vec<Event>, Option<FrameError>) {
    let mut record = Record::default();
    let mut buf: Vec<u8> = Vec::new();
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
            if let Some((pass, unasked)) = pass.as_mut() {
                let before = framer.clone();
                let ran = framer.pass_run(&buf, *unasked, &mut **pass);
                if ran.len > 0 {
                    let mut check = before;
                    let mut at = 0;
                    let mut lasts = 0;
                    while at < ran.len {
                        let Ok(Some((frame, used))) = check.next(&buf[at..ran.len]) else {
                            panic!("a run took bytes next does not frame whole");
                        };
                        if let Frame::Line(l) = &frame {
                            assert!(l.complete, "a run took part of a line");
                            if l.first {
                                assert_eq!(lasts, 0, "a run went on after its last message");
                                let asked = !(*unasked && is_numbered(l.bytes));
                                match if asked { pass(l.bytes) } else { RunStep::Pass } {
                                    RunStep::Pass => {}
                                    RunStep::Last => lasts += 1,
                                    RunStep::Stop => panic!("a run took a refused line"),
                                }
                            }
                        }
                        record.push(&frame);
                        at += used;
                    }
                    assert_eq!(ran.last, lasts == 1, "a run misreported its last message");
                    assert_eq!(
                        format!("{check:?}"),
                        format!("{framer:?}"),
                        "a run left another state than next"
                    );
                    buf.drain(..ran.len);
                    continue;
                }
                assert!(!ran.last, "a run that took nothing reported a last message");
            }
            let (frame, used) = match framer.next(&buf) {
                Ok(Some(step)) => step,
                Ok(None) => break,
                Err(e) => return (record.events, Some(e)),
            };
            record.push(&frame);
            buf.drain(..used);
        }
    }
    (record.events, None)
}

/// What a replay framed so far, with the line and literal being joined.
#[derive(Default)]
struct Record {
    /// The events, in order.
    events: Vec<Event>,
    /// The parts of the line being framed.
    line: Vec<u8>,
    /// The chunks of the literal being framed.
    literal: Vec<u8>,
    /// Whether the over-long line being discarded started a message.
    overlong_first: Option<bool>,
}

impl Record {
    /// Records one frame: a line's parts and a literal's chunks are joined into one event.
    fn push(&mut self, frame: &Frame<'_>) {
        match frame {
            Frame::Line(l) => {
                self.line.extend_from_slice(l.bytes);
                if l.complete {
                    self.events.push(Event::Line {
                        bytes: std::mem::take(&mut self.line),
                        first: l.first,
                        valid: l.syntax.is_none(),
                    });
                }
            }
            Frame::Literal { data, remaining } => {
                self.literal.extend_from_slice(data);
                if *remaining == 0 {
                    self.events
                        .push(Event::Literal(std::mem::take(&mut self.literal)));
                }
            }
            Frame::Overlong { first, .. } => self.overlong_first = Some(*first),
            Frame::Skipped => {}
            Frame::Discarded => self.events.push(Event::Discarded {
                first: self.overlong_first.take().unwrap_or(true),
            }),
            Frame::LiteralTooLarge { line: last, .. } => {
                // A streamed server line may have had parts before this last one.
                self.line.extend_from_slice(last);
                self.events
                    .push(Event::LiteralTooLarge(std::mem::take(&mut self.line)));
            }
        }
    }
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
