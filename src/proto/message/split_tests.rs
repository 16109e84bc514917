//! A stream of real responses framed whole, split in two at every byte, and byte by byte must
//! assemble into the same messages and parse the same.

use super::testutil::collect;
use super::*;

/// A SELECT, LIST, STATUS, SEARCH and FETCH exchange's worth of server output.
fn corpus() -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let lines: [&[u8]; 22] = [
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+] Dovecot ready.\r\n",
        b"* ENABLED QRESYNC\r\n",
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n",
        b"* 3 EXISTS\r\n",
        b"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n",
        b"* VANISHED (EARLIER) 41,43:116\r\n",
        b"a2 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n",
        b"* LIST (\\HasNoChildren) \"/\" INBOX\r\n",
        b"* LIST () \"/\" {5}\r\nab cd\r\n",
        b"* LIST (\\HasNoChildren) \"/\" \"New\" (\"OLDNAME\" ({3}\r\nOld))\r\n",
        b"* STATUS {5}\r\nab cd (MESSAGES 1 APPENDLIMIT NIL)\r\n",
        b"* SEARCH 2 5 (MODSEQ 917162500)\r\n",
        b"* ESEARCH (TAG \"a4\") UID ALL 4:18,21,28\r\n",
        b"* 1 FETCH (UID 4 FLAGS (\\Seen) BODY[] {40}\r\nSubject: hi\r\n\r\n0123456789012345678901 MODSEQ (9))\r\n",
        b"* 2 FETCH (ENVELOPE (NIL {5}\r\nhe\r\nl NIL NIL NIL NIL NIL NIL NIL NIL) BODYSTRUCTURE (\"text\" \"plain\" NIL NIL {0}\r\n \"7bit\" 5 1))\r\n",
        b"* 3 FETCH (BINARY[1] ~{3}\r\n\0\x01\x02 UID 5)\r\n",
        b"* 4 FETCH (X-GM-LABELS (\\Inbox \"Muy Importante\") UID 6)\r\n",
        b"* 5 FETCH (UID 0)\r\n",
        b"* LIST garbage\r\n",
        b"+ go ahead\n",
        b"* BYE Logging out\r\n",
    ];
    for l in lines {
        out.extend_from_slice(l);
    }
    out
}

/// Every message of `chunks`, parsed and rendered, plus how the stream ended.
fn parsed(chunks: &[&[u8]], limits: AssembleLimits) -> (Vec<String>, Option<AssembleError>) {
    collect(chunks, limits, |m| {
        format!("{:?} {:?}", kind(m.first_line()), parse(m))
    })
}

fn check_every_split(limits: AssembleLimits) {
    let input = corpus();
    let whole = parsed(&[&input], limits);
    assert_eq!(whole.1, None);
    assert_eq!(whole.0.len(), 22);
    for i in 0..=input.len() {
        let (a, b) = input.split_at(i);
        assert_eq!(parsed(&[a, b], limits), whole, "split at {i}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(parsed(&bytes, limits), whole, "byte by byte");
}

#[test]
fn literals_kept() {
    check_every_split(AssembleLimits::default());
    let (msgs, _) = parsed(&[&corpus()], AssembleLimits::default());
    assert!(msgs[14].contains("Fetch"), "{}", msgs[14]);
    assert!(msgs[18].contains("Err"), "{}", msgs[18]);
}

#[test]
fn literals_streamed() {
    let limits = AssembleLimits {
        max_bytes: 4096,
        keep_literal: 4,
    };
    check_every_split(limits);
    let (msgs, _) = parsed(&[&corpus()], limits);
    // The 5-byte mailbox name was not kept; the 3-byte one was.
    assert!(msgs[9].contains("LiteralNotKept"), "{}", msgs[9]);
    assert!(msgs[10].contains("Ok(List"), "{}", msgs[10]);
    // Streamed FETCH bodies parse as they do when kept.
    let (kept, _) = parsed(&[&corpus()], AssembleLimits::default());
    assert_eq!(msgs[14..18], kept[14..18]);
}

#[test]
fn too_large_message_stops_assembly() {
    let limits = AssembleLimits {
        max_bytes: 64,
        keep_literal: 4,
    };
    let (msgs, err) = parsed(&[&corpus()], limits);
    assert_eq!(err, Some(AssembleError::TooLarge));
    assert_eq!(msgs.len(), 0);
}
