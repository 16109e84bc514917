//! Framer tests: fixed cases, and every input split at every byte frames the same.

use super::*;
use crate::proto::replay::{Event, replay};

fn line(s: &[u8], first: bool) -> Event {
    Event::Line {
        bytes: s.to_vec(),
        first,
    }
}

fn small() -> Limits {
    Limits {
        max_line: 64,
        max_literal: 100,
    }
}

/// Frames `input` whole, then split in two at every position, then in three; all must agree.
fn same_at_every_split(dir: Direction, limits: Limits, input: &[u8], accept: bool) -> Vec<Event> {
    let (whole, err) = replay(&mut Framer::new(dir, limits), &[input], accept);
    for i in 0..=input.len() {
        let (a, b) = input.split_at(i);
        let (split, e2) = replay(&mut Framer::new(dir, limits), &[a, b], accept);
        assert_eq!(split, whole, "split at {i}");
        assert_eq!(e2, err, "split at {i}");
    }
    for i in 0..=input.len() {
        for j in i..=input.len().min(i + 7) {
            let (a, rest) = input.split_at(i);
            let (b, c) = rest.split_at(j - i);
            let (split, _) = replay(&mut Framer::new(dir, limits), &[a, b, c], accept);
            assert_eq!(split, whole, "split at {i},{j}");
        }
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let (byte_by_byte, _) = replay(&mut Framer::new(dir, limits), &bytes, accept);
    assert_eq!(byte_by_byte, whole, "byte by byte");
    whole
}

#[test]
fn commands_with_every_literal_form() {
    let input =
        b"a1 LOGIN {5}\r\nalice {6+}\r\nsecret\r\na2 APPEND INBOX ~{3}\r\n\0\x01\x02\r\na3 NOOP\n";
    let events = same_at_every_split(Direction::ClientToServer, Limits::default(), input, true);
    assert_eq!(
        events,
        vec![
            line(b"a1 LOGIN {5}\r\n", true),
            Event::Literal(b"alice".to_vec()),
            line(b" {6+}\r\n", false),
            Event::Literal(b"secret".to_vec()),
            line(b"\r\n", false),
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
        &mut Framer::new(Direction::ClientToServer, small()),
        &[b"a X {99999999999999999999}\r\n"],
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
        let (whole, err) = replay(&mut Framer::new(dir, small()), &[&input], accept);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        cuts.sort();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in cuts { chunks.push(&input[prev..c]); prev = c; }
        chunks.push(&input[prev..]);
        let (split, err2) = replay(&mut Framer::new(dir, small()), &chunks, accept);
        proptest::prop_assert_eq!(split, whole);
        proptest::prop_assert_eq!(err2, err);
    }
}
