//! The lexer's fast path: command arguments made of nothing but atoms, simple quoted strings,
//! spaces and balanced parentheses, the shape of most commands a client sends (`UID FETCH 1:9
//! (UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)])`, `LIST "" "*"`, `STATUS "Sent" (MESSAGES)`),
//! are accepted in one pass instead of token by token: atom bytes and spaces skipped 16 at a
//! time, parentheses and quotes looked at one by one.
//!
//! ```text
//! plain-args   = *(SP / atom / plain-quoted / "(" / ")")   ; with the rules below, then [CR] LF
//! plain-quoted = DQUOTE *(%x20-21 / %x23-5B / %x5D-7E) DQUOTE   ; no escape, no 8-bit
//! ```
//!
//! Such arguments announce no literal and tokenize without error in every mode but APPEND's
//! (whose message shape the token walk checks), as long as:
//! - no `(` or `"` directly follows an atom byte (Dovecot reads `a(` as an atom with a bad byte);
//! - a quoted string is followed by SP, `)` or the line's end;
//! - no `)` comes at depth 0, and every `(` is closed by the line's end.
//!
//! Anything else (a quoted string with an escape or an 8-bit byte, a `{`, a CR before the line
//! ending, a control or 8-bit byte) is left to the token walk, which also names the error of a
//! line that has one.

use super::PLAIN_ATOM;
use crate::proto::command::trim_eol;

/// Bytes a quoted string may hold on the fast path: printable ASCII and SP, but `"` (its end)
/// and `\` (an escape, left to the token walk).
const QUOTED: [bool; 256] = {
    let mut table = crate::proto::command::printable_except(b"\"\\\x7f");
    table[b' ' as usize] = true;
    table
};

/// Whether `args` (the rest of a command line after its name, with the line ending) are plain
/// arguments: they then announce no literal and tokenize in every mode but APPEND's. False
/// says nothing about the line: the token walk decides it.
///
/// Atom bytes and spaces are skipped 16 at a time ([`next_unordinary`]); only `(`, `)`, `"`
/// and bytes that end the fast path are looked at one by one. Whether such a byte follows an
/// atom is read from the byte before it: after SP, `(`, `)` or a closing quote it does not.
pub(super) fn plain_args(args: &[u8]) -> bool {
    let args = trim_eol(args);
    let mut depth: u32 = 0;
    let mut i = 0;
    while let Some(j) = next_unordinary(args, i) {
        let after_atom = j > 0 && PLAIN_ATOM[usize::from(args[j - 1])];
        i = j + 1;
        match args[j] {
            b'(' if !after_atom => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b'"' if !after_atom => match after_quoted(args, i) {
                Some(end) => i = end,
                None => return false,
            },
            _ => return false,
        }
    }
    depth == 0
}

/// A quoted string whose content starts at `args[i]`: where it ends (after the closing quote)
/// if it is simple ([`QUOTED`] bytes only) and followed by SP, `)` or the end.
fn after_quoted(args: &[u8], i: usize) -> Option<usize> {
    let close = i + args
        .get(i..)?
        .iter()
        .position(|&q| !QUOTED[usize::from(q)])?;
    (args[close] == b'"' && matches!(args.get(close + 1), None | Some(b' ' | b')')))
        .then_some(close + 1)
}

/// Bytes skipped without a look: atom bytes that need none ([`PLAIN_ATOM`]) and SP, i.e.
/// `%x20-7E` but `(`, `)`, `{` and `"`.
fn ordinary(c: u8) -> bool {
    c == b' ' || PLAIN_ATOM[usize::from(c)]
}

/// The position of the first byte at or after `from` that is not [`ordinary`].
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn next_unordinary(s: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(block) = s.get(at..).and_then(|r| r.first_chunk::<16>()) {
        let bits = unordinary_mask(block);
        if bits != 0 {
            return Some(at + bits.trailing_zeros() as usize);
        }
        at += 16;
    }
    if at >= s.len() {
        return None;
    }
    match s.last_chunk::<16>() {
        // The last 16 bytes, with those before `at` (already looked at) masked off.
        Some(block) => {
            let base = s.len() - 16;
            let bits = unordinary_mask(block) >> (at - base);
            (bits != 0).then(|| at + bits.trailing_zeros() as usize)
        }
        None => s[at..].iter().position(|&c| !ordinary(c)).map(|i| at + i),
    }
}

/// Bit `i` set when `block[i]` is not [`ordinary`]: SSE2 compares (part of every x86-64).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn unordinary_mask(block: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_andnot_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is enabled for this build (the cfg above); `block` is 16 readable bytes and
    // the unaligned load has no alignment requirement.
    let ordinary = unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        let eq = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
        // Signed: %x20-7F are above %x1F, %x80-FF are negative.
        let printable = _mm_cmpgt_epi8(v, _mm_set1_epi8(0x1f));
        let refused = _mm_or_si128(
            _mm_or_si128(eq(b'('), eq(b')')),
            _mm_or_si128(_mm_or_si128(eq(b'{'), eq(b'"')), eq(0x7f)),
        );
        _mm_movemask_epi8(_mm_andnot_si128(refused, printable)) as u32
    };
    !ordinary & 0xffff
}

