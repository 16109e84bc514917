//! Lexer tests: every grammar form, Dovecot's liberalities, and lookalikes that are not literals.

use super::*;

const IMAP: LineStart = LineStart::Command(Dialect::Imap);
const LOGIN: LineStart = LineStart::Command(Dialect::Login);

fn lit(len: u64, sync: bool, binary: bool) -> Option<Literal> {
    Some(Literal { len, sync, binary })
}

/// The literal a whole command line (after login) announces, or its error.
fn announces(line: &[u8]) -> Result<Option<Literal>, SyntaxError> {
    scan_line(line, IMAP).map(|s| s.literal)
}

fn ok(line: &[u8]) {
    assert_eq!(announces(line), Ok(None), "{}", line.escape_ascii());
}

fn bad(line: &[u8], e: SyntaxError) {
    assert_eq!(announces(line), Err(e), "{}", line.escape_ascii());
}

#[test]
fn real_client_commands_tokenize() {
    for line in [
        &b"a1 CAPABILITY\r\n"[..],
        b"a2 LIST \"\" \"*\"\r\n",
        b"a3 LIST \"\" %\r\n",
        b"a4 LSUB \"\" *\r\n",
        b"a5 SELECT INBOX (CONDSTORE)\r\n",
        b"a6 SELECT \"Entw\xc3\xbcrfe\"\r\n",
        b"a7 FETCH 1:* (FLAGS UID MODSEQ) (CHANGEDSINCE 5)\r\n",
        b"a8 UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (DATE \"FROM\")]<0.100> BINARY[1.2])\r\n",
        b"a9 UID STORE 1,3:5 +FLAGS.SILENT (\\Seen \\Deleted)\r\n",
        b"b1 UID EXPUNGE 1:3\r\n",
        b"b2 ENABLE QRESYNC CONDSTORE\r\n",
        b"b3 ID (\"name\" \"Thunderbird\" \"version\" \"115\")\r\n",
        b"b4 ID NIL\r\n",
        b"b5 UID SEARCH CHARSET UTF-8 SUBJECT \"caf\xc3\xa9\" SINCE 1-Jan-2024\r\n",
        b"b6 STATUS INBOX (MESSAGES UNSEEN UIDNEXT)\r\n",
        b"b7 UID MOVE 4 Archive\r\n",
        b"b8 IDLE\r\n",
        b"b9 NOOP\n",
        b"c1 SEARCH SUBJECT \"a \\\"quoted\\\" \\x word\"\r\n",
        b"c2 FETCH 1 BODY[]\r\n",
        b"c3 LIST (SUBSCRIBED) \"\" (INBOX Sent) RETURN (CHILDREN STATUS (MESSAGES))\r\n",
        b"c4 select  INBOX  \r\n",
        b"c5 STORE 1 FLAGS ()\r\n",
        b"c6 SORT (DATE) UTF-8 ALL\r\n",
        b"c7 GETMETADATA \"\" /shared/comment\r\n",
    ] {
        ok(line);
    }
    assert_eq!(
        announces(b"a APPEND INBOX (\\Seen) \"1-Jan-2024 00:00:00 +0000\" {310}\r\n"),
        Ok(lit(310, true, false))
    );
    assert_eq!(
        announces(b"a SEARCH CHARSET UTF-8 SUBJECT {4+}\r\n"),
        Ok(lit(4, false, false))
    );
}

#[test]
fn every_literal_form() {
    assert_eq!(announces(b"a SELECT {5}\r\n"), Ok(lit(5, true, false)));
    assert_eq!(announces(b"a SELECT {5+}\n"), Ok(lit(5, false, false)));
    assert_eq!(announces(b"a APPEND x ~{7}\r\n"), Ok(lit(7, true, true)));
    assert_eq!(announces(b"a APPEND x ~{7+}\r\n"), Ok(lit(7, false, true)));
    assert_eq!(announces(b"a SELECT {0005}\r\n"), Ok(lit(5, true, false)));
    // Dovecot reads missing digits as zero (imap-parser.c:444).
    assert_eq!(announces(b"a SELECT {}\r\n"), Ok(lit(0, true, false)));
    assert_eq!(announces(b"a SELECT {+}\r\n"), Ok(lit(0, false, false)));
    assert_eq!(
        announces(b"a SELECT {000000000000000000000000000000000000042}\r\n"),
        Ok(lit(42, true, false))
    );
    // After a quoted string or a list, no SP is needed.
    assert_eq!(announces(b"a SEARCH \"x\"{2}\r\n"), Ok(lit(2, true, false)));
    assert_eq!(announces(b"a SEARCH (x){2}\r\n"), Ok(lit(2, true, false)));
    assert_eq!(
        announces(b"a FETCH 1 (BODY[] {2}\r\n"),
        Ok(lit(2, true, false))
    );
}

