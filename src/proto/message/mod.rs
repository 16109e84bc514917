//! Whole server messages: the input type for an assembled response (lines plus the literals
//! between them), the classification of a response's first line into kinds a stage subscribes
//! to, and typed parsers for the response families later stages need to understand (LIST/LSUB,
//! STATUS, SEARCH/ESEARCH, SELECT data and response codes, FETCH).
//!
//! ```text
//! response-data = "*" SP (resp-cond-state / resp-cond-bye / mailbox-data / message-data /
//!                 capability-data / enable-data) CRLF          ; RFC 9051 §9
//! literal       = "{" number64 ["+"] "}" CRLF *CHAR8
//! literal8      = "~{" number64 ["+"] "}" CRLF *OCTET         ; RFC 3516
//! ```
//!
//! A message is `lines[0]`, `literals[0]`, `lines[1]`, ... `lines[n]`: every line but the last
//! ends with a literal announcement, and `literals[i]` holds (or, for a large literal that
//! streamed through, only measures) the bytes announced at the end of `lines[i]`. Parsers never
//! copy: they report where things are as [`Pos`] extents into this structure, and borrow the
//! bytes of small things (mailbox names, flags) from it. Nothing here needs the bytes of a
//! [`LiteralBody::Streamed`] literal except a mailbox name (or other string whose content is
//! decoded), which then fails with [`ParseError::LiteralNotKept`].
//!
//! Building an [`Assembled`] from framer output: feed each [`Frame`](super::framer::Frame) of
//! one message to an [`Assembler`]; it copies line bytes and small literals into one buffer,
//! records only the length of large literals, and lends out the result with
//! [`Assembler::assembled`] (two small vectors of slices, no further copy).

mod assemble;
mod code;
mod cursor;
mod fetch;
mod kind;
mod list;
mod search;
mod select;
mod status;

#[cfg(test)]
mod fetch_tests;
#[cfg(test)]
mod split_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use assemble::{AssembleError, AssembleLimits, Assembler, Step, for_each_message};
pub use code::{RespCode, resp_code};
pub use cursor::{AString, LiteralRef, ParseError, Shape, StringForm, Value, Words, decimal_u32};
pub use fetch::{FetchAtt, FetchData, FetchItem, parse_fetch};
pub use kind::{Cond, Kind, Kinds, is_numbered, kind, numbered_kinds};
pub use list::{ExtendedItem, MailboxList, parse_list, parse_lsub};
pub use search::{EsearchData, EsearchItem, Numbers, SearchData, parse_esearch, parse_search};
pub use select::{
    Vanished, parse_capability, parse_enabled, parse_exists, parse_expunge, parse_flags,
    parse_vanished,
};
pub use status::{StatusAtt, StatusData, StatusItem, parse_status};

/// A place in an [`Assembled`] message: byte `offset` of `lines[line]`. Extents are half-open
/// (`start..end`); a literal value ends at `Pos { line: its line + 1, offset: 0 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// Index into [`Assembled::lines`].
    pub line: usize,
    /// Byte offset inside that line (its line ending included in the line's length).
    pub offset: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {} offset {}", self.line, self.offset)
    }
}

/// The bytes of one literal of an assembled message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralBody<'a> {
    /// The literal's bytes, kept because they were small.
    Bytes(&'a [u8]),
    /// A literal that streamed through without being kept: only its length is known.
    Streamed {
        /// Announced (and forwarded) length in bytes.
        len: u64,
        /// Announced as `~{n}` (RFC 3516 literal8).
        binary: bool,
    },
}

impl LiteralBody<'_> {
    /// The literal's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            LiteralBody::Bytes(b) => b.len() as u64,
            LiteralBody::Streamed { len, .. } => *len,
        }
    }

    /// Whether the literal is empty (`{0}`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One whole server message, as the parsers take it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assembled<'a> {
    /// The lines, each with its line ending; all but the last end in a literal announcement.
    pub lines: Vec<&'a [u8]>,
    /// `literals[i]` sits between `lines[i]` and `lines[i + 1]`.
    pub literals: Vec<LiteralBody<'a>>,
}

