//! Builds [`Assembled`] messages from framer output: line bytes and small literals are copied
//! into one buffer, large literals are only measured (their bytes stream on to the client).
//!
//! The session core feeds every [`Frame`] of a message it wants whole to [`Assembler::push`];
//! when that returns [`Step::Done`], [`Assembler::assembled`] lends the message to the parsers
//! (two small vectors of slices into the buffer), and [`Assembler::clear`] makes it ready for
//! the next one, keeping its allocation. The total copied is bounded by
//! [`AssembleLimits::max_bytes`]; past it the assembler gives up and the caller forwards the
//! message without a parse.

use std::ops::Range;

use super::{Assembled, LiteralBody};
use crate::proto::framer::{Frame, FrameError, Framer, Line};

/// How much one message may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssembleLimits {
    /// Most bytes copied for one message (lines plus kept literals).
    pub max_bytes: usize,
    /// Literals up to this length are kept; longer ones become [`LiteralBody::Streamed`].
    pub keep_literal: u64,
}

impl Default for AssembleLimits {
    fn default() -> Self {
        AssembleLimits {
            max_bytes: 256 * 1024,
            keep_literal: 4 * 1024,
        }
    }
}

/// Whether a message is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More frames belong to the message.
    More,
    /// The message is complete: see [`Assembler::assembled`].
    Done,
}

/// Frames that cannot be assembled; the assembler must be cleared before it is used again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    /// The message would copy more than [`AssembleLimits::max_bytes`].
    #[error("message longer than the assembly limit")]
    TooLarge,
    /// A frame that does not continue the message (a new message before the end, a literal
    /// chunk without an announcement, anything after the end).
    #[error("frame out of order for the message being assembled")]
    OutOfOrder,
    /// A frame that never belongs to a server message (a discard, a refused literal).
    #[error("frame cannot be assembled")]
    Unsupported,
    /// The framer failed.
    #[error("framing failed: {0}")]
    Frame(#[from] FrameError),
}

/// Where one literal's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kept {
    /// Copied into the buffer.
    Bytes(Range<usize>),
    /// Only measured.
    Streamed {
        /// Length.
        len: u64,
        /// `~{n}`.
        binary: bool,
    },
}

/// A literal being received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    /// Whether its bytes are copied.
    keep: bool,
    /// Where its bytes start in the buffer (when kept).
    start: usize,
    /// Announced length.
    len: u64,
    /// Bytes received so far.
    got: u64,
    /// `~{n}`.
    binary: bool,
}

/// Collects one message at a time.
#[derive(Debug, Clone, Default)]
pub struct Assembler {
    /// The bounds.
    limits: AssembleLimits,
    /// Line bytes and kept literal bytes, in stream order.
    buf: Vec<u8>,
    /// Each complete line's place in `buf`.
    lines: Vec<Range<usize>>,
    /// Each complete literal.
    literals: Vec<Kept>,
    /// Start in `buf` of a line whose parts are still arriving.
    line_start: Option<usize>,
    /// A literal whose bytes are still arriving.
    literal: Option<Pending>,
    /// The last line has been received.
    done: bool,
}

impl Assembler {
    /// An empty assembler.
    pub fn new(limits: AssembleLimits) -> Self {
        Assembler {
            limits,
            ..Assembler::default()
        }
    }