#[test]
fn number64_bounds() {
    assert_eq!(
        announces(b"a SELECT {9223372036854775807}\r\n"),
        Ok(lit(i64::MAX as u64, true, false))
    );
    bad(
        b"a SELECT {9223372036854775808}\r\n",
        SyntaxError::LiteralLength,
    );
    bad(
        b"a SELECT {99999999999999999999999}\r\n",
        SyntaxError::LiteralLength,
    );
}

#[test]
fn lookalikes_are_not_literals() {
    bad(b"a SELECT \"{5}\r\n", SyntaxError::UnterminatedQuoted);
    ok(b"a SELECT \"{5}\"\r\n");
    ok(b"a SELECT \"\\\"{5}\"\r\n");
    bad(b"a SELECT \"\\\"{5}\r\n", SyntaxError::UnterminatedQuoted);
    bad(b"a SELECT \"{20+}\r\n", SyntaxError::UnterminatedQuoted);
    bad(b"a SELECT x{22+}\r\n", SyntaxError::InvalidAtom);
    bad(b"a FETCH 1 BODY[]{5}\r\n", SyntaxError::InvalidAtom);
    bad(b"a SELECT {5}x\r\n", SyntaxError::LiteralNotAtEol);
    bad(b"a SELECT {5} \r\n", SyntaxError::LiteralNotAtEol);
    bad(b"a SELECT {5}\rx\n", SyntaxError::LiteralNotAtEol);
    bad(b"a SELECT {5++}\r\n", SyntaxError::LiteralPlus);
    bad(b"a SELECT {+5}\r\n", SyntaxError::LiteralPlus);
    bad(b"a SELECT {-5}\r\n", SyntaxError::InvalidLiteral);
    bad(b"a SELECT {5a}\r\n", SyntaxError::InvalidLiteral);
    bad(b"a SELECT {5\r\n", SyntaxError::InvalidLiteral);
    bad(b"a SELECT ~{5}\r\n", SyntaxError::Literal8NotAllowed);
    bad(b"a APPEND ~{5}\r\n", SyntaxError::Literal8NotAllowed);
    ok(b"a SELECT ~x\r\n");
    bad(b"a SELECT a~{5}\r\n", SyntaxError::InvalidAtom);
    // Not a literal where the server does not read arguments.
    ok(b"a NOOP {5+}\r\n");
    ok(b"a XYZZY {5+}\r\n");
    ok(b"a LOGIN {5+}\r\n");
    ok(b"a UID XYZZY {5+}\r\n");
    ok(b"a CREATE foo {5+}\r\n");
    ok(b"a COPY 1 foo {5+}\r\n");
    ok(b"a STATUS foo (MESSAGES) {5+}\r\n");
    ok(b"a UID EXPUNGE 1 {5+}\r\n");
    ok(b"a SETMETADATA INBOX (/private/comment \"x\") {5+}\r\n");
    // Within them it is one.
    assert_eq!(announces(b"a CREATE {5+}\r\n"), Ok(lit(5, false, false)));
    assert_eq!(announces(b"a COPY 1 {5+}\r\n"), Ok(lit(5, false, false)));
    assert_eq!(
        announces(b"a STATUS foo (MESSAGES {5+}\r\n"),
        Ok(lit(5, false, false))
    );
}

