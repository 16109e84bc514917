//! FETCH responses: the message sequence number and each item down to its name, section,
//! origin and the extent of its value, without needing any literal's bytes.
//!
//! ```text
//! message-data = nz-number SP ("EXPUNGE" / ("FETCH" SP msg-att))       ; RFC 9051 §9
//! msg-att      = "(" (msg-att-dynamic / msg-att-static)
//!                *(SP (msg-att-dynamic / msg-att-static)) ")"
//! msg-att-dynamic = "FLAGS" SP "(" [flag-fetch *(SP flag-fetch)] ")"
//! msg-att-static  = "ENVELOPE" SP envelope / "INTERNALDATE" SP date-time /
//!                   "RFC822.SIZE" SP number64 / "BODY" ["STRUCTURE"] SP body /
//!                   "BODY" section ["<" number ">"] SP nstring /
//!                   "BINARY" section-binary SP (nstring / literal8) /
//!                   "BINARY.SIZE" section-binary SP number / "UID" SP uniqueid
//! msg-att-dynamic =/ fetch-mod-resp ; fetch-mod-resp = "MODSEQ" SP "(" permsg-modsequence ")"
//!                                                                        ; RFC 7162
//! msg-att-static  =/ "EMAILID" SP "(" objectid ")" / "THREADID" SP ("(" objectid ")" / nil)
//!                                                                        ; RFC 8474
//! msg-att-static  =/ "SAVEDATE" SP (date-time / nil)                    ; RFC 8514
//! msg-att-static  =/ "PREVIEW" SP nstring                               ; RFC 8970
//! ```
//!
//! Values are skipped generically (tokens, quoted strings, literals, parenthesised structures
//! with literals inside), so unknown items (Gmail's `X-GM-LABELS`, `X-GM-MSGID`...) pass too.
//! `UID`, `FLAGS`, `MODSEQ`, `RFC822.SIZE` and `BINARY.SIZE` are checked to have the right form.

use nom::{
    IResult, Parser, bytes::complete::take_while1, character::complete::char,
    combinator::all_consuming, sequence::delimited,
};

use super::cursor::{
    Cursor, ParseError, Shape, Value, Words, fail, number, number64, nz_number, word_list,
};
use super::{Assembled, Pos};
use crate::proto::command::is_atom_char;

/// A FETCH item, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetchAtt {
    /// `UID`
    Uid,
    /// `FLAGS`
    Flags,
    /// `MODSEQ`
    ModSeq,
    /// `ENVELOPE`
    Envelope,
    /// `BODYSTRUCTURE`
    BodyStructure,
    /// `BODY` without a section: the non-extensible body structure.
    Body,
    /// `BODY[section]<origin>`: message content.
    BodySection,
    /// `BINARY[section]<origin>`
    Binary,
    /// `BINARY.SIZE[section]`
    BinarySize,
    /// `RFC822`
    Rfc822,
    /// `RFC822.HEADER`
    Rfc822Header,
    /// `RFC822.TEXT`
    Rfc822Text,
    /// `RFC822.SIZE`
    Rfc822Size,
    /// `INTERNALDATE`
    InternalDate,
    /// `EMAILID`
    EmailId,
    /// `THREADID`
    ThreadId,
    /// `SAVEDATE`
    SaveDate,
    /// `PREVIEW`
    Preview,
    /// Anything else (`X-GM-LABELS`...).
    Other,
}

/// Names of the known items (BODY with a section is told apart by its `[`).
const NAMES: [(&str, FetchAtt); 17] = [
    ("UID", FetchAtt::Uid),
    ("FLAGS", FetchAtt::Flags),
    ("MODSEQ", FetchAtt::ModSeq),
    ("ENVELOPE", FetchAtt::Envelope),
    ("BODYSTRUCTURE", FetchAtt::BodyStructure),
    ("BODY", FetchAtt::Body),
    ("BINARY", FetchAtt::Binary),
    ("BINARY.SIZE", FetchAtt::BinarySize),
    ("RFC822", FetchAtt::Rfc822),
    ("RFC822.HEADER", FetchAtt::Rfc822Header),
    ("RFC822.TEXT", FetchAtt::Rfc822Text),
    ("RFC822.SIZE", FetchAtt::Rfc822Size),
    ("INTERNALDATE", FetchAtt::InternalDate),
    ("EMAILID", FetchAtt::EmailId),
    ("THREADID", FetchAtt::ThreadId),
    ("SAVEDATE", FetchAtt::SaveDate),
    ("PREVIEW", FetchAtt::Preview),
];

impl FetchAtt {
    /// The item for a name as sent (case-insensitive); `section` tells `BODY[...]` from `BODY`.
    pub fn from_name(name: &[u8], section: bool) -> FetchAtt {
        let att = NAMES
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            .map_or(FetchAtt::Other, |&(_, a)| a);
        match att {
            FetchAtt::Body if section => FetchAtt::BodySection,
            att => att,
        }
    }

    /// The canonical upper-case name, `None` for [`FetchAtt::Other`].
    pub fn name(self) -> Option<&'static str> {
        match self {
            FetchAtt::BodySection => Some("BODY"),
            FetchAtt::Other => None,
            att => NAMES.iter().find(|(_, a)| *a == att).map(|&(n, _)| n),
        }
    }
}

