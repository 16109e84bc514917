//! The one-line untagged data of SELECT/EXAMINE and of a selected mailbox, plus the capability
//! and ENABLE lists.
//!
//! ```text
//! mailbox-data    =/ "FLAGS" SP flag-list / number SP "EXISTS"      ; RFC 9051 §9
//! message-data    = nz-number SP ("EXPUNGE" / ("FETCH" SP msg-att))
//! flag-list       = "(" [flag *(SP flag)] ")"
//! capability-data = "CAPABILITY" *(SP capability) SP "IMAP4rev2" *(SP capability)
//! enable-data     = "ENABLED" *(SP capability)                      ; RFC 5161
//! expunged-resp   = "VANISHED" [SP "(EARLIER)"] SP known-uids       ; RFC 7162
//! known-uids      = sequence-set                                    ; no "*"
//! ```
//!
//! Each parser takes the message's only line, with or without its line ending.

use nom::bytes::complete::take_while1;

use super::cursor::{Cursor, ParseError, Words, nz_number, word_list, words};
use super::{Assembled, cursor::number};

/// `* VANISHED [(EARLIER)] uids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vanished<'a> {
    /// `(EARLIER)`: the UIDs vanished before this session (QRESYNC SELECT or UID FETCH).
    pub earlier: bool,
    /// The UID set, raw (`41,43:116`).
    pub uids: &'a [u8],
}

/// Runs `body` on a cursor over a one-line message after `* `, then requires the line's end.
pub(crate) fn parse_one_line<'a, T>(
    line: &'a [u8],
    body: impl FnOnce(&mut Cursor<'_, 'a>) -> Result<T, ParseError>,
) -> Result<T, ParseError> {
    let msg = Assembled::line(line);
    let mut c = Cursor::new(&msg)?;
    c.keyword(b"* ", "\"* \"")?;
    let out = body(&mut c)?;
    c.finish()?;
    Ok(out)
}

/// `* <digits><keyword>` with the line ending `\r\n` or none, read without the cursor: EXISTS
/// and EXPUNGE come once per message added or removed, to every session that has the mailbox
/// open. `nz`: an `nz-number` (`digit-nz *DIGIT`: no leading zero). `None` for any other shape
/// (another case, a zero, an error), which the grammar then reads (and accepts or rejects) as
/// usual: this only ever accepts what it would.
fn quick_numbered(line: &[u8], keyword: &[u8], nz: bool) -> Option<u32> {
    let body = line.strip_suffix(b"\r\n").unwrap_or(line);
    let rest = body.strip_prefix(b"* ")?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if rest.get(digits..)? != keyword || (nz && rest.first() == Some(&b'0')) {
        return None;
    }
    super::cursor::decimal_u32(&rest[..digits])
}

/// `number SP "EXISTS"`: the number of messages.
pub fn parse_exists(line: &[u8]) -> Result<u32, ParseError> {
    if let Some(n) = quick_numbered(line, b" EXISTS", false) {
        return Ok(n);
    }
    parse_one_line(line, |c| {
        let n = c.lex(number, "number")?;
        c.keyword(b" EXISTS", "\" EXISTS\"")?;
        Ok(n)
    })
}

/// `nz-number SP "EXPUNGE"`: the sequence number expunged.
pub fn parse_expunge(line: &[u8]) -> Result<u32, ParseError> {
    if let Some(n) = quick_numbered(line, b" EXPUNGE", true) {
        return Ok(n);
    }
    parse_one_line(line, |c| {
        let n = c.lex(nz_number, "nz-number")?;
        c.keyword(b" EXPUNGE", "\" EXPUNGE\"")?;
        Ok(n)
    })
}

/// `"FLAGS" SP flag-list`.
pub fn parse_flags(line: &[u8]) -> Result<Words<'_>, ParseError> {
    parse_one_line(line, |c| {
        c.keyword(b"FLAGS ", "\"FLAGS \"")?;
        c.lex(word_list, "flag-list")
    })
}

/// `"ENABLED" *(SP capability)`.
pub fn parse_enabled(line: &[u8]) -> Result<Words<'_>, ParseError> {
    parse_one_line(line, |c| {
        c.keyword(b"ENABLED", "\"ENABLED\"")?;
        if c.eat(b' ') {
            c.lex(words, "capability")
        } else {
            Ok(Words::default())
        }
    })
}

/// `"CAPABILITY" 1*(SP capability)` (IMAP4rev2 or IMAP4rev1 is not required to be present).
pub fn parse_capability(line: &[u8]) -> Result<Words<'_>, ParseError> {
    parse_one_line(line, |c| {
        c.keyword(b"CAPABILITY ", "\"CAPABILITY \"")?;
        let caps = c.lex(words, "capability")?;
        if caps.is_empty() {
            return Err(c.expected("capability"));
        }
        Ok(caps)
    })
}

/// `"VANISHED" [SP "(EARLIER)"] SP known-uids`.
pub fn parse_vanished(line: &[u8]) -> Result<Vanished<'_>, ParseError> {
    parse_one_line(line, |c| {
        c.keyword(b"VANISHED ", "\"VANISHED \"")?;
        let earlier = c.rest().first() == Some(&b'(');
        if earlier {
            c.keyword(b"(EARLIER) ", "\"(EARLIER) \"")?;
        }
        let set = |ch: u8| ch.is_ascii_digit() || ch == b':' || ch == b',';
        let uids = c.lex(take_while1(set), "known-uids")?;
        Ok(Vanished { earlier, uids })
    })
}

#[cfg(test)]
mod quick_tests {
    use super::*;
    use proptest::prelude::*;

    /// The grammar's answer, without the quick path.
    fn slow(line: &[u8], keyword: &'static [u8], nz: bool) -> Result<u32, ParseError> {
        parse_one_line(line, |c| {
            let n = if nz {
                c.lex(nz_number, "nz-number")?
            } else {
                c.lex(number, "number")?
            };
            c.keyword(keyword, "keyword")?;
            Ok(n)
        })
    }

    proptest! {
        /// Whatever the quick path accepts, the grammar accepts with the same number.
        #[test]
        fn quick_path_agrees_with_the_grammar(
            digits in "[0-9]{0,12}",
            kw in prop::sample::select(vec![" EXISTS", " EXPUNGE", " expunge", "  EXISTS", " EXISTSX", ""]),
            end in prop::sample::select(vec!["\r\n", "", "\n", "\r", " \r\n"]),
        ) {
            let line = format!("* {digits}{kw}{end}");
            for (keyword, nz) in [(&b" EXISTS"[..], false), (&b" EXPUNGE"[..], true)] {
                let quick = quick_numbered(line.as_bytes(), keyword, nz);
                if let Some(n) = quick {
                    prop_assert_eq!(slow(line.as_bytes(), keyword, nz), Ok(n));
                }
                let public = if nz { parse_expunge(line.as_bytes()) } else { parse_exists(line.as_bytes()) };
                prop_assert_eq!(public.ok(), slow(line.as_bytes(), keyword, nz).ok());
            }
        }
    }
}
