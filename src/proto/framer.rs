//! The fragmentizer: splits one direction of an IMAP byte stream into lines and literal chunks.
//!
//! It owns nothing but a little state: the caller keeps the bytes, hands a slice to [`Framer::next`]
//! and drops the returned number of consumed bytes. There is no I/O and no async here, so the framer
//! tests and fuzzes on plain byte slices, and it never copies a literal: literal bytes are returned as
//! sub-slices of the input as soon as they are available, however large the literal is.
//!
//! Grammar it frames (RFC 9051 §9, RFC 7888, RFC 3516):
//!
//! ```text
//! literal  = "{" number64 ["+"] "}" CRLF *CHAR8
//! literal8 = "~{" number64 ["+"] "}" CRLF *OCTET
//! ```
//!
//! A message (command or response) is a line; when a line ends with a literal announcement, the
//! literal's bytes follow and the message continues with another line. The framer reports where each
//! line starts and ends (so the classifier sees only the first line of a message) and never reads
//! literal data as a line. What it leaves to others: understanding what a line says.
//!
//! Where a literal is announced, by direction:
//! - Client to server: only where the [`lexer`](super::lexer) finds one in its parse of the whole
//!   line, with the parse state carried from line to line of a message, so that the proxy sees
//!   command boundaries exactly as Dovecot does. A line that does not tokenize is reported with
//!   [`Line::syntax`], announces nothing and ends its message (the next byte starts a new one, as
//!   the server resynchronises by skipping to LF); refusing it is the caller's business. Which
//!   server process reads the commands ([`Dialect`]) decides how much of a line a command reads:
//!   see [`Framer::set_dialect`].
//! - Server to client: a status response (`tag OK|NO|BAD`, `* OK|NO|BAD|BYE|PREAUTH`) or a
//!   continuation request (`+`) ends in resp-text and never announces a literal (a mailbox name
//!   echoed in an error must not swallow bytes); other lines end in a literal when their last
//!   bytes are `{n}` / `~{n}` (with `+`), since a server line may be streamed in parts.
//! - Over-long lines (client lines discarded, server lines streamed) are judged by their last
//!   `TAIL` bytes alone (a discarded client line is never forwarded; the tail rule only decides
//!   where the discard ends, and may end it later or earlier than the server would).
//!
//! Direction matters for synchronizing literals: a client sends the bytes of `{n}` only after the
//! server's `+` continuation, so on the client-to-server side the framer stops after such a line
//! until the caller says whether the server accepted ([`Framer::literal_accepted`]) or refused
//! ([`Framer::literal_refused`]) it. A server sends literal bytes right away.

use super::command::CommandLine;
use super::lexer::{ArgState, Dialect, LineStart, SyntaxError, scan_line};
use super::literal::{Literal, announced_literal};

/// Which side of the conversation the framed bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client commands: synchronizing literals wait for the server's `+`.
    ClientToServer,
    /// Server responses: literal bytes follow their announcement at once; long lines may be
    /// streamed in parts.
    ServerToClient,
}

/// The hard limits one framer enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line (including CRLF) that is buffered whole. Client side: a longer line is
    /// discarded and reported. Server side: a longer line is emitted in parts.
    pub max_line: usize,
    /// Largest literal accepted; a larger announcement is reported, not followed.
    pub max_literal: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 64 * 1024,
            max_literal: 64 * 1024 * 1024,
        }
    }
}

/// Bytes kept from the end of a line that is streamed or discarded, enough to recognise a literal
/// announcement (`~{` + 20 digits + `+}` + CRLF is 26 bytes).
const TAIL: usize = 32;

/// Longest client tag the proxy relays; a status response's tag and word then always fall in
/// the prefix the framer judges (`STATUS_PREFIX`).
pub const MAX_TAG: usize = 256;

/// Bytes at the start of a server line that decide whether it is a status response or a
/// continuation request (whose resp-text never announces a literal).
const STATUS_PREFIX: usize = MAX_TAG + 16;