#[test]
fn dovecot_liberalities_and_strictness() {
    ok(b"a SELECT \"\xff\x80 8-bit\"\r\n");
    bad(b"a SELECT \xc3\xa9\r\n", SyntaxError::EightBitAtom);
    bad(b"a SELECT \"a\0b\"\r\n", SyntaxError::NulInQuoted);
    bad(b"a SELECT a\0b\r\n", SyntaxError::InvalidAtom);
    bad(b"a SELECT a\tb\r\n", SyntaxError::InvalidAtom);
    bad(b"a SELECT \"a\\\r\n", SyntaxError::UnterminatedQuoted);
    bad(b"a SELECT x\ry\r\n", SyntaxError::BareCr);
    bad(b"a SELECT (x\r\n", SyntaxError::MissingClose);
    bad(b"a SELECT x)\r\n", SyntaxError::UnexpectedClose);
    bad(b"a SELECT )\r\n", SyntaxError::UnexpectedClose);
    ok(b"a SELECT \"x\"\"y\"(z)w\r\n");
    ok(b"a SELECT [x] %* \\y\r\n");
    ok(b"a SELECT\r\n");
    ok(b"a SELECT \n");
    bad(b"\r\n", SyntaxError::InvalidTag);
    bad(b"\n", SyntaxError::InvalidTag);
    bad(b" a NOOP\r\n", SyntaxError::InvalidTag);
    bad(b"a  NOOP\r\n", SyntaxError::InvalidCommandName);
    bad(b"DONE\r\n", SyntaxError::InvalidCommandName);
    bad(b"+a NOOP\r\n", SyntaxError::InvalidTag);
    bad(b"a] NOOP\r\n", SyntaxError::InvalidTag);
    bad(b"a NO{OP\r\n", SyntaxError::InvalidCommandName);
    bad(b"a UID\r\n", SyntaxError::InvalidCommandName);
    bad(b"a UID  FETCH 1 x\r\n", SyntaxError::InvalidCommandName);
    bad(b"a\xc3 NOOP\r\n", SyntaxError::InvalidTag);
    // A CR inside a line is not its end; only LF is.
    ok(b"a NOOP x\ry\r\n");
    // NOOP's arguments are never parsed, so anything goes.
    ok(b"a NOOP \"unterminated (\r\n");
}

#[test]
fn continuation_lines_carry_state() {
    let s = scan_line(b"a FETCH 1 (BODY[] {3}\r\n", IMAP).unwrap();
    assert_eq!(s.literal, lit(3, true, false));
    let next = LineStart::Continuation(s.next);
    assert_eq!(scan_line(b" FLAGS)\r\n", next).map(|s| s.literal), Ok(None));
    assert_eq!(
        scan_line(b")\r\n", next).map(|s| s.literal),
        Ok(None),
        "the literal closed nothing"
    );
    assert_eq!(scan_line(b"\r\n", next), Err(SyntaxError::MissingClose));
    assert_eq!(
        scan_line(b"x {5+}\r\n", next).map(|s| s.literal),
        Ok(lit(5, false, false))
    );
    // A literal right at the start of a continuation line, glued to the previous literal's data.
    assert_eq!(
        scan_line(b"{1}\r\n", next).map(|s| s.literal),
        Ok(lit(1, true, false))
    );
    assert_eq!(
        scan_line(b" \"{5}\r\n", next),
        Err(SyntaxError::UnterminatedQuoted)
    );
    // After the last argument CREATE reads, nothing is parsed.
    let s = scan_line(b"a CREATE {3}\r\n", IMAP).unwrap();
    let next = LineStart::Continuation(s.next);
    assert_eq!(scan_line(b" {5+}\r\n", next).map(|s| s.literal), Ok(None));
    assert_eq!(scan_line(b" \"\r\n", next).map(|s| s.literal), Ok(None));
}

