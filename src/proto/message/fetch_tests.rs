//! FETCH parser tests: Dovecot and Gmail shapes, literals in structures, streamed bodies.

use super::testutil::{with_msg, with_msg_limits};
use super::*;

fn p(line: usize, offset: usize) -> Pos {
    Pos { line, offset }
}

/// A literal announcement followed by its bytes.
fn lit(s: &str) -> String {
    format!("{{{}}}\r\n{s}", s.len())
}

#[test]
fn dovecot_header_fetch() {
    let hdr = "Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nFrom: a@example.com\r\n\r\n";
    let wire = format!(
        "* 1 FETCH (UID 1 FLAGS (\\Seen $Forwarded) MODSEQ (3) RFC822.SIZE 1234 \
         INTERNALDATE \"01-Jan-2024 10:00:00 +0000\" BODY[HEADER.FIELDS (DATE FROM)] {})\r\n",
        lit(hdr)
    );
    with_msg(wire.as_bytes(), |m| {
        let f = parse_fetch(m).unwrap();
        assert_eq!(f.seq, 1);
        assert_eq!(f.uid(), Some(1));
        assert_eq!(f.modseq(), Some(3));
        let flags = f.flags().unwrap();
        assert_eq!(
            flags.iter().collect::<Vec<_>>(),
            vec![&b"\\Seen"[..], b"$Forwarded"]
        );
        let labels: Vec<String> = f.items.iter().map(FetchItem::label).collect();
        assert_eq!(
            labels,
            vec![
                "UID",
                "FLAGS",
                "MODSEQ",
                "RFC822.SIZE",
                "INTERNALDATE",
                "BODY[HEADER.FIELDS (DATE FROM)]"
            ]
        );
        let body = f.item(FetchAtt::BodySection).unwrap();
        assert_eq!(body.section, Some(&b"HEADER.FIELDS (DATE FROM)"[..]));
        assert_eq!(
            body.value.shape,
            Shape::Literal(LiteralRef {
                index: 0,
                len: hdr.len() as u64,
                binary: false
            })
        );
        assert_eq!(body.value.end, p(1, 0));
        assert_eq!(body.value.text, None);
        assert_eq!(
            f.item(FetchAtt::Rfc822Size).unwrap().value.number(),
            Some(1234)
        );
        assert_eq!(
            f.item(FetchAtt::InternalDate).unwrap().value.text,
            Some(&b"\"01-Jan-2024 10:00:00 +0000\""[..])
        );
    });
}

#[test]
fn envelope_and_bodystructure_with_literals() {
    let wire = format!(
        "* 2 FETCH (UID 7 ENVELOPE (\"Mon, 1 Jan 2024 10:00:00 +0000\" {} \
         ((\"Al\" NIL \"al\" \"example.com\")) ((\"Al\" NIL \"al\" \"example.com\")) \
         ((\"Al\" NIL \"al\" \"example.com\")) ((NIL NIL \"bo\" \"example.org\")) NIL NIL NIL \
         \"<id@x>\") BODYSTRUCTURE ((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 12 1 \
         NIL NIL NIL NIL)(\"text\" \"html\" (\"charset\" \"utf-8\") NIL {} \"base64\" 40 2 NIL NIL NIL \
         NIL) \"alternative\" (\"boundary\" \"xyz\") NIL NIL NIL))\r\n",
        lit("hello\r\nworld"),
        lit("a b c")
    );
    with_msg(wire.as_bytes(), |m| {
        assert_eq!(m.lines.len(), 3);
        let f = parse_fetch(m).unwrap();
        assert_eq!(f.uid(), Some(7));
        let env = f.item(FetchAtt::Envelope).unwrap();
        assert_eq!(env.value.shape, Shape::List { literals: 0..1 });
        assert_eq!(env.value.start.line, 0);
        assert_eq!(env.value.end.line, 1);
        let bs = f.item(FetchAtt::BodyStructure).unwrap();
        assert_eq!(bs.value.shape, Shape::List { literals: 1..2 });
        assert_eq!(bs.start.line, 1);
        assert!(m.contains(bs.value.end));
        assert_eq!(bs.value.end, p(2, m.lines[2].len() - 3));
    });
}

#[test]
fn streamed_body() {
    let body = "x".repeat(200);
    let wire = format!("* 3 FETCH (UID 9 BODY[] {} FLAGS (\\Seen))\r\n", lit(&body));
    let limits = AssembleLimits {
        max_bytes: 1024,
        keep_literal: 16,
    };
    with_msg_limits(wire.as_bytes(), limits, |m| {
        assert_eq!(
            m.literals,
            vec![LiteralBody::Streamed {
                len: 200,
                binary: false
            }]
        );
        let f = parse_fetch(m).unwrap();
        assert_eq!(f.uid(), Some(9));
        assert!(f.flags().unwrap().contains(b"\\SEEN"));
        let b = f.item(FetchAtt::BodySection).unwrap();
        assert_eq!(b.section, Some(&b""[..]));
        assert_eq!(b.label(), "BODY[]");
        assert_eq!(
            b.value.shape,
            Shape::Literal(LiteralRef {
                index: 0,
                len: 200,
                binary: false
            })
        );
        assert_eq!((b.value.start, b.value.end), (p(0, 24), p(1, 0)));
    });
    // The same message with the body kept parses identically.
    let kept = with_msg(wire.as_bytes(), |m| format!("{:?}", parse_fetch(m)));
    let streamed = with_msg_limits(wire.as_bytes(), limits, |m| format!("{:?}", parse_fetch(m)));
    assert_eq!(kept, streamed);
}