/// Bytes of an over-long line handed back so the caller can answer with its tag.
const HEAD: usize = 64;

/// What the framer found next in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A line, or a part of one, including its line ending when `complete`.
    Line(Line<'a>),
    /// Bytes of a literal; `remaining` is what is still to come after these.
    Literal {
        /// The literal bytes, exactly as received.
        data: &'a [u8],
        /// Literal bytes still expected after this chunk.
        remaining: u64,
    },
    /// A client line exceeded [`Limits::max_line`]. The framer now discards input up to the end of
    /// that message and then reports [`Frame::Discarded`]. `head` is the line's beginning (for a tag).
    Overlong {
        /// The first bytes of the line, from which the caller may take a tag to answer with.
        head: &'a [u8],
        /// Whether the line began a new message (a command) or continued one after a literal.
        first: bool,
    },
    /// Bytes of a message being discarded were consumed; there is nothing to forward.
    Skipped,
    /// The message whose line was too long has been skipped; the stream is in sync again.
    Discarded,
    /// A line announced a literal above [`Limits::max_literal`]. The line is returned so the caller
    /// can answer it. For a synchronizing client literal the stream continues with a new message
    /// (the client waits for a `+` that never comes); otherwise the framer has failed, since the
    /// peer is already sending the bytes.
    LiteralTooLarge {
        /// The announcing line, including its line ending.
        line: &'a [u8],
        /// Whether it began a new message.
        first: bool,
        /// The literal it announced.
        literal: Literal,
    },
}

/// A line as framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// The bytes: the whole line with its line ending, or one part of a long server line.
    pub bytes: &'a [u8],
    /// True when this line starts a new message (a command or a response), false when it continues
    /// one after a literal.
    pub first: bool,
    /// True when these bytes start the line (a whole line, or the first part of a streamed one).
    pub start: bool,
    /// True when these bytes end the line (its line ending is included).
    pub complete: bool,
    /// The literal announced at the end of the line, if any (only when `complete`).
    pub literal: Option<Literal>,
    /// Client lines: why the line is not a command (or continuation) the server reads as one.
    /// Such a line announces no literal and ends its message. Always `None` for server lines.
    pub syntax: Option<SyntaxError>,
    /// The first line of a valid client command: its tag, name and arguments, from the same
    /// parse that found its literal (nobody parses the line again).
    pub command: Option<CommandLine<'a>>,
}

/// What a whole line announces: its literal, why it does not tokenise (client lines), and the
/// command it starts (the first line of a valid client command).
type Announced<'a> = (
    Option<Literal>,
    Option<SyntaxError>,
    Option<CommandLine<'a>>,
);

/// Input that cannot be framed; the stream cannot be brought back in sync.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A literal announcement whose length does not fit in 64 bits.
    #[error("literal length out of range")]
    LiteralLength,
    /// A discarded message goes on with a non-synchronizing literal above the limit.
    #[error("literal in a discarded message is too large to skip")]
    DiscardTooLarge,
    /// Input arrived after a framing error or an unrecoverable frame.
    #[error("stream already failed")]
    Failed,
}

/// Where the framer is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a line. `scanned` bytes at the start of the input were searched for LF already;
    /// `first` says whether the line starts a message; `started` whether part of it was emitted.
    Line {
        scanned: usize,
        first: bool,
        started: bool,
    },
    /// Inside a literal with this many bytes to go.
    Literal { remaining: u64 },
    /// A synchronizing literal was announced; its bytes come only after the server's `+`.
    AwaitContinuation { len: u64 },
    /// Skipping an over-long line up to its LF, keeping its tail to see whether a literal follows.
    DiscardLine { tail: [u8; TAIL], tail_len: usize },
    /// Skipping the bytes of a non-synchronizing literal that belongs to a discarded message.
    DiscardLiteral { remaining: u64 },
    /// A framing error happened; nothing more is framed.
    Failed,
}

