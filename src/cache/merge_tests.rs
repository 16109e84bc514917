use super::*;
use crate::proto::framer::{Direction, Framer, Limits};
use crate::proto::message::{AssembleLimits, for_each_message, parse_fetch};

fn item(key: &str, label: &str, bytes: &[u8]) -> Item {
    Item {
        key: key.into(),
        label: label.into(),
        bytes: bytes.into(),
    }
}

fn labels(order: &[&str]) -> Vec<String> {
    order.iter().map(|s| s.to_string()).collect()
}

/// Merges one upstream answer with `items` as `layout` says.
fn run(answer: &[u8], items: &[Item], layout: &Layout<'_>) -> Vec<u8> {
    let mut framer = Framer::new(Direction::ServerToClient, Limits::default());
    let limits = AssembleLimits {
        max_bytes: 1 << 20,
        keep_literal: u64::MAX,
    };
    let mut out = None;
    for_each_message(&mut framer, limits, &[answer], |m| {
        let data = parse_fetch(m).unwrap();
        out = merge(m, &data, items, layout).map(|(b, _)| b);
    })
    .unwrap();
    out.unwrap()
}

#[test]
fn order_learned_from_a_whole_answer_wins() {
    let items = [
        item("BODY[HEADER]", "BODY[HEADER]", b"BODY[HEADER] {0}\r\n"),
        item("RFC822.SIZE", "RFC822.SIZE", b"RFC822.SIZE 9"),
    ];
    let order = labels(&["UID", "RFC822.SIZE", "FLAGS", "BODY[HEADER]"]);
    let layout = Layout {
        pieces: &[Piece::Whole(0), Piece::Whole(1)],
        labels: &labels(&["BODY[HEADER]", "RFC822.SIZE"]),
        order: Some(&order),
        substitute: None,
        drop_uid: false,
    };
    let got = run(b"* 4 FETCH (UID 1 FLAGS ())\r\n", &items, &layout);
    assert_eq!(
        got,
        b"* 4 FETCH (UID 1 RFC822.SIZE 9 FLAGS () BODY[HEADER] {0}\r\n)\r\n"
    );
}

#[test]
fn extras_keep_their_place_and_the_substitute_is_replaced() {
    // The order lacks the implicit FLAGS; the upstream put it before the substitute.
    let items = [item("BODY[TEXT]", "BODY[TEXT]", b"BODY[TEXT] {2}\r\nhi")];
    let order = labels(&["UID", "BODY[TEXT]"]);
    let answer = b"* 1 FETCH (UID 1 FLAGS (\\Seen) BODY[]<0> {1}\r\nR)\r\n";
    for order in [Some(&order[..]), None] {
        let layout = Layout {
            pieces: &[Piece::Whole(0)],
            labels: &labels(&["BODY[TEXT]"]),
            order,
            substitute: Some(0),
            drop_uid: false,
        };
        assert_eq!(
            run(answer, &items, &layout),
            b"* 1 FETCH (UID 1 FLAGS (\\Seen) BODY[TEXT] {2}\r\nhi)\r\n"
        );
    }
}

#[test]
fn partials_are_cut_from_the_whole_section() {
    let items = [
        item("BODY[1]", "BODY[1]", b"BODY[1] {10}\r\n0123456789"),
        item("BINARY[2]", "BINARY[2]", b"BINARY[2] ~{3}\r\na\0b"),
    ];
    let cut = |origin, length, item| Piece::Slice {
        item,
        origin,
        length,
    };
    for (piece, label, want) in [
        (cut(2, 3, 0), "BODY[1]<2>", &b"BODY[1]<2> {3}\r\n234"[..]),
        (cut(8, 5, 0), "BODY[1]<8>", b"BODY[1]<8> {2}\r\n89"),
        (cut(100, 5, 0), "BODY[1]<100>", b"BODY[1]<100> {0}\r\n"),
        (cut(1, 9, 1), "BINARY[2]<1>", b"BINARY[2]<1> ~{2}\r\n\0b"),
    ] {
        let layout = Layout {
            pieces: &[piece],
            labels: &labels(&[label]),
            order: None,
            substitute: None,
            drop_uid: true,
        };
        let mut expect = b"* 3 FETCH (".to_vec();
        expect.extend_from_slice(want);
        expect.extend_from_slice(b")\r\n");
        assert_eq!(run(b"* 3 FETCH (UID 7)\r\n", &items, &layout), expect);
    }
}

#[test]
fn a_quoted_value_cannot_be_cut() {
    let quoted = item("BODY[1]", "BODY[1]", b"BODY[1] \"abc\"");
    assert_eq!(literal_value(&quoted, 7), None);
    let lit = item("BODY[1]", "BODY[1]", b"BODY[1] {3}\r\nabc");
    assert_eq!(literal_value(&lit, 7), Some((13, 3, false)));
    let short = item("BODY[1]", "BODY[1]", b"BODY[1] {4}\r\nabc");
    assert_eq!(literal_value(&short, 7), None);
}

#[test]
fn labels_compare_without_building() {
    let answer = b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (From)]<10> {0}\r\n X-Thing 5)\r\n";
    let mut framer = Framer::new(Direction::ServerToClient, Limits::default());
    let limits = AssembleLimits {
        max_bytes: 4096,
        keep_literal: u64::MAX,
    };
    for_each_message(&mut framer, limits, &[&answer[..]], |m| {
        let data = parse_fetch(m).unwrap();
        for item in &data.items {
            assert!(label_is(item, &item.label()), "{}", item.label());
            assert!(!label_is(item, "UIDX"));
        }
        assert!(label_is(&data.items[1], "BODY[HEADER.FIELDS (From)]<10>"));
        assert!(!label_is(&data.items[1], "BODY[HEADER.FIELDS (From)]<1>"));
        assert!(!label_is(&data.items[1], "BODY[HEADER.FIELDS (From)]"));
    })
    .unwrap();
}

#[test]
fn extract_spans_literals() {
    let msg = Assembled {
        lines: vec![b"* 1 FETCH (A {2}\r\n", b" B {1}\r\n", b")\r\n"],
        literals: vec![LiteralBody::Bytes(b"xy"), LiteralBody::Bytes(b"z")],
    };
    let got = extract(
        &msg,
        Pos {
            line: 0,
            offset: 11,
        },
        Pos { line: 2, offset: 0 },
    );
    assert_eq!(got.as_deref(), Some(&b"A {2}\r\nxy B {1}\r\nz"[..]));
}
