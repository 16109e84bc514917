//! Encoders for the few strings the proxy writes itself (upstream LOGIN, ID).
//!
//! ```text
//! quoted  = DQUOTE *QUOTED-CHAR DQUOTE
//! literal = "{" number64 ["+"] "}" CRLF *CHAR8
//! ```

/// How a string has to go on the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Encoded {
    /// As a quoted string (escapes applied); ready to write.
    Quoted(Vec<u8>),
    /// Only as a literal (it holds CR, LF, NUL or non-ASCII bytes).
    Literal,
}

/// Whether `s` can go as a quoted string (no CR, LF, NUL or 8-bit bytes).
pub fn quotable(s: &[u8]) -> bool {
    !s.iter()
        .any(|&c| c == b'\r' || c == b'\n' || c == 0 || c >= 0x80)
}

/// Encodes `s` as a quoted string when IMAP allows it.
pub fn quoted(s: &[u8]) -> Encoded {
    if !quotable(s) {
        return Encoded::Literal;
    }
    let mut out = Vec::with_capacity(s.len() + 2);
    push_quoted(&mut out, s);
    Encoded::Quoted(out)
}

fn push_quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s {
        if c == b'"' || c == b'\\' {
            out.push(b'\\');
        }
        out.push(c);
    }
    out.push(b'"');
}

/// Appends `s` to `out` as a quoted string, or as a non-synchronizing literal (RFC 7888) when it
/// cannot be quoted; the caller uses this only when the server announced `LITERAL+`/`LITERAL-`.
/// Writes into `out` only (no temporary copy), so a password goes nowhere `out` does not.
pub fn push_string(out: &mut Vec<u8>, s: &[u8]) {
    if quotable(s) {
        push_quoted(out, s);
    } else {
        out.extend_from_slice(format!("{{{}+}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s);
    }
}

/// The most bytes [`push_string`] appends for `s` (every byte escaped, or a literal header).
pub fn max_string_len(s: &[u8]) -> usize {
    2 * s.len() + 24
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(
            quoted(b"a\"b\\c"),
            Encoded::Quoted(b"\"a\\\"b\\\\c\"".to_vec())
        );
        assert_eq!(quoted("ü".as_bytes()), Encoded::Literal);
        let mut out = Vec::new();
        push_string(&mut out, b"x\ny");
        assert_eq!(out, b"{3+}\r\nx\ny".to_vec());
        // The bound the upstream login sizes its (wiped) buffer with.
        for s in [&b"\"\\\"\\"[..], b"", b"\n", &[0xff; 300]] {
            let mut out = Vec::new();
            push_string(&mut out, s);
            assert!(out.len() <= max_string_len(s), "{s:?}");
            assert_eq!(quotable(s), matches!(quoted(s), Encoded::Quoted(_)));
        }
    }
}