/// The position of the first byte at or after `from` that is not [`ordinary`].
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn next_unordinary(s: &[u8], from: usize) -> Option<usize> {
    s.get(from..)?
        .iter()
        .position(|&c| !ordinary(c))
        .map(|i| from + i)
}

#[cfg(test)]
mod tests {
    use super::super::{Dialect, LineStart, scan_tokens};
    use super::*;

    /// The token walk alone (no fast path) on a command line after login.
    fn walked(line: &[u8]) -> Result<Option<super::super::Literal>, super::super::SyntaxError> {
        scan_tokens(line, LineStart::Command(Dialect::Imap), |_| {}).map(|s| s.literal)
    }

    #[test]
    fn plain_shapes() {
        for args in [
            &b"1:9 (UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)])\r\n"[..],
            b"\r\n",
            b"  INBOX  \n",
            b"1 FLAGS ()\r\n",
            b"1 +FLAGS.SILENT (\\Seen \\Deleted)\r\n",
            b"(a)(b) c\r\n",
            b"BODY[]<0.10> ~x %*\r\n",
            b"\"\" \"*\"\r\n",
            b"\"Sent Items\" (MESSAGES UNSEEN)\r\n",
            b"(\"a\" \"b\")\r\n",
        ] {
            assert!(plain_args(args), "{}", args.escape_ascii());
        }
        for args in [
            &b"x{5}\r\n"[..],
            b"a(b)\r\n",
            b"(a\r\n",
            b"a)\r\n",
            b"(a))\r\n",
            b"\"x\\\"y\"\r\n",
            b"\"caf\xc3\xa9\"\r\n",
            b"\"x\"y\r\n",
            b"\"x\"(y)\r\n",
            b"a\"x\"\r\n",
            b"\"x\r\n",
            b"a\rb\r\n",
            b"a\r\r\n",
            b"caf\xc3\xa9\r\n",
            b"a\x7f\r\n",
            b"a\tb\r\n",
        ] {
            assert!(!plain_args(args), "{}", args.escape_ascii());
        }
    }

    /// The fast path as it was first written, a byte-class table walked byte by byte (quoted
    /// strings read alike): the reference the 16-byte skipping is held to.
    fn byte_by_byte(args: &[u8]) -> bool {
        let args = trim_eol(args);
        let (mut depth, mut after_atom, mut i) = (0u32, false, 0);
        while let Some(&c) = args.get(i) {
            i += 1;
            match c {
                _ if PLAIN_ATOM[usize::from(c)] => after_atom = true,
                b' ' => after_atom = false,
                b'(' if !after_atom => depth += 1,
                b')' if depth > 0 => {
                    depth -= 1;
                    after_atom = false;
                }
                b'"' if !after_atom => match after_quoted(args, i) {
                    Some(end) => i = end,
                    None => return false,
                },
                _ => return false,
            }
        }
        depth == 0
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// The 16-byte skipping decides as the byte-by-byte walk, for arguments of every length
        /// around the block size, with the odd byte anywhere.
        #[test]
        fn skipping_decides_as_byte_by_byte(
            args in proptest::collection::vec(proptest::sample::select(
                b"    aaaaaaaaaaaa(((()))\"\"[".to_vec()), 0..70),
            odd in proptest::sample::select(b"{}\\\r\x01\x7f\x80\xff~ ".to_vec()),
            at in 0usize..80,
            ending in proptest::sample::select(vec![&b"\r\n"[..], b"\n", b""]),
        ) {
            let mut line = args.clone();
            line.insert(at.min(line.len()), odd);
            line.extend_from_slice(ending);
            proptest::prop_assert_eq!(plain_args(&line), byte_by_byte(&line));
        }

        /// Whatever the fast path accepts, the token walk accepts too, with no literal, for
        /// every command mode (FETCH reads all its arguments, COPY two, NOOP none).
        #[test]
        fn accepted_means_the_walk_accepts(
            name in proptest::sample::select(vec!["FETCH", "UID FETCH", "COPY", "UID COPY",
                "NOOP", "CREATE", "UID EXPUNGE", "X-UNKNOWN", "STATUS"]),
            args in proptest::collection::vec(proptest::sample::select(
                b" ()a[]\\{}\"~\r\x01\x80*".to_vec()), 0..24),
            crlf in proptest::prelude::any::<bool>(),
        ) {
            let mut line = format!("t1 {name} ").into_bytes();
            line.extend_from_slice(&args);
            line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            let rest = &line[format!("t1 {name} ").len()..];
            if plain_args(rest) {
                proptest::prop_assert_eq!(walked(&line), Ok(None));
            }
        }
    }
}
