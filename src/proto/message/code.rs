//! Response codes of status responses, tagged or untagged, which carry most of what a SELECT or
//! EXAMINE reports besides `* n EXISTS` and `* FLAGS`.
//!
//! ```text
//! resp-cond-state = ("OK" / "NO" / "BAD") SP resp-text        ; RFC 9051 §9
//! resp-text      = ["[" resp-text-code "]" SP] [text]
//! resp-text-code = "ALERT" / "PARSE" / "READ-ONLY" / "READ-WRITE" / "TRYCREATE" /
//!                  "UIDNEXT" SP nz-number / "UIDVALIDITY" SP nz-number /
//!                  "PERMANENTFLAGS" SP "(" [flag-perm *(SP flag-perm)] ")" /
//!                  capability-data / "CLOSED" / "UNSEEN" SP nz-number /
//!                  "APPENDUID" SP append-uid / "COPYUID" SP copy-uid /
//!                  atom [SP 1*<any TEXT-CHAR except "]">]
//! resp-text-code =/ "HIGHESTMODSEQ" SP mod-sequence-value / "NOMODSEQ"   ; RFC 7162
//! ```
//!
//! Liberal: the SP after `]` may be missing (`* OK [READ-WRITE]`), and a known code whose
//! argument does not parse is returned as [`RespCode::Other`] rather than rejected.

use nom::{Parser, bytes::complete::take_while1, combinator::all_consuming};

use super::cursor::{Words, number64, nz_number, trim_eol, word_list, words};
use super::kind::Cond;
use crate::proto::command::{is_atom_char, is_tag_char};

/// A response code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespCode<'a> {
    /// `ALERT`
    Alert,
    /// `PARSE`
    Parse,
    /// `READ-ONLY`
    ReadOnly,
    /// `READ-WRITE`
    ReadWrite,
    /// `TRYCREATE`
    TryCreate,
    /// `CLOSED` (RFC 7162)
    Closed,
    /// `NOMODSEQ` (RFC 7162)
    NoModSeq,
    /// `UIDVALIDITY n`
    UidValidity(u32),
    /// `UIDNEXT n`
    UidNext(u32),
    /// `UNSEEN n`
    Unseen(u32),
    /// `HIGHESTMODSEQ n` (RFC 7162)
    HighestModSeq(u64),
    /// `PERMANENTFLAGS (...)`
    PermanentFlags(Words<'a>),
    /// `CAPABILITY ...`
    Capability(Words<'a>),
    /// `APPENDUID uidvalidity uid-set`, raw (RFC 4315).
    AppendUid(&'a [u8]),
    /// `COPYUID uidvalidity source-set dest-set`, raw (RFC 4315).
    CopyUid(&'a [u8]),
    /// Any other code, or a known one whose argument did not parse.
    Other {
        /// The code's atom as sent.
        name: &'a [u8],
        /// The text after it, up to `]`.
        text: Option<&'a [u8]>,
    },
}

/// Splits a status line into its condition and the text after it (`[CODE] text`).
fn status_text(line: &[u8]) -> Option<(Cond, &[u8])> {
    let body = trim_eol(line);
    let after_tag = match body.strip_prefix(b"* ") {
        Some(rest) => rest,
        None => {
            let end = body.iter().position(|&c| !is_tag_char(c))?;
            if end == 0 {
                return None;
            }
            body.get(end..)?.strip_prefix(b" ")?
        }
    };
    let end = after_tag
        .iter()
        .position(|&c| c == b' ')
        .unwrap_or(after_tag.len());
    let cond = Cond::from_word(after_tag.get(..end)?)?;
    Some((cond, after_tag.get(end + 1..).unwrap_or_default()))
}

/// The response code of a status line (`tag OK [..] ..` or `* OK|NO|BAD|BYE|PREAUTH [..] ..`),
/// `None` when the line is no status response or has no (well-formed) code.
pub fn resp_code(line: &[u8]) -> Option<RespCode<'_>> {
    let (_, text) = status_text(line)?;
    let code = text.strip_prefix(b"[")?;
    let name_len = code.iter().position(|&c| !is_atom_char(c))?;
    let (name, after) = code.split_at_checked(name_len)?;
    if name.is_empty() {
        return None;
    }
    let arg = match after.first()? {
        b']' => None,
        b' ' => {
            let arg = after.get(1..)?;
            let close = arg.iter().position(|&c| c == b']')?;
            let arg = arg.get(..close)?;
            if arg.is_empty() || arg.iter().any(|&c| c == b'\r' || c == b'\n') {
                return None;
            }
            Some(arg)
        }
        _ => return None,
    };
    Some(typed(name, arg).unwrap_or(RespCode::Other { name, text: arg }))
}

/// The typed form of a known code, `None` for unknown codes and malformed arguments.
fn typed<'a>(name: &'a [u8], arg: Option<&'a [u8]>) -> Option<RespCode<'a>> {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    let Some(arg) = arg else {
        const BARE: [(&[u8], RespCode<'static>); 7] = [
            (b"ALERT", RespCode::Alert),
            (b"PARSE", RespCode::Parse),
            (b"READ-ONLY", RespCode::ReadOnly),
            (b"READ-WRITE", RespCode::ReadWrite),
            (b"TRYCREATE", RespCode::TryCreate),
            (b"CLOSED", RespCode::Closed),
            (b"NOMODSEQ", RespCode::NoModSeq),
        ];
        return BARE.iter().find(|(n, _)| is(n)).map(|(_, c)| c.clone());
    };
    let nz = || all_consuming(nz_number).parse(arg).ok().map(|(_, n)| n);
    if is(b"UIDVALIDITY") {
        nz().map(RespCode::UidValidity)
    } else if is(b"UIDNEXT") {
        nz().map(RespCode::UidNext)
    } else if is(b"UNSEEN") {
        nz().map(RespCode::Unseen)
    } else if is(b"HIGHESTMODSEQ") {
        let n = all_consuming(number64).parse(arg).ok()?.1;
        Some(RespCode::HighestModSeq(n))
    } else if is(b"PERMANENTFLAGS") {
        let flags = all_consuming(word_list).parse(arg).ok()?.1;
        Some(RespCode::PermanentFlags(flags))
    } else if is(b"CAPABILITY") {
        let caps = all_consuming(words).parse(arg).ok()?.1;
        Some(RespCode::Capability(caps))
    } else if is(b"APPENDUID") {
        uid_code(arg).then_some(RespCode::AppendUid(arg))
    } else if is(b"COPYUID") {
        uid_code(arg).then_some(RespCode::CopyUid(arg))
    } else {
        None
    }
}

/// Whether `arg` is shaped like the arguments of APPENDUID/COPYUID (digits, `:`, `,`, spaces).
fn uid_code(arg: &[u8]) -> bool {
    let set = |c: u8| c.is_ascii_digit() || c == b':' || c == b',' || c == b' ';
    take_while1::<_, _, nom::error::Error<&[u8]>>(set)
        .parse(arg)
        .is_ok_and(|(rest, _)| rest.is_empty())
}