/// The state a new message starts in.
const MESSAGE_START: State = State::Line {
    scanned: 0,
    first: true,
    started: false,
};

/// The state after a literal, when the same message goes on with another line.
const CONTINUATION_LINE: State = State::Line {
    scanned: 0,
    first: false,
    started: false,
};

/// The incremental framer for one direction of one connection.
#[derive(Debug, Clone)]
pub struct Framer {
    /// Which side the bytes come from (decides how synchronizing literals and long lines behave).
    direction: Direction,
    /// Limits on lines and literals.
    limits: Limits,
    /// Where we are in the stream.
    state: State,
    /// Client side: which server process reads the commands.
    dialect: Dialect,
    /// Client side: the lexer state the next continuation line starts in.
    cont: Option<ArgState>,
    /// Server side: the line being streamed ends in resp-text (decided from its first part).
    text: bool,
}

impl Framer {
    /// A framer at the start of a stream (expecting the first line of a message).
    pub fn new(direction: Direction, mut limits: Limits) -> Self {
        // Streaming a long line keeps TAIL bytes back; a shorter limit could not make progress.
        limits.max_line = limits.max_line.max(2 * TAIL);
        Framer {
            direction,
            limits,
            state: MESSAGE_START,
            dialect: Dialect::default(),
            cont: None,
            text: false,
        }
    }

    /// Sets which server process reads the client's commands: [`Dialect::Login`] (the default,
    /// before login) or [`Dialect::Imap`] (after login). Takes effect at the next command.
    pub fn set_dialect(&mut self, dialect: Dialect) {
        self.dialect = dialect;
    }

    /// Changes the limits (the proxy tightens them before login and relaxes them after).
    pub fn set_limits(&mut self, mut limits: Limits) {
        limits.max_line = limits.max_line.max(2 * TAIL);
        self.limits = limits;
    }

    /// Starts over at a message boundary (after STARTTLS, when buffered input is dropped).
    pub fn reset(&mut self) {
        self.state = MESSAGE_START;
    }

    /// True when the next byte starts a new message: no line, literal or discard is in progress.
    /// Only there may the caller inject a message of its own into the stream.
    pub fn at_message_boundary(&self) -> bool {
        matches!(
            self.state,
            State::Line {
                first: true,
                started: false,
                ..
            }
        )
    }

    /// Literal bytes still to come in the literal being framed (0 outside a literal).
    pub fn literal_remaining(&self) -> u64 {
        match self.state {
            State::Literal { remaining } | State::DiscardLiteral { remaining } => remaining,
            _ => 0,
        }
    }

    /// True while a synchronizing literal waits for the server's verdict.
    pub fn awaiting_continuation(&self) -> bool {
        matches!(self.state, State::AwaitContinuation { .. })
    }

    /// True after an unrecoverable error.
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// The server sent `+`: the literal's bytes follow.
    pub fn literal_accepted(&mut self) {
        if let State::AwaitContinuation { len } = self.state {
            self.state = if len == 0 {
                CONTINUATION_LINE
            } else {
                State::Literal { remaining: len }
            };
        }
    }

    /// The server answered the command instead of `+`: the client will not send the literal, and
    /// its next bytes start a new command.
    pub fn literal_refused(&mut self) {
        if let State::AwaitContinuation { .. } = self.state {
            self.state = MESSAGE_START;
        }
    }

