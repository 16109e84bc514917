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
            "other"
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
        "a UID FETCH 1 (BINARY.PEEK[1])\r\n",
        "a UID FETCH 1 (BINARY.SIZE[1])\r\n",
        "a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)\r\n",
        "a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n",
        "a UID FETCH 1 (BODY[]<0.0>)\r\n",
        "a UID FETCH 1 (BODY[HEADER.FIELDS {4}\r\n",
        "a UID FETCH $ (FLAGS)\r\n",
        "a UID FETCH 1 (BODY[)\r\n",
        "a UID FETCH 1 ()\r\n",
        "a UID FETCH 1 (FLAGS\r\n",
        "a UID FETCH 1 (X-GM-LABELS)\r\n",
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
