//! Framer tests: fixed cases, and every input split at every byte frames the same.

use super::*;
use crate::proto::replay::{Event, replay};

fn line(s: &[u8], first: bool) -> Event {
    Event::Line {
        bytes: s.to_vec(),
        first,
        valid: true,
    }
}

/// A line that does not tokenize (it ends its message).
fn bad(s: &[u8], first: bool) -> Event {
    Event::Line {
        bytes: s.to_vec(),
        first,
        valid: false,
    }
}

fn lit(s: &[u8]) -> Event {
    Event::Literal(s.to_vec())
}

/// A framer for `dir`; client framers read commands as the `imap` process does (after login).
fn framer(dir: Direction, limits: Limits) -> Framer {
    let mut f = Framer::new(dir, limits);
    f.set_dialect(Dialect::Imap);
    f
}

fn small() -> Limits {
    Limits {
        max_line: 64,
        max_literal: 100,
    }
}

/// Frames `input` whole, then split in two at every position, then in three; all must agree.
fn same_at_every_split(dir: Direction, limits: Limits, input: &[u8], accept: bool) -> Vec<Event> {
    let (whole, err) = replay(&mut framer(dir, limits), &[input], accept);
    for i in 0..=input.len() {
        let (a, b) = input.split_at(i);
        let (split, e2) = replay(&mut framer(dir, limits), &[a, b], accept);
        assert_eq!(split, whole, "split at {i}");
        assert_eq!(e2, err, "split at {i}");
    }
    for i in 0..=input.len() {
        // Every pair of positions for short inputs, nearby pairs for longer ones.
        let reach = if input.len() <= 80 {
            input.len()
        } else {
            i + 7
        };
        for j in i..=input.len().min(reach) {
            let (a, rest) = input.split_at(i);
            let (b, c) = rest.split_at(j - i);
            let (split, _) = replay(&mut framer(dir, limits), &[a, b, c], accept);
            assert_eq!(split, whole, "split at {i},{j}");
        }
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let (byte_by_byte, _) = replay(&mut framer(dir, limits), &bytes, accept);
    assert_eq!(byte_by_byte, whole, "byte by byte");
    whole
}

#[test]
fn commands_with_every_literal_form() {
    // Before login every command's line is read whole (LOGIN is imap-login's).
    let input = b"a1 LOGIN {5}\r\nalice {6+}\r\nsecret\r\n";
    let mut f = Framer::new(Direction::ClientToServer, Limits::default());
    let (events, _) = replay(&mut f, &[input], true);
    assert_eq!(
        events,
        vec![
            line(b"a1 LOGIN {5}\r\n", true),
            Event::Literal(b"alice".to_vec()),
            line(b" {6+}\r\n", false),
            Event::Literal(b"secret".to_vec()),
            line(b"\r\n", false),
        ]
    );
    let input = b"a2 APPEND INBOX ~{3}\r\n\0\x01\x02\r\na3 NOOP\n";
    let events = same_at_every_split(Direction::ClientToServer, Limits::default(), input, true);
    assert_eq!(
        events,
        vec![
            line(b"a2 APPEND INBOX ~{3}\r\n", true),
            Event::Literal(b"\0\x01\x02".to_vec()),
            line(b"\r\n", false),
            line(b"a3 NOOP\n", true),
        ]
    );
}

#[test]
fn literal_data_is_never_read_as_a_command() {
    // The literal holds what looks like a command line and a literal announcement.
    let input = b"a APPEND INBOX {23+}\r\nb LOGOUT\r\nc X {99999}\r\n\r\nd NOOP\r\n";
    let events = same_at_every_split(Direction::ClientToServer, Limits::default(), input, true);
    assert_eq!(
        events,
        vec![
            line(b"a APPEND INBOX {23+}\r\n", true),
            Event::Literal(b"b LOGOUT\r\nc X {99999}\r\n".to_vec()),
            line(b"\r\n", false),
            line(b"d NOOP\r\n", true),
        ]
    );
}

#[test]
fn refused_sync_literal_resumes_with_a_new_command() {
    let input = b"a APPEND INBOX {5}\r\nb NOOP\r\n";
    let events = same_at_every_split(Direction::ClientToServer, Limits::default(), input, false);
    assert_eq!(
        events,
        vec![
            line(b"a APPEND INBOX {5}\r\n", true),
            line(b"b NOOP\r\n", true)
        ]
    );
}

#[test]
fn server_literals_follow_at_once() {
    let input = b"* 1 FETCH (BODY[] {5}\r\nhello)\r\n+ go on\r\na OK done\r\n";
    let events = same_at_every_split(Direction::ServerToClient, Limits::default(), input, false);
    assert_eq!(
        events,
        vec![
            line(b"* 1 FETCH (BODY[] {5}\r\n", true),
            Event::Literal(b"hello".to_vec()),
            line(b")\r\n", false),
            line(b"+ go on\r\n", true),
            line(b"a OK done\r\n", true),
        ]
    );
}

#[test]
fn overlong_client_line_is_discarded_whole() {
    let long = [b'x'; 70];
    let mut input = b"a1 NOOP\r\na2 SEARCH ".to_vec();
    input.extend_from_slice(&long);
    input.extend_from_slice(b"\r\na3 NOOP\r\n");
    let events = same_at_every_split(Direction::ClientToServer, small(), &input, true);
    assert_eq!(
        events,
        vec![
            line(b"a1 NOOP\r\n", true),
            Event::Discarded { first: true },
            line(b"a3 NOOP\r\n", true),
        ]
    );
}

#[test]
fn overlong_line_with_nonsync_literal_skips_the_literal_too() {
    let mut input = b"a APPEND INBOX ".to_vec();
    input.extend_from_slice(&[b'f'; 70]);
    input.extend_from_slice(b" {12+}\r\nb NOOP\r\nxxxx\r\nc NOOP\r\n");
    let events = same_at_every_split(Direction::ClientToServer, small(), &input, true);
    assert_eq!(
        events,
        vec![Event::Discarded { first: true }, line(b"c NOOP\r\n", true)]
    );
}

#[test]
fn overlong_line_with_sync_literal_ends_the_discard() {
    let mut input = b"a APPEND INBOX ".to_vec();
    input.extend_from_slice(&[b'f'; 70]);
    input.extend_from_slice(b" {12}\r\nb NOOP\r\n");
    let events = same_at_every_split(Direction::ClientToServer, small(), &input, true);
    assert_eq!(
        events,
        vec![Event::Discarded { first: true }, line(b"b NOOP\r\n", true)]
    );
}

#[test]
fn long_server_lines_stream_in_parts() {
    let mut input = b"* SEARCH".to_vec();
    for i in 0..50 {
        input.extend_from_slice(format!(" {i}").as_bytes());
    }
    input.extend_from_slice(b" {3}\r\nabc)\r\na OK\r\n");
    let events = same_at_every_split(Direction::ServerToClient, small(), &input, false);
    assert_eq!(events.len(), 4);
    let announced = input.len() - b"abc)\r\na OK\r\n".len();
    assert_eq!(events[0], line(&input[..announced], true));
    assert_eq!(events[1], Event::Literal(b"abc".to_vec()));
}

#[test]
fn streamed_parts_mark_start_and_end() {
    let mut f = Framer::new(Direction::ServerToClient, small());
    let input = [b'y'; 100];
    let Ok(Some((Frame::Line(l), n))) = f.next(&input) else {
        panic!("expected a part");
    };
    assert!(l.start && !l.complete && l.first);
    assert_eq!(n, 100 - TAIL);
    assert!(n > 0);
    let rest = [&input[n..], b"\r\n"].concat();
    let Ok(Some((Frame::Line(l), _))) = f.next(&rest) else {
        panic!("expected the end");
    };
    assert!(!l.start && l.complete);
    assert!(f.at_message_boundary());
}

#[test]
fn oversized_literals() {
    let input = b"a APPEND INBOX {101}\r\nb NOOP\r\n";
    let events = same_at_every_split(Direction::ClientToServer, small(), input, true);
    assert_eq!(
        events,
        vec![
            Event::LiteralTooLarge(b"a APPEND INBOX {101}\r\n".to_vec()),
            line(b"b NOOP\r\n", true)
        ]
    );
    let mut f = Framer::new(Direction::ClientToServer, small());
    let (events, err) = replay(&mut f, &[b"a APPEND INBOX {101+}\r\nxx"], true);
    assert_eq!(events.len(), 1);
    assert_eq!(err, Some(FrameError::Failed));
    let (_, err) = replay(
        &mut framer(Direction::ClientToServer, small()),
        &[b"a SELECT {99999999999999999999}\r\n"],
        true,
    );
    assert_eq!(err, Some(FrameError::LiteralLength));
}

#[test]
fn awaiting_continuation_consumes_nothing() {
    let mut f = Framer::new(Direction::ClientToServer, Limits::default());
    let input = b"a APPEND INBOX {3}\r\nabc\r\n";
    let Ok(Some((Frame::Line(_), n))) = f.next(input) else {
        panic!()
    };
    assert!(f.awaiting_continuation());
    assert_eq!(f.next(&input[n..]), Ok(None));
    f.literal_accepted();
    assert!(matches!(
        f.next(&input[n..]),
        Ok(Some((Frame::Literal { .. }, 3)))
    ));
    assert!(!f.at_message_boundary());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    /// Random input in random chunks frames like the same input whole, and never panics.
    #[test]
    fn random_input_frames_the_same_in_chunks(
        input in proptest::collection::vec(proptest::prop_oneof![
            proptest::prelude::any::<u8>(),
            proptest::sample::select(b"\r\n{}+~ 0123".to_vec()),
        ], 0..300),
        cuts in proptest::collection::vec(0usize..300, 0..6),
        client in proptest::prelude::any::<bool>(),
        accept in proptest::prelude::any::<bool>(),
    ) {
        let dir = if client { Direction::ClientToServer } else { Direction::ServerToClient };
        let (whole, err) = replay(&mut framer(dir, small()), &[&input], accept);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        cuts.sort();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in cuts { chunks.push(&input[prev..c]); prev = c; }
        chunks.push(&input[prev..]);
        let (split, err2) = replay(&mut framer(dir, small()), &chunks, accept);
        proptest::prop_assert_eq!(split, whole);
        proptest::prop_assert_eq!(err2, err);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
    /// The first-letter test turns away only lines that splitting the words would turn away:
    /// status lines and continuation requests are recognised as by the words alone.
    #[test]
    fn resp_text_lines_as_the_reference(
        tag in proptest::sample::select(vec!["*", "a1", "+", "", "3", "+x"]),
        sep in proptest::sample::select(vec![" ", "", "  "]),
        word in proptest::sample::select(vec![
            "OK", "ok", "No", "nO", "BAD", "bad", "bye", "BYE", "PREAUTH", "preauth", "3",
            "FETCH", "", "O", "P", "Bx", "b", "n",
        ]),
        rest in proptest::sample::select(vec!["", " ", " x", "\r\n", "\n", " {5}\r\n", "\r"]),
    ) {
        let line = format!("{tag}{sep}{word}{rest}");
        let line = line.as_bytes();
        let by_words = line.first() == Some(&b'+') || status_line(line);
        proptest::prop_assert_eq!(resp_text_line(line), by_words);
    }
}

/// Client streams whose boundaries a literal lookalike must not move: each row is the input and
/// the exact events (after login, every synchronizing literal accepted).
#[test]
fn smuggling_table() {
    let table: &[(&[u8], Vec<Event>)] = &[
        // An unterminated quoted string: Dovecot answers BAD and reads the next line as a command.
        (
            b"a SELECT \"{20+}\r\nc COMPRESS DEFLATE\r\n",
            vec![
                bad(b"a SELECT \"{20+}\r\n", true),
                line(b"c COMPRESS DEFLATE\r\n", true),
            ],
        ),
        // `{` is not an atom byte.
        (
            b"a SELECT x{22+}\r\nc STARTTLS\r\n",
            vec![
                bad(b"a SELECT x{22+}\r\n", true),
                line(b"c STARTTLS\r\n", true),
            ],
        ),
        (
            b"a FETCH 1 BODY[]{9+}\r\nc LOGOUT\r\n",
            vec![
                bad(b"a FETCH 1 BODY[]{9+}\r\n", true),
                line(b"c LOGOUT\r\n", true),
            ],
        ),
        // A quoted string with an escaped quote still open at the end of the line.
        (
            b"a SELECT \"\\\"{5+}\r\nhello\r\n",
            vec![
                bad(b"a SELECT \"\\\"{5+}\r\n", true),
                bad(b"hello\r\n", true),
            ],
        ),
        // A CR inside a quoted string ends it with an error, not the line.
        (
            b"a SELECT \"x\r{3+}\r\nabc\r\n",
            vec![bad(b"a SELECT \"x\r{3+}\r\n", true), bad(b"abc\r\n", true)],
        ),
        // The lookalike is in a continuation line, after a real literal.
        (
            b"a SEARCH SUBJECT {3+}\r\nabc BODY \"{20+}\r\nc LOGOUT\r\n",
            vec![
                line(b"a SEARCH SUBJECT {3+}\r\n", true),
                lit(b"abc"),
                bad(b" BODY \"{20+}\r\n", false),
                line(b"c LOGOUT\r\n", true),
            ],
        ),
        // literal8 is APPEND's only.
        (
            b"a SELECT ~{12+}\r\nc STARTTLS\r\n",
            vec![
                bad(b"a SELECT ~{12+}\r\n", true),
                line(b"c STARTTLS\r\n", true),
            ],
        ),
        (
            b"a APPEND INBOX {3+}\r\nabc (\\Seen) ~{2+}\r\nxy\r\nb NOOP\r\n",
            vec![
                line(b"a APPEND INBOX {3+}\r\n", true),
                lit(b"abc"),
                line(b" (\\Seen) ~{2+}\r\n", false),
                lit(b"xy"),
                line(b"\r\n", false),
                line(b"b NOOP\r\n", true),
            ],
        ),
        // APPEND arguments Dovecot does not read as a message.
        (
            b"a APPEND INBOX foo {10+}\r\nxxxxxxxx\r\nc STARTTLS\r\n",
            vec![
                bad(b"a APPEND INBOX foo {10+}\r\n", true),
                bad(b"xxxxxxxx\r\n", true),
                line(b"c STARTTLS\r\n", true),
            ],
        ),
        // Bare LF line endings.
        (
            b"a SELECT {3+}\nabc\nb NOOP\n",
            vec![
                line(b"a SELECT {3+}\n", true),
                lit(b"abc"),
                line(b"\n", false),
                line(b"b NOOP\n", true),
            ],
        ),
        // Where the server reads no (more) arguments, `{n+}` is not a literal.
        (
            b"a NOOP {12+}\r\nc STARTTLS\r\n",
            vec![
                line(b"a NOOP {12+}\r\n", true),
                line(b"c STARTTLS\r\n", true),
            ],
        ),
        (
            b"a XYZZY {12+}\r\nc STARTTLS\r\n",
            vec![
                line(b"a XYZZY {12+}\r\n", true),
                line(b"c STARTTLS\r\n", true),
            ],
        ),
        (
            b"a CREATE foo {12+}\r\nc STARTTLS\r\n",
            vec![
                line(b"a CREATE foo {12+}\r\n", true),
                line(b"c STARTTLS\r\n", true),
            ],
        ),
        (
            b"a CREATE {1+}\r\nx {12+}\r\nc STARTTLS\r\n",
            vec![
                line(b"a CREATE {1+}\r\n", true),
                lit(b"x"),
                line(b" {12+}\r\n", false),
                line(b"c STARTTLS\r\n", true),
            ],
        ),
        // Malformed announcements.
        (
            b"a SELECT {5++}\r\nhello\r\n",
            vec![bad(b"a SELECT {5++}\r\n", true), bad(b"hello\r\n", true)],
        ),
        (
            b"a SELECT {5}x\r\nhello\r\n",
            vec![bad(b"a SELECT {5}x\r\n", true), bad(b"hello\r\n", true)],
        ),
        // Dovecot's zero-length `{}` and zero-padded lengths.
        (
            b"a SELECT {}\r\n\r\nb SELECT {003+}\r\nabc\r\n",
            vec![
                line(b"a SELECT {}\r\n", true),
                line(b"\r\n", false),
                line(b"b SELECT {003+}\r\n", true),
                lit(b"abc"),
                line(b"\r\n", false),
            ],
        ),
        // A list left open across a literal must be closed on a later line.
        (
            b"a FETCH 1 (BODY[] {1+}\r\nx\r\nb NOOP\r\n",
            vec![
                line(b"a FETCH 1 (BODY[] {1+}\r\n", true),
                lit(b"x"),
                bad(b"\r\n", false),
                line(b"b NOOP\r\n", true),
            ],
        ),
    ];
    for (input, expected) in table {
        let events = same_at_every_split(Direction::ClientToServer, Limits::default(), input, true);
        assert_eq!(&events, expected, "{}", input.escape_ascii());
    }
}

#[test]
fn server_status_lines_announce_no_literal() {
    let input = b"a NO Mailbox doesn't exist: x{5}\r\n* BYE {3}\r\n+ {4}\r\n* OK [ALERT] {2}\r\n\
        * 1 FETCH (BODY[] {2}\r\nab)\r\nb OK\r\n";
    let events = same_at_every_split(Direction::ServerToClient, small(), input, false);
    assert_eq!(
        events,
        vec![
            line(b"a NO Mailbox doesn't exist: x{5}\r\n", true),
            line(b"* BYE {3}\r\n", true),
            line(b"+ {4}\r\n", true),
            line(b"* OK [ALERT] {2}\r\n", true),
            line(b"* 1 FETCH (BODY[] {2}\r\n", true),
            lit(b"ab"),
            line(b")\r\n", false),
            line(b"b OK\r\n", true),
        ]
    );
    // A long status line streamed in parts is judged by its start.
    let mut input = b"a NO [CANNOT] ".to_vec();
    input.extend_from_slice(&[b'x'; 100]);
    input.extend_from_slice(b" {5}\r\nb OK\r\n");
    let events = same_at_every_split(Direction::ServerToClient, small(), &input, false);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1], line(b"b OK\r\n", true));
}