    /// Frames the next piece of `buf`, which must start where the previous call's consumed bytes
    /// ended. Returns `Ok(None)` when more input is needed (or a continuation is awaited), else the
    /// frame and how many bytes of `buf` it consumed (never zero).
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        match self.state {
            State::Failed => Err(FrameError::Failed),
            State::AwaitContinuation { .. } => Ok(None),
            _ if buf.is_empty() => Ok(None),
            State::Literal { remaining } => {
                let take = take_up_to(remaining, buf.len());
                let remaining = remaining - take as u64;
                self.state = if remaining == 0 {
                    CONTINUATION_LINE
                } else {
                    State::Literal { remaining }
                };
                let data = &buf[..take];
                Ok(Some((Frame::Literal { data, remaining }, take)))
            }
            State::DiscardLiteral { remaining } => {
                let take = take_up_to(remaining, buf.len());
                let remaining = remaining - take as u64;
                self.state = if remaining == 0 {
                    State::DiscardLine {
                        tail: [0; TAIL],
                        tail_len: 0,
                    }
                } else {
                    State::DiscardLiteral { remaining }
                };
                Ok(Some((Frame::Skipped, take)))
            }
            State::DiscardLine { tail, tail_len } => self.discard_line(buf, tail, tail_len),
            State::Line {
                scanned,
                first,
                started,
            } => self.line(buf, scanned, first, started),
        }
    }

    /// Frames a line (or a part of a long server line) at the start of `buf`.
    fn line<'a>(
        &mut self,
        buf: &'a [u8],
        scanned: usize,
        first: bool,
        started: bool,
    ) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        let from = scanned.min(buf.len());
        let Some(lf) = memchr::memchr(b'\n', &buf[from..]) else {
            return Ok(self.unterminated(buf, first, started));
        };
        let end = from + lf + 1;
        if end > self.limits.max_line && self.direction == Direction::ClientToServer {
            // Discard all but the LF now; the next call ends the discard at the LF.
            let (tail, tail_len) = push_tail([0; TAIL], 0, &buf[..end - 1]);
            self.state = State::DiscardLine { tail, tail_len };
            let head = &buf[..buf.len().min(HEAD)];
            return Ok(Some((Frame::Overlong { head, first }, end - 1)));
        }
        let bytes = &buf[..end];
        let (literal, syntax, command) = match self.announced(bytes, first, started) {
            Ok(found) => found,
            Err(e) => {
                self.state = State::Failed;
                return Err(e);
            }
        };
        let Some(literal) = literal else {
            self.state = MESSAGE_START;
            let line = Line {
                bytes,
                first,
                start: !started,
                complete: true,
                literal: None,
                syntax,
                command,
            };
            return Ok(Some((Frame::Line(line), end)));
        };
        let waits = literal.sync && self.direction == Direction::ClientToServer;
        if literal.len > self.limits.max_literal {
            self.state = if waits { MESSAGE_START } else { State::Failed };
            let frame = Frame::LiteralTooLarge {
                line: bytes,
                first,
                literal,
            };
            return Ok(Some((frame, end)));
        }
        self.state = if waits {
            State::AwaitContinuation { len: literal.len }
        } else if literal.len == 0 {
            CONTINUATION_LINE
        } else {
            State::Literal {
                remaining: literal.len,
            }
        };
        let line = Line {
            bytes,
            first,
            start: !started,
            complete: true,
            literal: Some(literal),
            syntax: None,
            command,
        };
        Ok(Some((Frame::Line(line), end)))
    }

    /// The literal a whole line (or the last part of a streamed server line) announces, and for
    /// a client line why it does not tokenize.
    fn announced<'a>(
        &mut self,
        bytes: &'a [u8],
        first: bool,
        started: bool,
    ) -> Result<Announced<'a>, FrameError> {
        match self.direction {
            Direction::ClientToServer => self.command_line(bytes, first),
            Direction::ServerToClient => self
                .server_literal(bytes, first, started)
                .map(|literal| (literal, None, None)),
        }
    }

    /// [`Framer::announced`] for a server line: the literal it announces. Kept small and inlined
    /// so that a run (every FETCH line with a body) does not build a client line's answer.
    #[inline]
    pub(super) fn server_literal(
        &self,
        bytes: &[u8],
        first: bool,
        started: bool,
    ) -> Result<Option<Literal>, FrameError> {
        // Only the last TAIL bytes are looked at, as for streamed lines, so that a line frames
        // the same however it arrived (a zero-padded announcement longer than that is not one).
        // Looked at first: most lines announce nothing, and then whether the line is a status
        // response's text does not matter.
        let announced = announced_literal(&bytes[bytes.len().saturating_sub(TAIL)..]);
        if matches!(announced, Ok(None)) {
            return Ok(None);
        }
        let text = if started {
            self.text
        } else {
            first && resp_text_line(&bytes[..bytes.len().min(self.status_prefix())])
        };
        match announced {
            _ if text => Ok(None),
            Ok(literal) => Ok(literal),
            Err(_) => Err(FrameError::LiteralLength),
        }
    }

    /// [`Framer::announced`] for a client line: the lexer's parse, with the state carried from
    /// the line before a literal. Out of line, so that the server side (every response line)
    /// does not carry the lexer's registers and stack.
    #[inline(never)]
    fn command_line<'a>(
        &mut self,
        bytes: &'a [u8],
        first: bool,
    ) -> Result<Announced<'a>, FrameError> {
        let start = match self.cont.take() {
            Some(state) if !first => LineStart::Continuation(state),
            _ => LineStart::Command(self.dialect),
        };
        match scan_line(bytes, start) {
            Ok(scanned) => {
                self.cont = scanned.literal.map(|_| scanned.next);
                Ok((scanned.literal, None, scanned.command))
            }
            Err(SyntaxError::LiteralLength) => Err(FrameError::LiteralLength),
            Err(e) => Ok((None, Some(e), None)),
        }
    }

    /// How much of a server line's start decides whether it is a status response: the same for
    /// a whole line and for the first part of a streamed one (which is at least `max_line -
    /// TAIL` long), and long enough for any tag the proxy relays (the session core refuses
    /// client tags over [`MAX_TAG`]).
    fn status_prefix(&self) -> usize {
        (self.limits.max_line - TAIL).min(STATUS_PREFIX)
    }

    /// No line ending yet in `buf`: wait, stream a part (server side), or start discarding.
    fn unterminated<'a>(
        &mut self,
        buf: &'a [u8],
        first: bool,
        started: bool,
    ) -> Option<(Frame<'a>, usize)> {
        if buf.len() < self.limits.max_line {
            self.state = State::Line {
                scanned: buf.len(),
                first,
                started,
            };
            return None;
        }
        match self.direction {
            Direction::ServerToClient => {
                // Emit all but the last TAIL bytes, so a literal announcement at the very end of
                // the line is still seen whole in the final part.
                let emit = buf.len() - TAIL;
                if !started {
                    self.text = first && resp_text_line(&buf[..self.status_prefix()]);
                }
                self.state = State::Line {
                    scanned: TAIL,
                    first,
                    started: true,
                };
                let line = Line {
                    bytes: &buf[..emit],
                    first,
                    start: !started,
                    complete: false,
                    literal: None,
                    syntax: None,
                    command: None,
                };
                Some((Frame::Line(line), emit))
            }
            Direction::ClientToServer => {
                let (tail, tail_len) = push_tail([0; TAIL], 0, buf);
                self.state = State::DiscardLine { tail, tail_len };
                let head = &buf[..buf.len().min(HEAD)];
                Some((Frame::Overlong { head, first }, buf.len()))
            }
        }
    }

    /// Skips the rest of a discarded line; at its end, skips a non-synchronizing literal too.
    fn discard_line<'a>(
        &mut self,
        buf: &'a [u8],
        tail: [u8; TAIL],
        tail_len: usize,
    ) -> Result<Option<(Frame<'a>, usize)>, FrameError> {
        let Some(lf) = memchr::memchr(b'\n', buf) else {
            let (tail, tail_len) = push_tail(tail, tail_len, buf);
            self.state = State::DiscardLine { tail, tail_len };
            return Ok(Some((Frame::Skipped, buf.len())));
        };
        let end = lf + 1;
        let (window, window_len) = push_tail(tail, tail_len, &buf[..end]);
        let literal = announced_literal(&window[..window_len]).unwrap_or(None);
        match literal {
            Some(lit) if !(lit.sync && self.direction == Direction::ClientToServer) => {
                if lit.len > self.limits.max_literal {
                    self.state = State::Failed;
                    return Err(FrameError::DiscardTooLarge);
                }
                self.state = if lit.len == 0 {
                    State::DiscardLine {
                        tail: [0; TAIL],
                        tail_len: 0,
                    }
                } else {
                    State::DiscardLiteral { remaining: lit.len }
                };
                Ok(Some((Frame::Skipped, end)))
            }
            _ => {
                self.state = MESSAGE_START;
                Ok(Some((Frame::Discarded, end)))
            }
        }
    }
}

