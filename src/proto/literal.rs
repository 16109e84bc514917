//! Literal announcements at the end of a line (`{n}`, `{n+}`, `~{n}`, `~{n+}`).
//!
//! ```text
//! literal  = "{" number64 ["+"] "}" CRLF *CHAR8      ; RFC 9051, "+" from RFC 7888
//! literal8 = "~{" number64 ["+"] "}" CRLF *OCTET     ; RFC 3516
//! number64 = 1*DIGIT                                  ; fits in 63 bits
//! ```
//!
//! Only the announcement is parsed here; the framer decides what to do with it.

/// A literal announced at the end of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Literal {
    /// Number of bytes that follow.
    pub len: u64,
    /// `{n}`: the client waits for the server's `+` before sending the bytes. False for `{n+}`.
    pub sync: bool,
    /// `~{n}`: a binary literal (RFC 3516), which may contain NUL.
    pub binary: bool,
}

/// The announcement's length does not fit in 63 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthOutOfRange;

/// Finds the literal announced at the end of `line` (which includes its line ending).
///
/// Returns `Ok(None)` for a line that does not end in a well-formed announcement (for example
/// `{abc}`), and `Err` for digits that do not fit `number64`. Read backwards from the line end
/// (`}`, an optional `+`, the digits, `{`, an optional `~`): it runs on every server line, and
/// most lines stop at the first byte.
///
/// The first test is inlined into the caller; the rest of the reading is out of line.
#[inline]
pub fn announced_literal(line: &[u8]) -> Result<Option<Literal>, LengthOutOfRange> {
    let body = match line {
        [body @ .., b'\r', b'\n'] | [body @ .., b'\n' | b'\r'] => body,
        _ => line,
    };
    match body {
        [body @ .., b'}'] => before_brace(body),
        _ => Ok(None),
    }
}

/// [`announced_literal`] for a line whose text ends in `}`: `body` is what precedes it. A
/// server's FETCH answers announce two or three literals per command, so this stays lean: the
/// digits are read and summed in one backward walk, without overflow checks while there are at
/// most 18 of them (always under 2^63); a longer run is parsed again, checked.
#[inline(never)]
fn before_brace(body: &[u8]) -> Result<Option<Literal>, LengthOutOfRange> {
    let (plus, body) = match body {
        [rest @ .., b'+'] => (true, rest),
        _ => (false, body),
    };
    let (mut len, mut scale, mut start) = (0u64, 1u64, body.len());
    while let Some(d) = start.checked_sub(1).and_then(|i| digit(body[i])) {
        if body.len() - start == SAFE_DIGITS {
            return long_announcement(body, start, plus);
        }
        len += d * scale;
        scale *= 10;
        start -= 1;
    }
    match body.get(..start) {
        Some([before @ .., b'{']) if start < body.len() => Ok(Some(Literal {
            len,
            sync: !plus,
            binary: before.last() == Some(&b'~'),
        })),
        _ => Ok(None),
    }
}

/// The value of an ASCII digit.
#[inline(always)]
fn digit(c: u8) -> Option<u64> {
    let d = c.wrapping_sub(b'0');
    (d < 10).then_some(u64::from(d))
}

