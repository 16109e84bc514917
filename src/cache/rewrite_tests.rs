use super::*;

fn req(line: &str) -> Request {
    match parse_request(line.as_bytes()) {
        Parsed::Fetch(r) => r,
        Parsed::Bypass => panic!("bypassed: {line}"),
    }
}

fn keys(r: &Request) -> Vec<String> {
    r.items
        .iter()
        .map(|i| match &i.class {
            ItemClass::Live => format!("live:{}", String::from_utf8_lossy(&i.text)),
            ItemClass::Cached(w) => w.key.clone(),
            ItemClass::Other => "other".into(),
        })
        .collect()
}

#[test]
fn canonical_items() {
    let r = req(
        "a1 uid fetch 1:5,7 (uid Flags rfc822.size BODY.PEEK[HEADER.FIELDS (From Date)]<0.100> body[] envelope RFC822.TEXT)\r\n",
    );
    assert!(r.uid);
    assert_eq!(r.set, b"1:5,7");
    assert_eq!(
        keys(&r),
        [
            "live:uid",
            "live:Flags",
            "RFC822.SIZE",
            "BODY[HEADER.FIELDS (From Date)]<0.100>",
            "BODY[]",
            "ENVELOPE",
            "RFC822.TEXT"
        ]
    );
    // PEEK and not share a key; only the non-PEEK form sets \Seen.
    let peek = req("a FETCH 1 BODY.PEEK[1.MIME]\r\n");
    let body = req("a FETCH 1 BODY[1.MIME]\r\n");
    let (ItemClass::Cached(p), ItemClass::Cached(b)) = (&peek.items[0].class, &body.items[0].class)
    else {
        panic!()
    };
    assert_eq!(p.key, b.key);
    assert!(!p.sets_seen && b.sets_seen);
    assert!(!req("a FETCH 1 RFC822.HEADER\n").uid);
}

#[test]
fn what_bypasses() {
    for line in [
        "a FETCH 1:* ALL\r\n",
        "a FETCH 1 FAST\r\n",
        "a FETCH 1 FULL\r\n",
        "a UID FETCH 1 (BINARY.PEEK[HEADER])\r\n",
        "a UID FETCH 1 (BINARY.SIZE[1]<0.5>)\r\n",
        "a UID FETCH 1 (BINARY.SIZE)\r\n",
        "a UID FETCH 1:* (FLAGS) CHANGEDSINCE 12345\r\n",
        "a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED) x\r\n",
        "a UID FETCH 1 BODY[] (CHANGEDSINCE 1)\r\n",
        "a UID FETCH 1 (BODY[]<0.0>)\r\n",
        "a UID FETCH 1 (BODY[HEADER.FIELDS {4}\r\n",
        "a UID FETCH $ (FLAGS)\r\n",
        "a UID FETCH 1 (BODY[)\r\n",
        "a UID FETCH 1 ()\r\n",
        "a UID FETCH 1 (FLAGS\r\n",
        "a UID FETCH 1 (ANNOTATION (/comment value))\r\n",
        "a UID FETCH 1 FLAGS ENVELOPE\r\n",
        "a UID STORE 1 FLAGS ()\r\n",
        "a UID FETCH 1 (FLAGS)",
    ] {
        assert_eq!(parse_request(line.as_bytes()), Parsed::Bypass, "{line}");
    }
}

#[test]
fn quoted_field_names_may_hold_brackets() {
    let r = req("a UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (\"X-]\" FROM)] UID)\r\n");
    assert_eq!(keys(&r), ["BODY[HEADER.FIELDS (\"X-]\" FROM)]", "live:UID"]);
}

#[test]
fn sets() {
    assert_eq!(expand_set(b"3,1:2,2", 100), Some(vec![1, 2, 3]));
    assert_eq!(expand_set(b"5:3", 100), Some(vec![3, 4, 5]));
    assert_eq!(expand_set(b"1:*", 100), None);
    assert_eq!(expand_set(b"0", 100), None);
    assert_eq!(expand_set(b"1:4294967295", 100), None);
    assert_eq!(expand_set(b"1:50,60:100", 60), None);
}

#[test]
fn upstream_lines() {
    let r = req("t UID FETCH 1:3 (BODY.PEEK[HEADER] FLAGS RFC822.SIZE MODSEQ)\r\n");
    assert_eq!(upstream_line(&r), b"t UID FETCH 1:3 (FLAGS MODSEQ)\r\n");
    let r = req("t UID FETCH 4 (ENVELOPE BODY[TEXT])\n");
    assert_eq!(upstream_line(&r), b"t UID FETCH 4 (BODY[]<0.1>)\n");
    let r = req("t UID FETCH 4 RFC822.SIZE\r\n");
    assert_eq!(upstream_line(&r), b"t UID FETCH 4 (UID)\r\n");
}

#[test]
fn more_items_and_modifiers() {
    let r = req(
        "a UID FETCH 1:3 (BINARY.PEEK[2]<0.10> BINARY[1] BINARY.SIZE[2] RFC822 SAVEDATE EMAILID PREVIEW X-GM-LABELS) (CHANGEDSINCE 5 VANISHED)\r\n",
    );
    assert_eq!(
        keys(&r),
        [
            "BINARY[2]<0.10>",
            "BINARY[1]",
            "BINARY.SIZE[2]",
            "RFC822",
            "other",
            "EMAILID",
            "other",
            "other"
        ]
    );
    assert_eq!(
        r.modifiers.as_deref(),
        Some(&b" (CHANGEDSINCE 5 VANISHED)"[..])
    );
    let ItemClass::Cached(w) = &r.items[0].class else {
        panic!()
    };
    assert_eq!(
        (w.partial, w.whole.as_deref(), w.sets_seen),
        (Some((0, 10)), Some("BINARY[2]"), false)
    );
    let ItemClass::Cached(w) = &r.items[1].class else {
        panic!()
    };
    assert!(w.sets_seen && w.partial.is_none());
    assert_eq!(
        upstream_line(&r),
        b"a UID FETCH 1:3 (SAVEDATE PREVIEW X-GM-LABELS BODY[]<0.1>) (CHANGEDSINCE 5 VANISHED)\r\n"
    );
}

#[test]
fn a_fetch_by_number_asks_for_the_uid() {
    let r = req("a FETCH 1:3 (BODY.PEEK[HEADER] FLAGS)\r\n");
    assert_eq!(upstream_line(&r), b"a FETCH 1:3 (UID FLAGS)\r\n");
    let r = req("a FETCH 1:3 (FLAGS ENVELOPE uid)\r\n");
    assert_eq!(upstream_line(&r), b"a FETCH 1:3 (FLAGS uid)\r\n");
}
