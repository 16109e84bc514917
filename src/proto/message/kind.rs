//! Cheap classification of a response by its first line, and the bitset stages subscribe with.
//!
//! ```text
//! response-tagged = tag SP resp-cond-state CRLF
//! response-data   = "*" SP (resp-cond-state / resp-cond-bye / mailbox-data / message-data /
//!                   capability-data / enable-data) CRLF
//! continue-req    = "+" [SP (resp-text / base64)] CRLF
//! resp-cond-state = ("OK" / "NO" / "BAD") SP resp-text
//! resp-cond-bye   = "BYE" SP resp-text
//! resp-cond-auth  = ("OK" / "PREAUTH") SP resp-text
//! mailbox-data    = "FLAGS" SP flag-list / "LIST" SP mailbox-list / "LSUB" SP mailbox-list /
//!                   esearch-response / "STATUS" SP mailbox SP "(" [status-att-list] ")" /
//!                   number SP "EXISTS" / "SEARCH" *(SP nz-number) ...
//! message-data    = nz-number SP ("EXPUNGE" / ("FETCH" SP msg-att))
//! expunged-resp   = "VANISHED" [SP "(EARLIER)"] SP known-uids      ; RFC 7162
//! enable-data     = "ENABLED" *(SP capability)                      ; RFC 5161
//! ```
//!
//! Only words are compared (ASCII case-insensitively); nothing is allocated or validated beyond
//! what tells the kinds apart. A line that fits none of them is [`Kind::Other`].

use crate::proto::command::is_tag_char;
use crate::proto::keyword::{Keywords, eq_letters};

use super::cursor::trim_eol;

/// The condition of a status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cond {
    /// `OK`
    Ok,
    /// `NO`
    No,
    /// `BAD`
    Bad,
    /// `BYE` (untagged only)
    Bye,
    /// `PREAUTH` (untagged greeting only)
    Preauth,
}

impl Cond {
    /// Maps the condition word (case-insensitive).
    pub fn from_word(word: &[u8]) -> Option<Cond> {
        COND_WORDS
            .iter()
            .find_map(|&(cond, name)| eq_letters(word, name).then_some(cond))
    }
}

/// Each condition with its word in lower case; the order [`cond_at`] tries them in.
const COND_WORDS: [(Cond, &[u8]); 5] = [
    (Cond::Ok, b"ok"),
    (Cond::No, b"no"),
    (Cond::Bad, b"bad"),
    (Cond::Bye, b"bye"),
    (Cond::Preauth, b"preauth"),
];

/// The text after `lower` (a keyword of ASCII letters) when it is the first word of `input`
/// (ending at a space or the end), in any case: `Some` of what [`word`] would give as the rest.
#[inline(always)]
fn word_at<'a>(input: &'a [u8], lower: &[u8]) -> Option<&'a [u8]> {
    let n = lower.len();
    if !eq_letters(input.get(..n)?, lower) {
        return None;
    }
    match input.get(n) {
        None => Some(&[]),
        Some(b' ') => Some(input.get(n + 1..).unwrap_or_default()),
        Some(_) => None,
    }
}

/// The condition word that starts `input`, and the text after it.
#[inline(always)]
fn cond_at(input: &[u8]) -> Option<(Cond, &[u8])> {
    COND_WORDS
        .iter()
        .find_map(|&(cond, name)| word_at(input, name).map(|text| (cond, text)))
}

/// What a response is, by its first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// `+ ...`
    Continuation,
    /// `tag OK|NO|BAD ...`
    Tagged {
        /// The tag.
        tag: &'a [u8],
        /// OK, NO or BAD.
        cond: Cond,
        /// The response code's name (`READ-WRITE` in `[READ-WRITE]`), if any.
        code: Option<&'a [u8]>,
    },
    /// `* OK|NO|BAD|BYE|PREAUTH ...`
    Condition {
        /// Which condition.
        cond: Cond,
        /// The response code's name, if any.
        code: Option<&'a [u8]>,
    },
    /// `* CAPABILITY`
    Capability,
    /// `* ENABLED`
    Enabled,
    /// `* LIST`
    List,
    /// `* LSUB`
    Lsub,
    /// `* STATUS`
    Status,
    /// `* SEARCH`
    Search,
    /// `* ESEARCH`
    Esearch,
    /// `* FLAGS`
    Flags,
    /// `* n EXISTS`
    Exists,
    /// `* n EXPUNGE`
    Expunge,
    /// `* VANISHED`
    Vanished,
    /// `* n FETCH`
    Fetch,
    /// Anything else (`* n RECENT`, `* NAMESPACE`, `* ID`, garbage...).
    Other,
}