/// [`before_brace`] for an announcement whose digits run past [`SAFE_DIGITS`] before `end`.
#[cold]
fn long_announcement(
    body: &[u8],
    end: usize,
    plus: bool,
) -> Result<Option<Literal>, LengthOutOfRange> {
    let start = body[..end]
        .iter()
        .rposition(|c| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let Some([before @ .., b'{']) = body.get(..start) else {
        return Ok(None);
    };
    let len = parse_number64(&body[start..]).ok_or(LengthOutOfRange)?;
    Ok(Some(Literal {
        len,
        sync: !plus,
        binary: before.last() == Some(&b'~'),
    }))
}

/// Decimal digits that cannot exceed `number64` however they read (10^18 - 1 < 2^63 - 1).
const SAFE_DIGITS: usize = 18;

/// `number64`: decimal digits that fit in 63 bits (RFC 9051 §9).
fn parse_number64(digits: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for &d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    (n <= i64::MAX as u64).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nom::{
        IResult, Parser,
        bytes::complete::tag,
        character::complete::{char, digit1},
        combinator::{eof, opt},
    };
    use proptest::prelude::*;

    fn lit(len: u64, sync: bool, binary: bool) -> Option<Literal> {
        Some(Literal { len, sync, binary })
    }

    /// The announcement parser as it was, with nom, from the last `{`: the reference the
    /// backward scan is held to.
    fn reference(line: &[u8]) -> Result<Option<Literal>, LengthOutOfRange> {
        fn announcement(input: &[u8]) -> IResult<&[u8], (bool, &[u8], bool)> {
            let (input, (tilde, _, digits, plus, _, _)) = (
                opt(char('~')),
                tag(&b"{"[..]),
                digit1,
                opt(char('+')),
                char('}'),
                eof,
            )
                .parse(input)?;
            Ok((input, (tilde.is_some(), digits, plus.is_some())))
        }
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.last() != Some(&b'}') {
            return Ok(None);
        }
        let Some(open) = body.iter().rposition(|&c| c == b'{') else {
            return Ok(None);
        };
        let start = if open > 0 && body[open - 1] == b'~' {
            open - 1
        } else {
            open
        };
        match announcement(&body[start..]) {
            Ok((_, (binary, digits, plus))) => {
                let len = parse_number64(digits).ok_or(LengthOutOfRange)?;
                Ok(Some(Literal {
                    len,
                    sync: !plus,
                    binary,
                }))
            }
            Err(_) => Ok(None),
        }
    }

    proptest! {
        #[test]
        fn backward_scan_equals_the_nom_parser(line in "[ a~{}+0-9\\r\\n]{0,30}") {
            prop_assert_eq!(announced_literal(line.as_bytes()), reference(line.as_bytes()));
        }

        #[test]
        fn backward_scan_equals_the_nom_parser_on_announcements(
            line in "(a|\\{|~|\\}| )*~?\\{0*[0-9]{0,21}\\+?\\}(\\r\\n|\\n)?"
        ) {
            prop_assert_eq!(announced_literal(line.as_bytes()), reference(line.as_bytes()));
        }

        #[test]
        fn backward_scan_equals_the_nom_parser_on_any_bytes(line in proptest::collection::vec(any::<u8>(), 0..12)) {
            prop_assert_eq!(announced_literal(&line), reference(&line));
        }
    }

    #[test]
    fn recognises_every_form() {
        assert_eq!(
            announced_literal(b"a APPEND x {5}\r\n"),
            Ok(lit(5, true, false))
        );
        assert_eq!(
            announced_literal(b"a APPEND x {5+}\r\n"),
            Ok(lit(5, false, false))
        );
        assert_eq!(
            announced_literal(b"a APPEND x ~{7}\r\n"),
            Ok(lit(7, true, true))
        );
        assert_eq!(
            announced_literal(b"a APPEND x ~{7+}\n"),
            Ok(lit(7, false, true))
        );
        assert_eq!(
            announced_literal(b"* 1 FETCH (BODY[] {0}\r\n"),
            Ok(lit(0, true, false))
        );
    }

    #[test]
    fn rejects_lookalikes() {
        assert_eq!(announced_literal(b"a SELECT \"{5}\"\r\n"), Ok(None));
        assert_eq!(announced_literal(b"a X {}\r\n"), Ok(None));
        assert_eq!(announced_literal(b"a X {5a}\r\n"), Ok(None));
        assert_eq!(announced_literal(b"a X {+}\r\n"), Ok(None));
        assert_eq!(announced_literal(b"a X {5++}\r\n"), Ok(None));
        assert_eq!(announced_literal(b"a X {-5}\r\n"), Ok(None));
        assert_eq!(announced_literal(b"a X 5}\r\n"), Ok(None));
        assert_eq!(announced_literal(b"\r\n"), Ok(None));
    }

    #[test]
    fn bounds_number64() {
        assert_eq!(
            announced_literal(b"a {9223372036854775807}\r\n"),
            Ok(lit(i64::MAX as u64, true, false))
        );
        assert_eq!(
            announced_literal(b"a {9223372036854775808}\r\n"),
            Err(LengthOutOfRange)
        );
        assert_eq!(
            announced_literal(b"a {99999999999999999999999}\r\n"),
            Err(LengthOutOfRange)
        );
    }
}