    /// Forgets the message, keeping the allocations.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.lines.clear();
        self.literals.clear();
        self.line_start = None;
        self.literal = None;
        self.done = false;
    }

    /// The bytes copied so far: the message itself, exactly as received, as long as every
    /// literal has been kept.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Whether the literal now arriving is copied (`None` outside a literal).
    pub fn keeps_literal(&self) -> Option<bool> {
        self.literal.map(|l| l.keep)
    }

    /// The announced length of the literal now arriving (`None` outside a literal).
    pub fn literal_len(&self) -> Option<u64> {
        self.literal.map(|l| l.len)
    }

    /// True when nothing of a message has arrived yet.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.line_start.is_none()
    }

    /// The complete message, once [`Step::Done`] was returned.
    pub fn assembled(&self) -> Option<Assembled<'_>> {
        if !self.done {
            return None;
        }
        let lines = self
            .lines
            .iter()
            .map(|r| self.buf.get(r.clone()).unwrap_or_default())
            .collect();
        let literals = self
            .literals
            .iter()
            .map(|k| match k {
                Kept::Bytes(r) => LiteralBody::Bytes(self.buf.get(r.clone()).unwrap_or_default()),
                Kept::Streamed { len, binary } => LiteralBody::Streamed {
                    len: *len,
                    binary: *binary,
                },
            })
            .collect();
        Some(Assembled { lines, literals })
    }

    /// Takes the next frame of the message.
    pub fn push(&mut self, frame: &Frame<'_>) -> Result<Step, AssembleError> {
        match frame {
            Frame::Line(line) => self.push_line(line),
            Frame::Literal { data, remaining } => self.push_literal(data, *remaining),
            _ => Err(AssembleError::Unsupported),
        }
    }

    /// Copies `bytes` into the buffer within the limit.
    fn copy(&mut self, bytes: &[u8]) -> Result<(), AssembleError> {
        if self.buf.len().saturating_add(bytes.len()) > self.limits.max_bytes {
            return Err(AssembleError::TooLarge);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Takes a line or a part of one.
    pub fn push_line(&mut self, line: &Line<'_>) -> Result<Step, AssembleError> {
        if self.done || self.literal.is_some() {
            return Err(AssembleError::OutOfOrder);
        }
        match self.line_start {
            None if line.start && line.first == self.lines.is_empty() => {
                self.line_start = Some(self.buf.len());
            }
            Some(_) if !line.start => {}
            _ => return Err(AssembleError::OutOfOrder),
        }
        self.copy(line.bytes)?;
        if !line.complete {
            return Ok(Step::More);
        }
        let start = self.line_start.take().unwrap_or_default();
        self.lines.push(start..self.buf.len());
        let Some(lit) = line.literal else {
            self.done = true;
            return Ok(Step::Done);
        };
        if lit.len == 0 {
            let at = self.buf.len();
            self.literals.push(Kept::Bytes(at..at));
            return Ok(Step::More);
        }
        let room = self.limits.max_bytes.saturating_sub(self.buf.len()) as u64;
        self.literal = Some(Pending {
            keep: lit.len <= self.limits.keep_literal && lit.len <= room,
            start: self.buf.len(),
            len: lit.len,
            got: 0,
            binary: lit.binary,
        });
        Ok(Step::More)
    }

    /// Takes a chunk of a literal (`remaining` bytes still to come after it).
    pub fn push_literal(&mut self, data: &[u8], remaining: u64) -> Result<Step, AssembleError> {
        let Some(mut lit) = self.literal else {
            return Err(AssembleError::OutOfOrder);
        };
        lit.got = lit.got.saturating_add(data.len() as u64);
        if lit.got.saturating_add(remaining) != lit.len {
            return Err(AssembleError::OutOfOrder);
        }
        if lit.keep {
            self.copy(data)?;
        }
        if remaining > 0 {
            self.literal = Some(lit);
            return Ok(Step::More);
        }
        self.literal = None;
        self.literals.push(if lit.keep {
            Kept::Bytes(lit.start..self.buf.len())
        } else {
            Kept::Streamed {
                len: lit.len,
                binary: lit.binary,
            }
        });
        Ok(Step::More)
    }
}

/// Frames `chunks` (server to client) the way a connection receives them, assembles every
/// message and calls `each` with it. Stops at the first framing or assembly error. For tests and
/// fuzzing: however the input is chunked, `each` must see the same messages.
pub fn for_each_message(
    framer: &mut Framer,
    limits: AssembleLimits,
    chunks: &[&[u8]],
    mut each: impl FnMut(&Assembled<'_>),
) -> Result<(), AssembleError> {
    let mut assembler = Assembler::new(limits);
    let mut buf: Vec<u8> = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some((frame, used)) = framer.next(&buf)? {
            let step = assembler.push(&frame)?;
            buf.drain(..used.min(buf.len()));
            if step == Step::Done {
                if let Some(msg) = assembler.assembled() {
                    each(&msg);
                }
                assembler.clear();
            }
        }
    }
    Ok(())
}
