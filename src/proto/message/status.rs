//! STATUS responses: the mailbox (decoded, also from a literal) and its attribute/value pairs.
//!
//! ```text
//! mailbox-data    =/ "STATUS" SP mailbox SP "(" [status-att-list] ")"   ; RFC 9051 §9
//! status-att-list = status-att-val *(SP status-att-val)
//! status-att-val  = ("MESSAGES" SP number) / ("UIDNEXT" SP nz-number) /
//!                   ("UIDVALIDITY" SP nz-number) / ("UNSEEN" SP number) /
//!                   ("DELETED" SP number) / ("SIZE" SP number64)
//! status-att-val  =/ "HIGHESTMODSEQ" SP mod-sequence-valzer           ; RFC 7162
//! status-att-val  =/ "APPENDLIMIT" SP (number / nil)                  ; RFC 7889
//! status-att-val  =/ "MAILBOXID" SP "(" objectid ")"                  ; RFC 8474
//! ```
//!
//! `RECENT` (IMAP4rev1) is known too. The known numeric attributes must have a number or `NIL`;
//! other attributes take any value, kept as an extent.

use nom::bytes::complete::take_while1;

use super::Assembled;
use super::cursor::{AString, Cursor, ParseError, Shape, Value};

/// A STATUS attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAtt<'a> {
    /// `MESSAGES`
    Messages,
    /// `UIDNEXT`
    UidNext,
    /// `UIDVALIDITY`
    UidValidity,
    /// `UNSEEN`
    Unseen,
    /// `DELETED`
    Deleted,
    /// `SIZE`
    Size,
    /// `HIGHESTMODSEQ`
    HighestModSeq,
    /// `RECENT`
    Recent,
    /// `APPENDLIMIT`
    AppendLimit,
    /// Anything else, as sent.
    Other(&'a [u8]),
}

/// The known attributes, all numeric.
const KNOWN: [(&[u8], StatusAtt<'static>); 9] = [
    (b"MESSAGES", StatusAtt::Messages),
    (b"UIDNEXT", StatusAtt::UidNext),
    (b"UIDVALIDITY", StatusAtt::UidValidity),
    (b"UNSEEN", StatusAtt::Unseen),
    (b"DELETED", StatusAtt::Deleted),
    (b"SIZE", StatusAtt::Size),
    (b"HIGHESTMODSEQ", StatusAtt::HighestModSeq),
    (b"RECENT", StatusAtt::Recent),
    (b"APPENDLIMIT", StatusAtt::AppendLimit),
];

/// One attribute and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusItem<'a> {
    /// The attribute.
    pub att: StatusAtt<'a>,
    /// Its value (a number or `NIL` for the known attributes).
    pub value: Value<'a>,
}

/// The data of `* STATUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusData<'a> {
    /// The mailbox, decoded.
    pub mailbox: AString<'a>,
    /// The attributes in the order sent.
    pub items: Vec<StatusItem<'a>>,
}

impl StatusData<'_> {
    /// The number reported for `att` (`None` when absent or `NIL`).
    pub fn get(&self, att: StatusAtt<'_>) -> Option<u64> {
        self.items
            .iter()
            .find(|i| i.att == att)
            .and_then(|i| i.value.number())
    }
}

/// `"STATUS" SP mailbox SP "(" [status-att-list] ")"`.
pub fn parse_status<'a>(msg: &Assembled<'a>) -> Result<StatusData<'a>, ParseError> {
    let mut c = Cursor::new(msg)?;
    c.keyword(b"* STATUS ", "\"* STATUS \"")?;
    let mailbox = c.astring()?;
    c.sp()?;
    c.byte(b'(', "\"(\"")?;
    let mut items = Vec::new();
    if !c.eat(b')') {
        loop {
            let name = c.lex(
                take_while1(|ch: u8| ch.is_ascii_alphanumeric() || ch == b'-' || ch == b'.'),
                "status-att",
            )?;
            let att = KNOWN
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map_or(StatusAtt::Other(name), |&(_, a)| a);
            c.sp()?;
            let value = c.value()?;
            let numeric = matches!(value.shape, Shape::Number(_) | Shape::Nil);
            if !matches!(att, StatusAtt::Other(_)) && !numeric {
                return Err(ParseError::Expected {
                    expected: "number or NIL",
                    at: value.start,
                });
            }
            items.push(StatusItem { att, value });
            if c.eat(b')') {
                break;
            }
            c.sp()?;
        }
    }
    c.finish()?;
    Ok(StatusData { mailbox, items })
}
