//! The framer's command boundaries equal the reference machine's, for chosen and random input.

use super::*;

fn agree(stream: &[u8], cuts: &[usize]) {
    let (want, want_failed) = marks(stream);
    let (got, failed) = framer_marks(stream, cuts);
    assert_eq!(
        (&got, failed),
        (&want, want_failed),
        "{}",
        stream.escape_ascii()
    );
}

#[test]
fn agrees_on_the_smuggling_cases() {
    for stream in [
        &b"a SELECT \"{20+}\r\nc COMPRESS DEFLATE\r\n"[..],
        b"a SELECT x{22+}\r\nc STARTTLS\r\n",
        b"a SEARCH SUBJECT {3+}\r\nabc BODY \"{20+}\r\nc LOGOUT\r\n",
        b"a APPEND INBOX {3+}\r\nabc (\\Seen) ~{2+}\r\nxy\r\nb NOOP\r\n",
        b"a APPEND INBOX CATENATE (URL x TEXT {2+}\r\nab URL \"y\")\r\n",
        b"a APPEND INBOX foo {10+}\r\nxxxxxxxx\r\nc STARTTLS\r\n",
        b"a NOOP {12+}\r\nc STARTTLS\r\n",
        b"a CREATE {1+}\r\nx {12+}\r\nc STARTTLS\r\n",
        b"a FETCH 1 (BODY[] {1+}\r\nx)\r\nb UID FETCH 1 (BODY[HEADER.FIELDS (A)])\n",
        b"a SELECT {}\r\n\r\nb SELECT {003+}\r\nabc\r\n",
        b"a SELECT {99999999999999999999}\r\n",
        b"a NOOP\n\n a\n",
        b"a UID\r\nb UID EXPUNGE 1 {2+}\r\nxy\r\n",
    ] {
        agree(stream, &[]);
        agree(stream, &[stream.len() / 2]);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
    /// Streams made of command-like pieces, fed in random chunks.
    #[test]
    fn framer_boundaries_equal_the_reference(
        pieces in proptest::collection::vec(proptest::sample::select(vec![
            &b"a "[..], b"SELECT ", b"FETCH ", b"APPEND ", b"CREATE ", b"NOOP ", b"UID ",
            b"COPY ", b"STATUS ", b"XYZ ", b"CATENATE ", b"URL ", b"TEXT ", b"INBOX ",
            b"{", b"}", b"~", b"+", b"0", b"2", b"\"", b"\\", b"(", b")", b" ", b"\r", b"\n",
            b"\r\n", b"x", b"\xc3", b"\0", b"[", b"]", b"%", b"\\Seen",
        ]), 0..40),
        cuts in proptest::collection::vec(0usize..200, 0..5),
    ) {
        let stream: Vec<u8> = pieces.concat();
        let (want, want_failed) = marks(&stream);
        let (got, failed) = framer_marks(&stream, &cuts);
        proptest::prop_assert_eq!((got, failed), (want, want_failed), "{}", stream.escape_ascii());
    }
}

#[test]
fn reference_sees_literals() {
    let (m, failed) = marks(b"a SELECT {2+}\r\nxy\r\nb SELECT x{2+}\r\nxy\r\n");
    assert!(!failed);
    assert_eq!(
        m,
        [
            Mark::Line {
                start: 0,
                end: 15,
                first: true,
                valid: true
            },
            Mark::Literal { start: 15, len: 2 },
            Mark::Line {
                start: 17,
                end: 19,
                first: false,
                valid: true
            },
            Mark::Line {
                start: 19,
                end: 35,
                first: true,
                valid: false
            },
            Mark::Line {
                start: 35,
                end: 39,
                first: true,
                valid: false
            },
        ]
    );
}