#[test]
fn binary_partial_and_newer_items() {
    let wire = b"* 4 FETCH (BINARY[1] ~{5}\r\n\0\x01\x02\x03\x04 BINARY.SIZE[1] 5 BODY[]<0> {3}\r\nabc UID 10)\r\n";
    with_msg(wire, |m| {
        let f = parse_fetch(m).unwrap();
        let labels: Vec<String> = f.items.iter().map(FetchItem::label).collect();
        assert_eq!(
            labels,
            vec!["BINARY[1]", "BINARY.SIZE[1]", "BODY[]<0>", "UID"]
        );
        assert_eq!(
            f.items[0].value.shape,
            Shape::Literal(LiteralRef {
                index: 0,
                len: 5,
                binary: true
            })
        );
        assert_eq!(f.items[0].value.start, p(0, 21));
        assert_eq!(f.items[2].origin, Some(0));
        assert_eq!(f.uid(), Some(10));
    });
    let wire = b"* 6 FETCH (EMAILID (M6d99ac3275bb4e) THREADID NIL SAVEDATE \"01-Jan-2024 10:00:00 +0000\" PREVIEW \"Hello there\" UID 11 body (\"text\" \"plain\" NIL NIL NIL \"7bit\" 5 1))\r\n";
    with_msg(wire, |m| {
        let f = parse_fetch(m).unwrap();
        let atts: Vec<FetchAtt> = f.items.iter().map(|i| i.att).collect();
        assert_eq!(
            atts,
            vec![
                FetchAtt::EmailId,
                FetchAtt::ThreadId,
                FetchAtt::SaveDate,
                FetchAtt::Preview,
                FetchAtt::Uid,
                FetchAtt::Body
            ]
        );
        assert_eq!(f.items[1].value.shape, Shape::Nil);
        assert_eq!(f.items[5].label(), "BODY");
    });
}

#[test]
fn gmail_extensions_are_unknown_items() {
    let wire = b"* 1 FETCH (X-GM-THRID 1266894439832287888 X-GM-MSGID 1278455344230334865 X-GM-LABELS (\\Inbox \\Sent Important \"Muy Importante\") UID 4 FLAGS (\\Seen))\r\n";
    with_msg(wire, |m| {
        let f = parse_fetch(m).unwrap();
        assert_eq!(f.items[0].att, FetchAtt::Other);
        assert_eq!(f.items[0].label(), "X-GM-THRID");
        assert_eq!(f.items[0].value.number(), Some(1_266_894_439_832_287_888));
        assert_eq!(
            f.items[2].value.text,
            Some(&b"(\\Inbox \\Sent Important \"Muy Importante\")"[..])
        );
        assert_eq!(
            (f.uid(), f.flags().map(|w| w.raw)),
            (Some(4), Some(&b"\\Seen"[..]))
        );
    });
}

#[test]
fn header_fields_with_quoted_bracket() {
    with_msg(
        b"* 5 FETCH (BODY[HEADER.FIELDS (\"X-]\" FROM)] NIL)\r\n",
        |m| {
            let f = parse_fetch(m).unwrap();
            assert_eq!(
                f.items[0].section,
                Some(&b"HEADER.FIELDS (\"X-]\" FROM)"[..])
            );
            assert_eq!(f.items[0].value.shape, Shape::Nil);
        },
    );
}

#[test]
fn malformed_fetches_fail_with_a_place() {
    let cases: [(&[u8], Pos); 9] = [
        (b"* 1 FETCH (UID 0)\r\n", p(0, 15)),
        (b"* 1 FETCH (UID x)\r\n", p(0, 15)),
        (b"* 1 FETCH (FLAGS \\Seen)\r\n", p(0, 17)),
        (b"* 1 FETCH (MODSEQ 3)\r\n", p(0, 18)),
        (b"* 1 FETCH (UID 1\r\n", p(0, 16)),
        (b"* 1 FETCH ()\r\n", p(0, 11)),
        (b"* 1 FETCH (UID 1) \r\n", p(0, 17)),
        (b"* 0 FETCH (UID 1)\r\n", p(0, 2)),
        (b"* 1 FETCH (BODY[HEADER NIL)\r\n", p(0, 15)),
    ];
    for (wire, at) in cases {
        with_msg(wire, |m| {
            let err = parse_fetch(m).unwrap_err();
            let got = match err {
                ParseError::Expected { at, .. } | ParseError::Trailing { at } => at,
                e => panic!("{e:?}"),
            };
            assert_eq!(got, at, "{}", String::from_utf8_lossy(wire));
        });
    }
    // A literal where the structure does not continue after it.
    with_msg(b"* 1 FETCH (BODY[] {3}\r\nabc\r\n", |m| {
        assert_eq!(
            parse_fetch(m),
            Err(ParseError::Expected {
                expected: "SP",
                at: p(1, 0)
            })
        );
    });
}