/// One FETCH item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchItem<'a> {
    /// Which item.
    pub att: FetchAtt,
    /// Its name as sent, without section and origin.
    pub name: &'a [u8],
    /// The section spec between the brackets (`HEADER.FIELDS (DATE FROM)`, `1`, empty for `[]`).
    pub section: Option<&'a [u8]>,
    /// The origin octet of a partial fetch (`<0>`).
    pub origin: Option<u32>,
    /// Where the item's name starts.
    pub start: Pos,
    /// Its value's extent.
    pub value: Value<'a>,
}

impl FetchItem<'_> {
    /// The canonical label: upper-case name, section as sent, origin (`BODY[HEADER]<0>`).
    pub fn label(&self) -> String {
        let mut out = match self.att.name() {
            Some(n) => n.to_owned(),
            None => String::from_utf8_lossy(self.name).to_ascii_uppercase(),
        };
        if let Some(section) = self.section {
            out.push('[');
            out.push_str(&String::from_utf8_lossy(section));
            out.push(']');
        }
        if let Some(origin) = self.origin {
            out.push_str(&format!("<{origin}>"));
        }
        out
    }
}

/// The data of `* n FETCH (...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchData<'a> {
    /// The message sequence number.
    pub seq: u32,
    /// The items in the order sent.
    pub items: Vec<FetchItem<'a>>,
    /// The first `UID`, checked while parsing.
    uid: Option<u32>,
    /// The first `FLAGS`, checked while parsing.
    flags: Option<Words<'a>>,
    /// The first `MODSEQ`, checked while parsing.
    modseq: Option<u64>,
}

impl<'a> FetchData<'a> {
    /// `UID`, if sent.
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// `FLAGS`, if sent.
    pub fn flags(&self) -> Option<Words<'a>> {
        self.flags
    }

    /// `MODSEQ`, if sent.
    pub fn modseq(&self) -> Option<u64> {
        self.modseq
    }

    /// The first item of kind `att`.
    pub fn item(&self, att: FetchAtt) -> Option<&FetchItem<'a>> {
        self.items.iter().find(|i| i.att == att)
    }
}

/// A character of an item name: an atom character other than `[` and `<`.
fn is_name_char(c: u8) -> bool {
    is_atom_char(c) && c != b'[' && c != b'<'
}

/// `"[" section-spec "]"`: the text between the brackets (quoted field names may hold `]`).
fn section(input: &[u8]) -> IResult<&[u8], &[u8]> {
    let Some(body) = input.strip_prefix(b"[") else {
        return fail(input);
    };
    let mut in_quote = false;
    let mut i = 0;
    while let Some(&c) = body.get(i) {
        match c {
            b'\\' if in_quote => i += 1,
            b'"' => in_quote = !in_quote,
            b']' if !in_quote => {
                let inner = body.get(..i).unwrap_or_default();
                return Ok((body.get(i + 1..).unwrap_or_default(), inner));
            }
            _ => {}
        }
        i += 1;
    }
    fail(input)
}

/// `"<" number ">"`.
fn origin(input: &[u8]) -> IResult<&[u8], u32> {
    delimited(char('<'), number, char('>')).parse(input)
}

/// `nz-number SP "FETCH" SP msg-att`.
pub fn parse_fetch<'a>(msg: &Assembled<'a>) -> Result<FetchData<'a>, ParseError> {
    let mut c = Cursor::new(msg)?;
    c.keyword(b"* ", "\"* \"")?;
    let seq = c.lex(nz_number, "nz-number")?;
    c.keyword(b" FETCH (", "\" FETCH (\"")?;
    let mut data = FetchData {
        seq,
        items: Vec::new(),
        uid: None,
        flags: None,
        modseq: None,
    };
    loop {
        let start = c.pos();
        let name = c.lex(take_while1(is_name_char), "msg-att")?;
        let section = match c.peek() {
            Some(b'[') => Some(c.lex(section, "section")?),
            _ => None,
        };
        let origin = match c.peek() {
            Some(b'<') => Some(c.lex(origin, "origin")?),
            _ => None,
        };
        c.sp()?;
        let att = FetchAtt::from_name(name, section.is_some());
        let value = c.value()?;
        check(&mut data, att, &value)?;
        data.items.push(FetchItem {
            att,
            name,
            section,
            origin,
            start,
            value,
        });
        if c.eat(b')') {
            break;
        }
        c.sp()?;
    }
    c.finish()?;
    Ok(data)
}

/// Checks the form of the items that have one the cache relies on, and records the typed ones.
fn check<'a>(data: &mut FetchData<'a>, att: FetchAtt, value: &Value<'a>) -> Result<(), ParseError> {
    let text = value.text.unwrap_or_default();
    let ok = match att {
        FetchAtt::Uid => match all_consuming(nz_number).parse(text) {
            Ok((_, uid)) if matches!(value.shape, Shape::Number(_)) => {
                data.uid.get_or_insert(uid);
                true
            }
            _ => false,
        },
        FetchAtt::Flags => match all_consuming(word_list).parse(text) {
            Ok((_, flags)) if matches!(value.shape, Shape::List { .. }) => {
                data.flags.get_or_insert(flags);
                true
            }
            _ => false,
        },
        FetchAtt::ModSeq => {
            match all_consuming(delimited(char('('), number64, char(')'))).parse(text) {
                Ok((_, modseq)) if matches!(value.shape, Shape::List { .. }) => {
                    data.modseq.get_or_insert(modseq);
                    true
                }
                _ => false,
            }
        }
        FetchAtt::Rfc822Size | FetchAtt::BinarySize => matches!(value.shape, Shape::Number(_)),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(ParseError::Expected {
            expected: "item value",
            at: value.start,
        })
    }
}