/// A set of [`Kind`]s, for subscribing: `Kinds::LIST.union(Kinds::STATUS)` or
/// `Kinds::LIST | Kinds::STATUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Kinds(u32);

impl Kinds {
    /// No kind.
    pub const NONE: Kinds = Kinds(0);
    /// `+ ...`
    pub const CONTINUATION: Kinds = Kinds(1 << 0);
    /// Tagged OK/NO/BAD.
    pub const TAGGED: Kinds = Kinds(1 << 1);
    /// `* OK`
    pub const OK: Kinds = Kinds(1 << 2);
    /// `* NO`
    pub const NO: Kinds = Kinds(1 << 3);
    /// `* BAD`
    pub const BAD: Kinds = Kinds(1 << 4);
    /// `* BYE`
    pub const BYE: Kinds = Kinds(1 << 5);
    /// `* PREAUTH`
    pub const PREAUTH: Kinds = Kinds(1 << 6);
    /// `* CAPABILITY`
    pub const CAPABILITY: Kinds = Kinds(1 << 7);
    /// `* ENABLED`
    pub const ENABLED: Kinds = Kinds(1 << 8);
    /// `* LIST`
    pub const LIST: Kinds = Kinds(1 << 9);
    /// `* LSUB`
    pub const LSUB: Kinds = Kinds(1 << 10);
    /// `* STATUS`
    pub const STATUS: Kinds = Kinds(1 << 11);
    /// `* SEARCH`
    pub const SEARCH: Kinds = Kinds(1 << 12);
    /// `* ESEARCH`
    pub const ESEARCH: Kinds = Kinds(1 << 13);
    /// `* FLAGS`
    pub const FLAGS: Kinds = Kinds(1 << 14);
    /// `* n EXISTS`
    pub const EXISTS: Kinds = Kinds(1 << 15);
    /// `* n EXPUNGE`
    pub const EXPUNGE: Kinds = Kinds(1 << 16);
    /// `* VANISHED`
    pub const VANISHED: Kinds = Kinds(1 << 17);
    /// `* n FETCH`
    pub const FETCH: Kinds = Kinds(1 << 18);
    /// Everything else.
    pub const OTHER: Kinds = Kinds(1 << 19);
    /// Every untagged status response (OK, NO, BAD, BYE, PREAUTH).
    pub const CONDITIONS: Kinds = Kinds(0b111_1100);
    /// Every kind.
    pub const ALL: Kinds = Kinds((1 << 20) - 1);

    /// Both sets together.
    pub const fn union(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }

    /// The kinds in both sets.
    pub const fn intersection(self, other: Kinds) -> Kinds {
        Kinds(self.0 & other.0)
    }

    /// Whether every kind of `other` is in `self`.
    pub const fn contains(self, other: Kinds) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the sets share a kind.
    pub const fn intersects(self, other: Kinds) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `kind` is in the set.
    pub const fn matches(self, kind: &Kind<'_>) -> bool {
        self.intersects(kind.kinds())
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl std::ops::BitOr for Kinds {
    type Output = Kinds;
    fn bitor(self, rhs: Kinds) -> Kinds {
        self.union(rhs)
    }
}

impl std::ops::BitOrAssign for Kinds {
    fn bitor_assign(&mut self, rhs: Kinds) {
        *self = self.union(rhs);
    }
}

impl Kind<'_> {
    /// The one-kind set holding this kind.
    pub const fn kinds(&self) -> Kinds {
        match self {
            Kind::Continuation => Kinds::CONTINUATION,
            Kind::Tagged { .. } => Kinds::TAGGED,
            Kind::Condition { cond, .. } => match cond {
                Cond::Ok => Kinds::OK,
                Cond::No => Kinds::NO,
                Cond::Bad => Kinds::BAD,
                Cond::Bye => Kinds::BYE,
                Cond::Preauth => Kinds::PREAUTH,
            },
            Kind::Capability => Kinds::CAPABILITY,
            Kind::Enabled => Kinds::ENABLED,
            Kind::List => Kinds::LIST,
            Kind::Lsub => Kinds::LSUB,
            Kind::Status => Kinds::STATUS,
            Kind::Search => Kinds::SEARCH,
            Kind::Esearch => Kinds::ESEARCH,
            Kind::Flags => Kinds::FLAGS,
            Kind::Exists => Kinds::EXISTS,
            Kind::Expunge => Kinds::EXPUNGE,
            Kind::Vanished => Kinds::VANISHED,
            Kind::Fetch => Kinds::FETCH,
            Kind::Other => Kinds::OTHER,
        }
    }
}

/// Splits off the word up to the next space (the rest starts after that space).
///
/// A plain loop, not memchr: the words looked at here are a few bytes long, and memchr's
/// vector set-up cost more than the search (a third of this classifier's instructions, which
/// run on every server message).
fn word(input: &[u8]) -> (&[u8], &[u8]) {
    match input.iter().position(|&c| c == b' ') {
        Some(end) => (
            input.get(..end).unwrap_or_default(),
            input.get(end + 1..).unwrap_or_default(),
        ),
        None => (input, &[]),
    }
}

/// The name of the response code that starts `text` (`[NAME ...]` or `[NAME]`), if any.
pub(crate) fn code_name(text: &[u8]) -> Option<&[u8]> {
    let code = text.strip_prefix(b"[")?;
    let end = code.iter().position(|&c| c == b' ' || c == b']')?;
    let name = code.get(..end)?;
    (!name.is_empty()).then_some(name)
}

/// The words of `* WORD ...` lines that are not conditions.
static NAMED: Keywords<Kind<'static>, 9> = Keywords::new([
    (b"CAPABILITY", Kind::Capability),
    (b"ENABLED", Kind::Enabled),
    (b"LIST", Kind::List),
    (b"LSUB", Kind::Lsub),
    (b"STATUS", Kind::Status),
    (b"SEARCH", Kind::Search),
    (b"ESEARCH", Kind::Esearch),
    (b"FLAGS", Kind::Flags),
    (b"VANISHED", Kind::Vanished),
]);