impl<'a> Assembled<'a> {
    /// A message of one line (no literals).
    pub fn line(line: &'a [u8]) -> Self {
        Assembled {
            lines: vec![line],
            literals: Vec::new(),
        }
    }

    /// The first line (empty for an empty message).
    pub fn first_line(&self) -> &'a [u8] {
        self.lines.first().copied().unwrap_or_default()
    }

    /// The bytes from `start` to `end` when both lie in the same line.
    pub fn slice(&self, start: Pos, end: Pos) -> Option<&'a [u8]> {
        if start.line != end.line {
            return None;
        }
        self.lines.get(start.line)?.get(start.offset..end.offset)
    }

    /// Whether `pos` is a place in this message (the end of the last line included).
    pub fn contains(&self, pos: Pos) -> bool {
        match self.lines.get(pos.line) {
            Some(line) => pos.offset <= line.len(),
            // The end of a literal on the last line is never produced, so no slack here.
            None => false,
        }
    }
}

/// Any server message, parsed by the parser its first line selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// `+ ...`
    Continuation,
    /// `tag OK|NO|BAD [code] text`
    Tagged {
        /// The tag it completes.
        tag: &'a [u8],
        /// OK, NO or BAD.
        cond: Cond,
        /// The response code, if any.
        code: Option<RespCode<'a>>,
    },
    /// `* OK|NO|BAD|BYE|PREAUTH [code] text`
    Condition {
        /// Which one.
        cond: Cond,
        /// The response code, if any.
        code: Option<RespCode<'a>>,
    },
    /// `* CAPABILITY ...`
    Capability(Words<'a>),
    /// `* ENABLED ...`
    Enabled(Words<'a>),
    /// `* LIST ...`
    List(MailboxList<'a>),
    /// `* LSUB ...`
    Lsub(MailboxList<'a>),
    /// `* STATUS ...`
    Status(StatusData<'a>),
    /// `* SEARCH ...`
    Search(SearchData<'a>),
    /// `* ESEARCH ...`
    Esearch(EsearchData<'a>),
    /// `* FLAGS (...)`
    Flags(Words<'a>),
    /// `* n EXISTS`
    Exists(u32),
    /// `* n EXPUNGE`
    Expunge(u32),
    /// `* VANISHED [(EARLIER)] set`
    Vanished(Vanished<'a>),
    /// `* n FETCH (...)`
    Fetch(FetchData<'a>),
    /// Anything else: not parsed.
    Other,
}

/// Parses a whole message with the parser that [`kind`] of its first line selects.
pub fn parse<'a>(msg: &Assembled<'a>) -> Result<Message<'a>, ParseError> {
    let first = msg.first_line();
    let single = || {
        if msg.lines.len() == 1 {
            Ok(first)
        } else {
            Err(ParseError::Trailing {
                at: Pos {
                    line: 0,
                    offset: cursor::trim_eol(first).len(),
                },
            })
        }
    };
    Ok(match kind(first) {
        Kind::Continuation => Message::Continuation,
        Kind::Tagged { tag, cond, .. } => Message::Tagged {
            tag,
            cond,
            code: resp_code(first),
        },
        Kind::Condition { cond, .. } => Message::Condition {
            cond,
            code: resp_code(first),
        },
        Kind::Capability => Message::Capability(parse_capability(single()?)?),
        Kind::Enabled => Message::Enabled(parse_enabled(single()?)?),
        Kind::List => Message::List(parse_list(msg)?),
        Kind::Lsub => Message::Lsub(parse_lsub(msg)?),
        Kind::Status => Message::Status(parse_status(msg)?),
        Kind::Search => Message::Search(parse_search(single()?)?),
        Kind::Esearch => Message::Esearch(parse_esearch(msg)?),
        Kind::Flags => Message::Flags(parse_flags(single()?)?),
        Kind::Exists => Message::Exists(parse_exists(single()?)?),
        Kind::Expunge => Message::Expunge(parse_expunge(single()?)?),
        Kind::Vanished => Message::Vanished(parse_vanished(single()?)?),
        Kind::Fetch => Message::Fetch(parse_fetch(msg)?),
        Kind::Other => Message::Other,
    })
}
