//! Tests of the classifier, response codes, and the LIST/LSUB, STATUS, SEARCH, ESEARCH and
//! SELECT-data parsers on real server output (Dovecot 2.3, Gmail shapes).

use std::borrow::Cow;

use super::testutil::{with_msg, with_msg_limits};
use super::*;

fn p(line: usize, offset: usize) -> Pos {
    Pos { line, offset }
}

#[test]
fn classifies_first_lines() {
    let cases: [(&[u8], Kind<'_>); 18] = [
        (b"+ idling\r\n", Kind::Continuation),
        (b"+\r\n", Kind::Continuation),
        (
            b"a2 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n",
            Kind::Tagged {
                tag: b"a2",
                cond: Cond::Ok,
                code: Some(b"READ-WRITE"),
            },
        ),
        (
            b"a3 no Mailbox doesn't exist: Foo\r\n",
            Kind::Tagged {
                tag: b"a3",
                cond: Cond::No,
                code: None,
            },
        ),
        (
            b"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n",
            Kind::Condition {
                cond: Cond::Ok,
                code: Some(b"UIDVALIDITY"),
            },
        ),
        (
            b"* BYE Logging out\r\n",
            Kind::Condition {
                cond: Cond::Bye,
                code: None,
            },
        ),
        (
            b"* PREAUTH [CAPABILITY IMAP4rev1] ready\r\n",
            Kind::Condition {
                cond: Cond::Preauth,
                code: Some(b"CAPABILITY"),
            },
        ),
        (b"* CAPABILITY IMAP4rev1 IDLE\r\n", Kind::Capability),
        (b"* ENABLED\r\n", Kind::Enabled),
        (b"* LIST () \"/\" {5}\r\n", Kind::List),
        (b"* lsub () \".\" foo\r\n", Kind::Lsub),
        (b"* STATUS INBOX (MESSAGES 1)\r\n", Kind::Status),
        (b"* SEARCH\r\n", Kind::Search),
        (b"* ESEARCH (TAG \"a\") COUNT 0\r\n", Kind::Esearch),
        (b"* 3 EXISTS\r\n", Kind::Exists),
        (b"* 3 expunge\r\n", Kind::Expunge),
        (b"* 3 FETCH (UID 4)\r\n", Kind::Fetch),
        (b"* VANISHED 1:3\r\n", Kind::Vanished),
    ];
    for (line, want) in cases {
        assert_eq!(kind(line), want, "{}", String::from_utf8_lossy(line));
    }
    for other in [
        &b"* 0 RECENT\r\n"[..],
        b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n",
        b"* SEARCHRES\r\n",
        b"a1 MAYBE\r\n",
        b"\r\n",
        b"",
        b"*\r\n",
        b"* FLAGSX ()\r\n",
    ] {
        assert_eq!(kind(other), Kind::Other);
    }
    assert_eq!(kind(b"* FLAGS (\\Seen)\r\n"), Kind::Flags);
}

#[test]
fn kinds_bitset() {
    const SUB: Kinds = Kinds::LIST.union(Kinds::STATUS);
    assert!(SUB.matches(&Kind::List));
    assert!(!SUB.matches(&Kind::Lsub));
    assert!(Kinds::CONDITIONS.matches(&Kind::Condition {
        cond: Cond::Bye,
        code: None
    }));
    assert!(!Kinds::CONDITIONS.matches(&Kind::Tagged {
        tag: b"a",
        cond: Cond::Ok,
        code: None
    }));
    assert!(Kinds::ALL.contains(Kinds::OTHER | Kinds::FETCH));
    assert_eq!(Kinds::ALL.bits().count_ones(), 20);
    let mut k = Kinds::NONE;
    assert!(k.is_empty());
    k |= Kinds::FETCH;
    assert_eq!(k.intersection(SUB), Kinds::NONE);
}

#[test]
fn response_codes() {
    let w = |raw: &'static [u8]| Words { raw };
    let cases: Vec<(&[u8], Option<RespCode<'_>>)> = vec![
        (b"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n", Some(RespCode::UidValidity(1_700_000_000))),
        (b"* OK [UIDNEXT 4] Predicted next UID\r\n", Some(RespCode::UidNext(4))),
        (b"* OK [UNSEEN 2] First unseen.\r\n", Some(RespCode::Unseen(2))),
        (b"* OK [HIGHESTMODSEQ 7] Highest\r\n", Some(RespCode::HighestModSeq(7))),
        (b"* OK [NOMODSEQ] No permanent modsequences\r\n", Some(RespCode::NoModSeq)),
        (
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n",
            Some(RespCode::PermanentFlags(w(b"\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*"))),
        ),
        (b"* OK [PERMANENTFLAGS ()] No permanent flags permitted\r\n", Some(RespCode::PermanentFlags(w(b"")))),
        (b"a2 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n", Some(RespCode::ReadWrite)),
        (b"a2 OK [READ-ONLY] Examine completed\r\n", Some(RespCode::ReadOnly)),
        (b"* OK [READ-WRITE]\r\n", Some(RespCode::ReadWrite)),
        (b"* OK [CLOSED] Previous mailbox closed.\r\n", Some(RespCode::Closed)),
        (
            b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot ready.\r\n",
            Some(RespCode::Capability(w(b"IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN"))),
        ),
        (
            b"a3 OK [APPENDUID 1700000000 5] Append completed (0.002 + 0.000 + 0.001 secs).\r\n",
            Some(RespCode::AppendUid(b"1700000000 5")),
        ),
        (b"a4 OK [COPYUID 1700000000 1:3 7:9] Copy completed\r\n", Some(RespCode::CopyUid(b"1700000000 1:3 7:9"))),
        (b"* NO [ALERT] Quota exceeded\r\n", Some(RespCode::Alert)),
        (b"a NO [TRYCREATE] Mailbox doesn't exist: X\r\n", Some(RespCode::TryCreate)),
        (
            b"a5 NO [SERVERBUG] Internal error occurred. Refer to server log for more information. [2024-01-01 10:00:00]\r\n",
            Some(RespCode::Other { name: b"SERVERBUG", text: None }),
        ),
        (
            b"a6 NO [BADCHARSET (UTF-8)] Unsupported\r\n",
            Some(RespCode::Other { name: b"BADCHARSET", text: Some(b"(UTF-8)") }),
        ),
        (
            b"* OK [UIDVALIDITY 0] bad\r\n",
            Some(RespCode::Other { name: b"UIDVALIDITY", text: Some(b"0") }),
        ),
        (b"* OK [ALERT\r\n", None),
        (b"* OK [] x\r\n", None),
        (b"* OK no code\r\n", None),
        (b"* BYE Logging out\r\n", None),
        (b"* 3 EXISTS\r\n", None),
        (b"+ [ALERT] x\r\n", None),
    ];
    for (line, want) in cases {
        assert_eq!(resp_code(line), want, "{}", String::from_utf8_lossy(line));
    }
}

#[test]
fn select_data() {
    assert_eq!(parse_exists(b"* 3 EXISTS\r\n"), Ok(3));
    assert_eq!(parse_exists(b"* 0 EXISTS\r\n"), Ok(0));
    assert_eq!(parse_expunge(b"* 22 EXPUNGE\r\n"), Ok(22));
    assert!(parse_expunge(b"* 0 EXPUNGE\r\n").is_err());
    assert!(parse_exists(b"* 4294967296 EXISTS\r\n").is_err());
    let flags =
        parse_flags(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)\r\n")
            .unwrap();
    assert_eq!(flags.iter().count(), 6);
    assert!(flags.contains(b"\\seen"));
    assert_eq!(
        parse_enabled(b"* ENABLED CONDSTORE QRESYNC\r\n")
            .unwrap()
            .raw,
        b"CONDSTORE QRESYNC"
    );
    assert!(parse_enabled(b"* ENABLED\r\n").unwrap().is_empty());
    let caps =
        parse_capability(b"* CAPABILITY IMAP4rev1 IDLE X-GM-EXT-1 AUTH=XOAUTH2\r\n").unwrap();
    assert!(caps.contains(b"x-gm-ext-1"));
    assert_eq!(
        parse_vanished(b"* VANISHED (EARLIER) 41,43:116,118\r\n"),
        Ok(Vanished {
            earlier: true,
            uids: b"41,43:116,118"
        })
    );
    assert_eq!(
        parse_vanished(b"* VANISHED 405,407\r\n"),
        Ok(Vanished {
            earlier: false,
            uids: b"405,407"
        })
    );
    assert_eq!(
        parse_flags(b"* FLAGS (\\Seen) x\r\n"),
        Err(ParseError::Trailing { at: p(0, 15) })
    );
    assert!(parse_vanished(b"* VANISHED (LATER) 1\r\n").is_err());
}

#[test]
fn list_forms() {
    with_msg(b"* LIST (\\HasNoChildren) \"/\" INBOX\r\n", |m| {
        let l = parse_list(m).unwrap();
        assert_eq!(l.flags.raw, b"\\HasNoChildren");
        assert_eq!(l.delimiter, Some(b'/'));
        assert_eq!(l.mailbox.bytes, Cow::Borrowed(&b"INBOX"[..]));
        assert_eq!(l.mailbox.form, StringForm::Atom);
        assert_eq!((l.mailbox.start, l.mailbox.end), (p(0, 28), p(0, 33)));
        assert_eq!(l.extended, None);
    });
    with_msg(
        b"* LIST (\\All \\HasNoChildren) \"/\" \"[Gmail]/All Mail\"\r\n",
        |m| {
            let l = parse_list(m).unwrap();
            assert_eq!(l.mailbox.bytes.as_ref(), b"[Gmail]/All Mail");
            assert_eq!(l.mailbox.form, StringForm::Quoted);
        },
    );
    with_msg(b"* LIST () \"/\" {5}\r\nab cd\r\n", |m| {
        let l = parse_list(m).unwrap();
        assert!(l.flags.is_empty());
        assert_eq!(l.mailbox.bytes.as_ref(), b"ab cd");
        assert_eq!(l.mailbox.form, StringForm::Literal(0));
        assert_eq!((l.mailbox.start, l.mailbox.end), (p(0, 14), p(1, 0)));
    });
    with_msg(b"* LIST () \"\\\\\" \"a\\\\b \\\"q\\\"\"\r\n", |m| {
        let l = parse_list(m).unwrap();
        assert_eq!(l.delimiter, Some(b'\\'));
        assert_eq!(l.mailbox.bytes.as_ref(), b"a\\b \"q\"");
    });
    with_msg(
        "* LIST (\\HasNoChildren) \".\" \"Entwürfe\"\r\n".as_bytes(),
        |m| {
            assert_eq!(
                parse_list(m).unwrap().mailbox.bytes.as_ref(),
                "Entwürfe".as_bytes()
            );
        },
    );
    with_msg(b"* LIST (\\Noselect) nil \"\"\r\n", |m| {
        let l = parse_list(m).unwrap();
        assert_eq!(l.delimiter, None);
        assert!(l.mailbox.bytes.is_empty());
    });
    with_msg(
        b"* LIST (\\Subscribed \\NonExistent) \"/\" \"Foo\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n",
        |m| {
            let l = parse_list(m).unwrap();
            let ext = l.extended.clone().unwrap();
            assert_eq!(ext.text, Some(&b"(\"CHILDINFO\" (\"SUBSCRIBED\"))"[..]));
            assert_eq!(l.items.len(), 1);
            assert_eq!(l.items[0].tag.bytes.as_ref(), b"CHILDINFO");
            assert_eq!(l.items[0].value.text, Some(&b"(\"SUBSCRIBED\")"[..]));
        },
    );
    with_msg(
        b"* LIST (\\HasNoChildren) \"/\" \"New\" (\"OLDNAME\" ({3}\r\nOld))\r\n",
        |m| {
            let l = parse_list(m).unwrap();
            assert_eq!(l.items[0].value.shape, Shape::List { literals: 0..1 });
            assert_eq!(l.extended.unwrap().end, p(1, 2));
        },
    );
    with_msg(b"* LSUB () \".\" #news.comp.mail.misc\r\n", |m| {
        assert_eq!(
            parse_lsub(m).unwrap().mailbox.bytes.as_ref(),
            b"#news.comp.mail.misc"
        );
        assert!(parse_list(m).is_err());
    });
    for bad in [
        &b"* LIST (\\X) \"//\" INBOX\r\n"[..],
        b"* LIST (\\X) \"/\" INBOX extra\r\n",
        b"* LIST (\\X) \"/\"\r\n",
        b"* LIST \\X \"/\" INBOX\r\n",
        b"* LIST () \"/\" \"unterminated\r\n",
        b"* LIST () \"/\" INBOX (\"X\")\r\n",
    ] {
        with_msg(bad, |m| assert!(parse_list(m).is_err(), "{bad:?}"));
    }
}

#[test]
fn streamed_mailbox_name_is_reported() {
    let limits = AssembleLimits {
        max_bytes: 1024,
        keep_literal: 2,
    };
    with_msg_limits(b"* LIST () \"/\" {5}\r\nab cd\r\n", limits, |m| {
        assert_eq!(
            m.literals,
            vec![LiteralBody::Streamed {
                len: 5,
                binary: false
            }]
        );
        assert_eq!(
            parse_list(m),
            Err(ParseError::LiteralNotKept {
                index: 0,
                at: p(0, 14)
            })
        );
    });
}

#[test]
fn status_forms() {
    with_msg(
        b"* STATUS INBOX (MESSAGES 12 UIDNEXT 13 UIDVALIDITY 1700000000 UNSEEN 2 HIGHESTMODSEQ 40)\r\n",
        |m| {
            let s = parse_status(m).unwrap();
            assert_eq!(s.mailbox.bytes.as_ref(), b"INBOX");
            assert_eq!(s.items.len(), 5);
            assert_eq!(s.get(StatusAtt::Messages), Some(12));
            assert_eq!(s.get(StatusAtt::UidValidity), Some(1_700_000_000));
            assert_eq!(s.get(StatusAtt::HighestModSeq), Some(40));
            assert_eq!(s.get(StatusAtt::Size), None);
        },
    );
    with_msg(
        b"* STATUS {5}\r\nab cd (MESSAGES 1 APPENDLIMIT NIL size 99)\r\n",
        |m| {
            let s = parse_status(m).unwrap();
            assert_eq!(s.mailbox.bytes.as_ref(), b"ab cd");
            assert_eq!(s.items[1].att, StatusAtt::AppendLimit);
            assert_eq!(s.items[1].value.shape, Shape::Nil);
            assert_eq!(s.get(StatusAtt::Size), Some(99));
            assert_eq!(s.items[0].value.start, p(1, 11));
        },
    );
    with_msg(b"* STATUS \"Sent Messages\" ()\r\n", |m| {
        assert!(parse_status(m).unwrap().items.is_empty());
    });
    with_msg(
        b"* STATUS INBOX (MAILBOXID (F2212ea87-6097) MESSAGES 0)\r\n",
        |m| {
            let s = parse_status(m).unwrap();
            assert_eq!(s.items[0].att, StatusAtt::Other(b"MAILBOXID"));
            assert_eq!(s.items[0].value.text, Some(&b"(F2212ea87-6097)"[..]));
        },
    );
    for bad in [
        &b"* STATUS INBOX (MESSAGES x)\r\n"[..],
        b"* STATUS INBOX (MESSAGES 1\r\n",
        b"* STATUS INBOX MESSAGES 1\r\n",
        b"* STATUS INBOX (MESSAGES 1) x\r\n",
    ] {
        with_msg(bad, |m| assert!(parse_status(m).is_err(), "{bad:?}"));
    }
}

#[test]
fn search_forms() {
    let s = parse_search(b"* SEARCH\r\n").unwrap();
    assert!(s.numbers.is_empty());
    assert_eq!(s.modseq, None);
    let s = parse_search(b"* SEARCH 2 84 882\r\n").unwrap();
    assert_eq!(s.numbers.iter().collect::<Vec<_>>(), vec![2, 84, 882]);
    let s = parse_search(b"* SEARCH 2 5 (MODSEQ 917162500)\r\n").unwrap();
    assert_eq!(s.numbers.raw, b"2 5");
    assert_eq!(s.modseq, Some(917_162_500));
    for bad in [
        &b"* SEARCH 0\r\n"[..],
        b"* SEARCH 1  2\r\n",
        b"* SEARCH 1 x\r\n",
        b"* SEARCH (MODSEQ)\r\n",
        b"* SEARCH 99999999999\r\n",
    ] {
        assert!(parse_search(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn esearch_forms() {
    with_msg(b"* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\r\n", |m| {
        let e = parse_esearch(m).unwrap();
        assert_eq!(e.tag.as_ref().map(|t| t.bytes.as_ref()), Some(&b"A282"[..]));
        assert!(!e.uid);
        assert_eq!((e.min(), e.count(), e.max()), (Some(2), Some(3), None));
    });
    with_msg(b"* ESEARCH (TAG \"A283\") UID ALL 4:18,21,28\r\n", |m| {
        let e = parse_esearch(m).unwrap();
        assert!(e.uid);
        assert_eq!(e.all(), Some(&b"4:18,21,28"[..]));
    });
    with_msg(b"* ESEARCH (TAG \"a\") UID\r\n", |m| {
        let e = parse_esearch(m).unwrap();
        assert!(e.uid && e.items.is_empty());
    });
    with_msg(
        b"* ESEARCH (TAG \"a\") UID MIN 7 MAX 3800 MODSEQ 12345\r\n",
        |m| {
            let e = parse_esearch(m).unwrap();
            assert_eq!(
                (e.min(), e.max(), e.modseq()),
                (Some(7), Some(3800), Some(12345))
            );
        },
    );
    with_msg(
        b"* ESEARCH (TAG \"a\") UID PARTIAL (1:100 200:250,300)\r\n",
        |m| {
            let e = parse_esearch(m).unwrap();
            let partial = e.item(b"partial").unwrap();
            assert_eq!(partial.value.text, Some(&b"(1:100 200:250,300)"[..]));
        },
    );
    with_msg(b"* ESEARCH COUNT 5\r\n", |m| {
        assert_eq!(parse_esearch(m).unwrap().count(), Some(5));
    });
    for bad in [
        &b"* ESEARCH (TAG \"a\") MIN 0\r\n"[..],
        b"* ESEARCH (TAG \"a\") COUNT x\r\n",
        b"* ESEARCH (TAG \"a\"\r\n",
        b"* ESEARCH (TAG \"a\") MIN\r\n",
        b"* ESEARCH UIDS\r\n",
    ] {
        with_msg(bad, |m| assert!(parse_esearch(m).is_err(), "{bad:?}"));
    }
}

#[test]
fn parse_dispatches_on_kind() {
    with_msg(b"* OK [UIDNEXT 4] Predicted next UID\r\n", |m| {
        assert_eq!(
            parse(m),
            Ok(Message::Condition {
                cond: Cond::Ok,
                code: Some(RespCode::UidNext(4))
            })
        );
    });
    with_msg(b"a2 OK [READ-WRITE] Select completed.\r\n", |m| {
        assert_eq!(
            parse(m),
            Ok(Message::Tagged {
                tag: b"a2",
                cond: Cond::Ok,
                code: Some(RespCode::ReadWrite)
            })
        );
    });
    with_msg(b"* 3 EXISTS\r\n", |m| {
        assert_eq!(parse(m), Ok(Message::Exists(3)))
    });
    with_msg(b"* 0 RECENT\r\n", |m| {
        assert_eq!(parse(m), Ok(Message::Other))
    });
    with_msg(b"* FLAGS (\\Seen) {3}\r\nabc\r\n", |m| {
        assert_eq!(parse(m), Err(ParseError::Trailing { at: p(0, 19) }));
    });
    let empty = Assembled::default();
    assert_eq!(parse_list(&empty), Err(ParseError::Shape { line: 0 }));
    let lying = Assembled {
        lines: vec![b"* LIST () \"/\" {5}\r\n", b"\r\n"],
        literals: vec![LiteralBody::Bytes(b"abc")],
    };
    assert_eq!(
        parse_list(&lying),
        Err(ParseError::LiteralLength {
            index: 0,
            announced: 5,
            actual: 3
        })
    );
    let unannounced = Assembled {
        lines: vec![b"* LIST () \"/\" x\r\n", b"\r\n"],
        literals: vec![LiteralBody::Bytes(b"abc")],
    };
    assert_eq!(parse_list(&unannounced), Err(ParseError::Shape { line: 0 }));
}

/// The classifier as it was before it dispatched on first bytes: words split at spaces and
/// compared entry by entry. The property test below holds the fast one to it.
fn reference_kind(first_line: &[u8]) -> Kind<'_> {
    use super::kind::code_name;
    fn word(input: &[u8]) -> (&[u8], &[u8]) {
        match input.iter().position(|&c| c == b' ') {
            Some(end) => (&input[..end], &input[end + 1..]),
            None => (input, &[]),
        }
    }
    fn find<T: Copy>(table: &[(&[u8], T)], word: &[u8]) -> Option<T> {
        table
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
            .map(|&(_, v)| v)
    }
    const CONDS: [(&[u8], Cond); 5] = [
        (b"OK", Cond::Ok),
        (b"NO", Cond::No),
        (b"BAD", Cond::Bad),
        (b"BYE", Cond::Bye),
        (b"PREAUTH", Cond::Preauth),
    ];
    let body = crate::proto::command::trim_eol(first_line);
    if body.first() == Some(&b'+') {
        return Kind::Continuation;
    }
    let Some(untagged) = body.strip_prefix(b"* ") else {
        let (tag, rest) = word(body);
        let (cond, text) = word(rest);
        return match find(&CONDS, cond) {
            Some(cond @ (Cond::Ok | Cond::No | Cond::Bad))
                if !tag.is_empty()
                    && tag.iter().all(|&c| crate::proto::command::is_tag_char(c)) =>
            {
                Kind::Tagged {
                    tag,
                    cond,
                    code: code_name(text),
                }
            }
            _ => Kind::Other,
        };
    };
    let (first, rest) = word(untagged);
    if let Some(cond) = find(&CONDS, first) {
        return Kind::Condition {
            cond,
            code: code_name(rest),
        };
    }
    if !first.is_empty() && first.iter().all(u8::is_ascii_digit) {
        let numbered: [(&[u8], Kind<'static>); 3] = [
            (b"EXISTS", Kind::Exists),
            (b"EXPUNGE", Kind::Expunge),
            (b"FETCH", Kind::Fetch),
        ];
        return find(&numbered, word(rest).0).unwrap_or(Kind::Other);
    }
    let named: [(&[u8], Kind<'static>); 9] = [
        (b"CAPABILITY", Kind::Capability),
        (b"ENABLED", Kind::Enabled),
        (b"LIST", Kind::List),
        (b"LSUB", Kind::Lsub),
        (b"STATUS", Kind::Status),
        (b"SEARCH", Kind::Search),
        (b"ESEARCH", Kind::Esearch),
        (b"FLAGS", Kind::Flags),
        (b"VANISHED", Kind::Vanished),
    ];
    find(&named, first).unwrap_or(Kind::Other)
}

mod kind_props {
    use super::*;
    use proptest::prelude::*;

    /// Lines made of the pieces the classifier tells apart, misspelt and misplaced.
    fn line() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"*"[..]),
            Just(&b"+"[..]),
            Just(&b"a1"[..]),
            Just(&b"A.b-7"[..]),
            Just(&b"12"[..]),
            Just(&b"0"[..]),
            Just(&b"4294967296"[..]),
            Just(&b"1a"[..]),
            Just(&b"OK"[..]),
            Just(&b"ok"[..]),
            Just(&b"No"[..]),
            Just(&b"BAD"[..]),
            Just(&b"bye"[..]),
            Just(&b"PREAUTH"[..]),
            Just(&b"OKAY"[..]),
            Just(&b"FETCH"[..]),
            Just(&b"fetch"[..]),
            Just(&b"FETC"[..]),
            Just(&b"EXISTS"[..]),
            Just(&b"expunge"[..]),
            Just(&b"LIST"[..]),
            Just(&b"Vanished"[..]),
            Just(&b"flags"[..]),
            Just(&b"[READ-ONLY]"[..]),
            Just(&b"[CAPABILITY"[..]),
            Just(&b"["[..]),
            Just(&b"]"[..]),
            Just(&b"("[..]),
            Just(&b""[..]),
            Just(&b"\t"[..]),
            Just(&b"\xc3\xa9"[..]),
            Just(&b"\r"[..]),
        ];
        let sep = prop_oneof![
            Just(&b" "[..]),
            Just(&b" "[..]),
            Just(&b"  "[..]),
            Just(&b""[..])
        ];
        let eol = prop_oneof![Just(&b"\r\n"[..]), Just(&b"\n"[..]), Just(&b""[..])];
        (proptest::collection::vec((piece, sep), 0..6), eol).prop_map(|(parts, eol)| {
            let mut out = Vec::new();
            for (p, s) in parts {
                out.extend_from_slice(p);
                out.extend_from_slice(s);
            }
            out.extend_from_slice(eol);
            out
        })
    }

    proptest! {
        #[test]
        fn kind_equals_the_word_by_word_reference(line in line()) {
            prop_assert_eq!(kind(&line), reference_kind(&line));
        }

        /// The session core forwards `* digit...` lines unclassified when no stage subscribed
        /// to these kinds: they must be the only ones such a line can be.
        #[test]
        fn a_numbered_line_is_exists_expunge_fetch_or_other(
            digit in 0u8..10,
            line in line(),
        ) {
            let mut numbered = vec![b'*', b' ', b'0' + digit];
            numbered.extend_from_slice(&line);
            prop_assert!(matches!(
                kind(&numbered),
                Kind::Exists | Kind::Expunge | Kind::Fetch | Kind::Other
            ));
            prop_assert_eq!(numbered_kinds(&numbered), kind(&numbered).kinds());
        }

        /// The runs' shortcut for `* n ...` lines agrees with `kind`.
        #[test]
        fn numbered_kinds_is_kind(
            digits in "[0-9]{1,11}",
            sep in prop_oneof![Just(" "), Just(""), Just("  "), Just("\t")],
            word in prop_oneof![
                Just("FETCH"), Just("fetch"), Just("Fetc"), Just("FETCHX"), Just("EXISTS"),
                Just("exists"), Just("EXIST"), Just("EXPUNGE"), Just("expunge"), Just("EXPUNG"),
                Just("EXPUNGED"), Just("RECENT"), Just("EX"), Just("E"), Just(""), Just("x"),
            ],
            rest in prop_oneof![Just(""), Just(" (UID 5)"), Just("\r\n"), Just("\n"), Just("x"), Just(" ")],
        ) {
            let line = format!("* {digits}{sep}{word}{rest}");
            prop_assert_eq!(numbered_kinds(line.as_bytes()), kind(line.as_bytes()).kinds());
        }

        #[test]
        fn kind_equals_the_reference_on_any_bytes(line in proptest::collection::vec(any::<u8>(), 0..24)) {
            prop_assert_eq!(kind(&line), reference_kind(&line));
        }
    }
}
