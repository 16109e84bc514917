//! The lexer's fast path: command arguments made of nothing but atoms, simple quoted strings,
//! spaces and balanced parentheses, the shape of most commands a client sends (`UID FETCH 1:9
//! (UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)])`, `LIST "" "*"`, `STATUS "Sent" (MESSAGES)`),
//! are accepted in one pass over a byte-class table instead of token by token.
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

/// A byte's class in plain arguments.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// An atom byte that needs no further look.
    Atom,
    /// SP, between arguments.
    Space,
    /// `(`
    Open,
    /// `)`
    Close,
    /// `"`: a quoted string starts.
    Quote,
    /// Anything the fast path does not judge.
    Other,
}

/// [`Class`] by byte.
const CLASSES: [Class; 256] = {
    let mut table = [Class::Other; 256];
    let mut c = 0;
    while c < 256 {
        if PLAIN_ATOM[c] {
            table[c] = Class::Atom;
        }
        c += 1;
    }
    table[b' ' as usize] = Class::Space;
    table[b'(' as usize] = Class::Open;
    table[b')' as usize] = Class::Close;
    table[b'"' as usize] = Class::Quote;
    table
};

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
pub(super) fn plain_args(args: &[u8]) -> bool {
    let args = trim_eol(args);
    let mut depth: u32 = 0;
    let mut after_atom = false;
    let mut i = 0;
    while let Some(&c) = args.get(i) {
        i += 1;
        match CLASSES[usize::from(c)] {
            Class::Atom => after_atom = true,
            Class::Space => after_atom = false,
            Class::Open if !after_atom => depth += 1,
            Class::Close if depth > 0 => {
                depth -= 1;
                after_atom = false;
            }
            Class::Quote if !after_atom => {
                let Some(len) = args[i..].iter().position(|&q| !QUOTED[usize::from(q)]) else {
                    return false;
                };
                i += len;
                // The closing quote, then SP, `)` or the end.
                if args.get(i) != Some(&b'"')
                    || !matches!(args.get(i + 1), None | Some(b' ' | b')'))
                {
                    return false;
                }
                i += 1;
            }
            _ => return false,
        }
    }
    depth == 0
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

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