/// Classifies the first line of a server message.
///
/// Runs on every server message, so each shape is told apart by its first bytes before any
/// word is compared: `+`, `* ` and a digit (`* n EXISTS|EXPUNGE|FETCH`, most of a busy
/// mailbox's traffic), `* ` and a word, or a tag.
pub fn kind(first_line: &[u8]) -> Kind<'_> {
    let body = trim_eol(first_line);
    let untagged = match body {
        [b'+', ..] => return Kind::Continuation,
        [b'*', b' ', untagged @ ..] => untagged,
        _ => return tagged(body),
    };
    if untagged.first().is_some_and(u8::is_ascii_digit) {
        return numbered(untagged);
    }
    if let Some((cond, text)) = cond_at(untagged) {
        return Kind::Condition {
            cond,
            code: code_name(text),
        };
    }
    NAMED.get(word(untagged).0).unwrap_or(Kind::Other)
}

/// `tag SP ("OK" / "NO" / "BAD") SP resp-text`, or [`Kind::Other`].
fn tagged(body: &[u8]) -> Kind<'_> {
    let end = body
        .iter()
        .position(|&c| !is_tag_char(c))
        .unwrap_or(body.len());
    let (Some(tag), Some(b' ')) = (body.get(..end), body.get(end)) else {
        return Kind::Other;
    };
    match cond_at(body.get(end + 1..).unwrap_or_default()) {
        Some((cond @ (Cond::Ok | Cond::No | Cond::Bad), text)) if !tag.is_empty() => Kind::Tagged {
            tag,
            cond,
            code: code_name(text),
        },
        _ => Kind::Other,
    }
}

/// Whether a first line starts `* ` and a digit: `* n EXISTS|EXPUNGE|FETCH|RECENT ...` (a
/// number is never a condition or a named response), most of a busy mailbox's traffic.
#[inline(always)]
pub fn is_numbered(first_line: &[u8]) -> bool {
    matches!(first_line, [b'*', b' ', digit, ..] if digit.is_ascii_digit())
}

/// [`kind`]'s set for a first line that starts `* ` and a digit (`message-data` and `number SP
/// "EXISTS"`, the bulk of a server's traffic), without the general dispatch: EXISTS, EXPUNGE,
/// FETCH, or OTHER for the rest (RECENT, malformed numbers).
pub fn numbered_kinds(first_line: &[u8]) -> Kinds {
    numbered(trim_eol(first_line).get(2..).unwrap_or_default()).kinds()
}

/// `number SP ("EXISTS" / "EXPUNGE" / "FETCH" ...)` after `* `, or [`Kind::Other`]. The word
/// is told by its first letters before it is compared. Inlined into both callers, so that
/// [`numbered_kinds`] builds no [`Kind`].
#[inline(always)]
fn numbered(untagged: &[u8]) -> Kind<'static> {
    let end = untagged
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(untagged.len());
    match untagged.get(end..) {
        Some([b' ', b'F' | b'f', rest @ ..]) if word_at(rest, b"etch").is_some() => Kind::Fetch,
        Some([b' ', b'E' | b'e', b'X' | b'x', rest @ ..]) => {
            if word_at(rest, b"ists").is_some() {
                Kind::Exists
            } else if word_at(rest, b"punge").is_some() {
                Kind::Expunge
            } else {
                Kind::Other
            }
        }
        _ => Kind::Other,
    }
}