#[test]
fn append_shapes() {
    let msg = |line: &[u8]| scan_line(line, IMAP).map(|s| s.literal);
    assert_eq!(msg(b"a APPEND INBOX {5}\r\n"), Ok(lit(5, true, false)));
    assert_eq!(msg(b"a APPEND {5}\r\n"), Ok(lit(5, true, false)));
    assert_eq!(
        msg(b"a APPEND INBOX () \"d\" ~{5+}\r\n"),
        Ok(lit(5, false, true))
    );
    assert_eq!(
        msg(b"a APPEND INBOX CATENATE (URL \"/x\" TEXT {5}\r\n"),
        Ok(lit(5, true, false))
    );
    assert_eq!(
        msg(b"a APPEND INBOX foo {5+}\r\n"),
        Err(SyntaxError::AppendArguments)
    );
    assert_eq!(
        msg(b"a APPEND INBOX (\\Seen {5+}\r\n"),
        Err(SyntaxError::AppendArguments)
    );
    assert_eq!(
        msg(b"a APPEND INBOX \"d\" \"e\" {5}\r\n"),
        Err(SyntaxError::AppendArguments)
    );
    assert_eq!(
        msg(b"a APPEND INBOX CATENATE ()\r\n"),
        Err(SyntaxError::AppendArguments)
    );
    assert_eq!(
        msg(b"a APPEND (x) {5}\r\n"),
        Err(SyntaxError::AppendArguments)
    );
    assert_eq!(
        msg(b"a APPEND INBOX (\\Seen)\r\n"),
        Err(SyntaxError::AppendArguments)
    );
    assert_eq!(msg(b"a APPEND INBOX\r\n"), Ok(None));
    // MULTIAPPEND: the line after a message starts another one, or ends the command.
    let s = scan_line(b"a APPEND INBOX {5}\r\n", IMAP).unwrap();
    let next = LineStart::Continuation(s.next);
    assert_eq!(scan_line(b"\r\n", next).map(|s| s.literal), Ok(None));
    assert_eq!(
        scan_line(b" (\\Seen) {6+}\r\n", next).map(|s| s.literal),
        Ok(lit(6, false, false))
    );
    assert_eq!(
        scan_line(b" x\r\n", next),
        Err(SyntaxError::AppendArguments)
    );
    // CATENATE goes on after a TEXT part's literal inside its list.
    let s = scan_line(b"a APPEND INBOX CATENATE (TEXT {5}\r\n", IMAP).unwrap();
    let next = LineStart::Continuation(s.next);
    assert_eq!(scan_line(b")\r\n", next).map(|s| s.literal), Ok(None));
    assert_eq!(scan_line(b" URL x)\r\n", next).map(|s| s.literal), Ok(None));
    assert_eq!(scan_line(b"\r\n", next), Err(SyntaxError::AppendArguments));
}

#[test]
fn login_dialect_parses_every_line_whole() {
    let s = scan_line(b"a LOGIN {5}\r\n", LOGIN).unwrap();
    assert_eq!(s.literal, lit(5, true, false));
    let next = LineStart::Continuation(s.next);
    assert_eq!(
        scan_line(b" {6+}\r\n", next).map(|s| s.literal),
        Ok(lit(6, false, false))
    );
    assert_eq!(
        scan_line(b"a XYZZY \"x\" {1}\r\n", LOGIN).map(|s| s.literal),
        Ok(lit(1, true, false))
    );
    assert_eq!(
        scan_line(b"a LOGIN ~{1}\r\n", LOGIN),
        Err(SyntaxError::Literal8NotAllowed)
    );
}

#[test]
fn tokens_are_reported() {
    let mut seen = Vec::new();
    let line = b"a FETCH 1 (BODY[HEADER.FIELDS (\"FROM\")]<0.10>) {2}\r\n";
    scan_tokens(line, IMAP, |t| {
        seen.push(match t {
            Token::Atom(a) => a.escape_ascii().to_string(),
            Token::Quoted(q) => format!("\"{}\"", q.escape_ascii()),
            Token::Literal(l) => format!("{{{}}}", l.len),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
        })
    })
    .unwrap();
    assert_eq!(
        seen,
        [
            "1",
            "(",
            "BODY[HEADER.FIELDS",
            "(",
            "\"FROM\"",
            ")",
            "]<0.10>",
            ")",
            "{2}"
        ]
    );
}

#[test]
fn classification_comes_from_the_same_parse() {
    let c = command_line(b"x UID fetch 1 (FLAGS)\r\n").unwrap();
    assert_eq!(
        (c.tag, c.name, c.uid),
        (&b"x"[..], CommandName::Fetch, true)
    );
    assert_eq!(c.args, b"1 (FLAGS)");
    assert_eq!(command_line(b"a NOOP{5}\r\n"), None);
    assert_eq!(command_line(b"a] NOOP\r\n"), None);
}

#[test]
fn known_command_modes_match_the_full_table() {
    for &(name, wire, _) in CommandName::ALL.iter() {
        for uid in [false, true] {
            for dialect in [Dialect::Imap, Dialect::Login] {
                let wire = if name == CommandName::Other {
                    &b"XYZZY"[..]
                } else {
                    wire
                };
                assert_eq!(
                    mode_of(dialect, uid, name, wire),
                    mode_by_name(dialect, uid, wire),
                    "{name:?} uid={uid}"
                );
            }
        }
    }
}