/// Whether a server line, judged from its first bytes (see `Framer::status_prefix`),
/// ends in resp-text: a continuation request or a status response. Judging a fixed prefix keeps
/// the answer independent of how the line arrived; a tag too long for the status word to fit in
/// the prefix leaves the line to the tail rule.
fn resp_text_line(prefix: &[u8]) -> bool {
    if prefix.first() == Some(&b'+') {
        return true;
    }
    // Every status word starts with one of these: a line whose second word does not (`* 3
    // FETCH ...`, which is what announces literals) is settled without splitting it.
    let second = prefix
        .iter()
        .position(|&c| c == b' ')
        .and_then(|sp| prefix.get(sp + 1));
    matches!(
        second,
        Some(b'O' | b'o' | b'N' | b'n' | b'B' | b'b' | b'P' | b'p')
    ) && status_line(prefix)
}

/// Whether `prefix` is `tag SP status-word` followed by SP or the line's end: the words split
/// and compared (see [`status_word`]).
fn status_line(prefix: &[u8]) -> bool {
    let mut words = prefix.splitn(3, |&c| c == b' ');
    let (Some(tag), Some(word), Some(_)) = (words.next(), words.next(), words.next()) else {
        // A status word ending the line (`a OK\r\n`) has no SP after it.
        let mut words = prefix.splitn(2, |&c| c == b' ');
        let (Some(tag), Some(rest)) = (words.next(), words.next()) else {
            return false;
        };
        let word = rest.strip_suffix(b"\n").unwrap_or(rest);
        let word = word.strip_suffix(b"\r").unwrap_or(word);
        return rest.ends_with(b"\n") && status_word(tag, word);
    };
    status_word(tag, word)
}

