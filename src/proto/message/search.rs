//! SEARCH and ESEARCH responses.
//!
//! ```text
//! mailbox-data  =/ "SEARCH" *(SP nz-number) [SP "(" "MODSEQ" SP mod-sequence-value ")"]
//!                                               ; RFC 9051 §9 (RFC 3501), MODSEQ from RFC 7162
//! esearch-response = "ESEARCH" [search-correlator] [SP "UID"] *(SP search-return-data)
//!                                               ; RFC 4731, RFC 4466
//! search-correlator = SP "(" "TAG" SP tag-string ")"
//! search-return-data = "MIN" SP nz-number / "MAX" SP nz-number / "ALL" SP sequence-set /
//!                      "COUNT" SP number / search-ret-data-ext
//! search-ret-data-ext = search-modifier-name SP search-return-value
//! search-return-data =/ "MODSEQ" SP mod-sequence-value                   ; RFC 7162
//! search-return-data =/ "PARTIAL" SP "(" partial-range SP partial-results ")"  ; RFC 9394
//! tagged-ext-label = tagged-label-fchar *tagged-label-char
//! ```
//!
//! Values are kept as extents ([`Value`]); the accessors read the usual ones. The numbers of a
//! SEARCH are checked while parsing and kept as the raw text they were read from.

use nom::bytes::complete::take_while1;

use super::Assembled;
use super::cursor::{AString, Cursor, ParseError, Shape, Value, number64, nz_number};
use super::select::parse_one_line;

/// The numbers of a `* SEARCH`, kept raw and checked to be `nz-number`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Numbers<'a> {
    /// The numbers with the spaces between them.
    pub raw: &'a [u8],
}

impl<'a> Numbers<'a> {
    /// The numbers, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.raw
            .split(|&c| c == b' ')
            .filter_map(|n| nz_number(n).ok().map(|(_, n)| n))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

/// The data of `* SEARCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchData<'a> {
    /// The matching sequence numbers or UIDs.
    pub numbers: Numbers<'a>,
    /// The highest mod-sequence of the matches (CONDSTORE), if sent.
    pub modseq: Option<u64>,
}

/// `"SEARCH" *(SP nz-number) [SP "(" "MODSEQ" SP mod-sequence-value ")"]`.
pub fn parse_search(line: &[u8]) -> Result<SearchData<'_>, ParseError> {
    parse_one_line(line, |c| {
        c.keyword(b"SEARCH", "\"SEARCH\"")?;
        let all = c.rest();
        while c.rest().first() == Some(&b' ') && c.rest().get(1).is_some_and(u8::is_ascii_digit) {
            c.sp()?;
            c.lex(nz_number, "nz-number")?;
        }
        let used = all.len().saturating_sub(c.rest().len());
        let raw = all.get(..used).unwrap_or_default();
        let raw = raw.strip_prefix(b" ").unwrap_or(raw);
        let mut modseq = None;
        if c.eat(b' ') {
            c.keyword(b"(MODSEQ ", "\"(MODSEQ \"")?;
            modseq = Some(c.lex(number64, "mod-sequence-value")?);
            c.byte(b')', "\")\"")?;
        }
        Ok(SearchData {
            numbers: Numbers { raw },
            modseq,
        })
    })
}

/// One `search-return-data` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsearchItem<'a> {
    /// The item's name as sent (`MIN`, `ALL`, `PARTIAL`...).
    pub name: &'a [u8],
    /// Its value.
    pub value: Value<'a>,
}

/// The data of `* ESEARCH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsearchData<'a> {
    /// The tag of the command it answers, from `(TAG "...")`.
    pub tag: Option<AString<'a>>,
    /// Whether the numbers are UIDs.
    pub uid: bool,
    /// The returned data, in order.
    pub items: Vec<EsearchItem<'a>>,
}

impl<'a> EsearchData<'a> {
    /// The first item called `name` (case-insensitive).
    pub fn item(&self, name: &[u8]) -> Option<&EsearchItem<'a>> {
        self.items
            .iter()
            .find(|i| i.name.eq_ignore_ascii_case(name))
    }

    /// A numeric item that fits in 32 bits.
    fn number32(&self, name: &[u8]) -> Option<u32> {
        u32::try_from(self.item(name)?.value.number()?).ok()
    }

    /// `MIN`
    pub fn min(&self) -> Option<u32> {
        self.number32(b"MIN")
    }

    /// `MAX`
    pub fn max(&self) -> Option<u32> {
        self.number32(b"MAX")
    }

    /// `COUNT`
    pub fn count(&self) -> Option<u32> {
        self.number32(b"COUNT")
    }

    /// `MODSEQ`
    pub fn modseq(&self) -> Option<u64> {
        self.item(b"MODSEQ")?.value.number()
    }

    /// `ALL`, the sequence set as sent.
    pub fn all(&self) -> Option<&'a [u8]> {
        self.item(b"ALL")?.value.text
    }
}

/// `tagged-label-char`, which includes `tagged-label-fchar`.
fn is_label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.:".contains(&c)
}

/// `"ESEARCH" [search-correlator] [SP "UID"] *(SP search-return-data)`.
pub fn parse_esearch<'a>(msg: &Assembled<'a>) -> Result<EsearchData<'a>, ParseError> {
    let mut c = Cursor::new(msg)?;
    c.keyword(b"* ESEARCH", "\"* ESEARCH\"")?;
    let mut tag = None;
    if c.rest().starts_with(b" (") {
        c.keyword(b" (TAG ", "\"(TAG \"")?;
        tag = Some(c.astring()?);
        c.byte(b')', "\")\"")?;
    }
    let uid_word = |r: &[u8]| {
        r.get(..4).is_some_and(|w| w.eq_ignore_ascii_case(b" UID"))
            && matches!(r.get(4), None | Some(b' '))
    };
    let uid = uid_word(c.rest());
    if uid {
        c.keyword(b" UID", "\"UID\"")?;
    }
    let mut items = Vec::new();
    while c.eat(b' ') {
        let name = c.lex(take_while1(is_label_char), "search-return-data")?;
        c.sp()?;
        let value = c.value()?;
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        let at_most = |min: u64, max: u64| value.number().is_some_and(|n| (min..=max).contains(&n));
        let ok = if is(b"MIN") || is(b"MAX") {
            at_most(1, u32::MAX.into())
        } else if is(b"COUNT") {
            at_most(0, u32::MAX.into())
        } else if is(b"MODSEQ") {
            at_most(0, i64::MAX as u64)
        } else if is(b"ALL") {
            matches!(value.shape, Shape::Number(_) | Shape::Atom)
        } else {
            true
        };
        if !ok {
            return Err(ParseError::Expected {
                expected: "search-return-value",
                at: value.start,
            });
        }
        items.push(EsearchItem { name, value });
    }
    c.finish()?;
    Ok(EsearchData { tag, uid, items })
}