/// `OK`, `NO`, `BAD` after a tag or `*`; `BYE`, `PREAUTH` after `*`.
fn status_word(tag: &[u8], word: &[u8]) -> bool {
    let is = |w: &[u8]| word.eq_ignore_ascii_case(w);
    !tag.is_empty()
        && (is(b"OK") || is(b"NO") || is(b"BAD") || (tag == b"*" && (is(b"BYE") || is(b"PREAUTH"))))
}

/// How many of `available` bytes a literal with `remaining` bytes to go takes.
fn take_up_to(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

/// Appends `bytes` to a small window that keeps only the last [`TAIL`] bytes.
fn push_tail(mut tail: [u8; TAIL], tail_len: usize, bytes: &[u8]) -> ([u8; TAIL], usize) {
    if bytes.len() >= TAIL {
        tail.copy_from_slice(&bytes[bytes.len() - TAIL..]);
        return (tail, TAIL);
    }
    let keep = (TAIL - bytes.len()).min(tail_len);
    tail.copy_within(tail_len - keep..tail_len, 0);
    tail[keep..keep + bytes.len()].copy_from_slice(bytes);
    (tail, keep + bytes.len())
}

#[path = "framer_run.rs"]
mod run;
pub use run::{Ran, RunStep};

#[cfg(test)]
#[path = "framer_tests.rs"]
mod tests;
