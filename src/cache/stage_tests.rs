use super::*;
use crate::cache::CacheConfig;
use crate::phases::Selected;
use crate::proto::command::CommandName;
use crate::proto::framer::{Direction, Framer, Limits};
use crate::proto::message::{AssembleLimits, for_each_message};
use crate::session::ListenerKind;
use std::time::Instant;

fn info(id: u64, user: &[u8]) -> SessionInfo {
    let mut i = SessionInfo::new(id, "127.0.0.1:1".parse().unwrap(), ListenerKind::Plain);
    i.user = Some(user.into());
    i.upstream = Some("default".into());
    i.selected = Some(Selected {
        name: b"INBOX".to_vec(),
        uidvalidity: Some(42),
        read_only: false,
    });
    i
}

/// A FETCH (`UID FETCH` or by number, as the line says) through the stage.
fn command(cache: &Cache, info: &SessionInfo, line: &str) -> CommandDecision {
    let tag = line.split(' ').next().unwrap();
    let cmd = Command {
        tag: tag.as_bytes(),
        name: CommandName::Fetch,
        uid: line.to_ascii_uppercase().contains(" UID FETCH "),
        line: line.as_bytes(),
        message: None,
    };
    let d = match cache.on_command(info, &cmd) {
        Verdict::Now(d) => d,
        Verdict::Wait(_) => panic!("the cache never waits"),
    };
    // As the core asks after every command chain.
    cache.listening(info);
    d
}

fn respond(cache: &Cache, info: &SessionInfo, bytes: &[u8]) -> Vec<u8> {
    let line_end = bytes
        .iter()
        .position(|&c| c == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    if !cache.on_response_start(info, Kinds::FETCH, &bytes[..line_end]) {
        return bytes.to_vec();
    }
    let msg = ResponseMessage {
        kind: Kinds::FETCH,
        bytes,
        streamed: false,
        assembled: None,
    };
    match cache.on_response(info, &msg) {
        ResponseDecision::Forward => bytes.to_vec(),
        ResponseDecision::Rewrite(b) => b,
        ResponseDecision::Drop => Vec::new(),
    }
}

fn tagged(cache: &Cache, info: &SessionInfo, tag: &str, outcome: Outcome) {
    cache.on_tagged(
        info,
        &Completion {
            tag: tag.as_bytes(),
            name: CommandName::Fetch,
            uid: true,
            outcome,
            code: None,
            started: Instant::now(),
            at: Instant::now(),
            local: false,
        },
    );
    cache.listening(info);
}

const COLD: &str = "a UID FETCH 7 (BODY.PEEK[HEADER] RFC822.SIZE FLAGS)\r\n";
const ANSWER: &[u8] =
    b"* 3 FETCH (UID 7 RFC822.SIZE 120 FLAGS (\\Seen) BODY[HEADER] {12}\r\nSubject: x\r\n)\r\n";

fn filled() -> (Cache, SessionInfo) {
    let cache = Cache::new(&CacheConfig::default());
    let s = info(1, b"alice");
    assert_eq!(command(&cache, &s, COLD), CommandDecision::Forward);
    assert_eq!(respond(&cache, &s, ANSWER), ANSWER);
    tagged(&cache, &s, "a", Outcome::Ok);
    (cache, s)
}

#[test]
fn fill_then_serve_with_items_put_back_in_order() {
    let (cache, s) = filled();
    let d = command(
        &cache,
        &s,
        "b UID FETCH 7 (BODY.PEEK[HEADER] RFC822.SIZE FLAGS)\r\n",
    );
    assert_eq!(
        d,
        CommandDecision::Rewrite(b"b UID FETCH 7 (FLAGS)\r\n".to_vec())
    );
    let got = respond(
        &cache,
        &s,
        b"* 3 FETCH (UID 7 FLAGS (\\Seen \\Flagged))\r\n",
    );
    assert_eq!(
        got,
        b"* 3 FETCH (UID 7 RFC822.SIZE 120 FLAGS (\\Seen \\Flagged) BODY[HEADER] {12}\r\nSubject: x\r\n)\r\n"
    );
    tagged(&cache, &s, "b", Outcome::Ok);
    assert_eq!(cache.store().metrics.hits.get(), 2);
}

#[test]
fn non_peek_asks_for_the_substitute_and_keeps_implicit_flags() {
    let (cache, s) = filled();
    let d = command(&cache, &s, "b UID FETCH 7 (BODY[HEADER])\r\n");
    assert_eq!(
        d,
        CommandDecision::Rewrite(b"b UID FETCH 7 (BODY[]<0.1>)\r\n".to_vec())
    );
    let got = respond(
        &cache,
        &s,
        b"* 3 FETCH (UID 7 FLAGS (\\Seen) BODY[]<0> {1}\r\nR)\r\n",
    );
    assert_eq!(
        got,
        b"* 3 FETCH (UID 7 FLAGS (\\Seen) BODY[HEADER] {12}\r\nSubject: x\r\n)\r\n"
    );
}

#[test]
fn no_fill_from_a_failed_or_shared_command() {
    let cache = Cache::new(&CacheConfig::default());
    let s = info(1, b"alice");
    command(&cache, &s, COLD);
    respond(&cache, &s, ANSWER);
    tagged(&cache, &s, "a", Outcome::No);
    assert_eq!(command(&cache, &s, COLD), CommandDecision::Forward);
    respond(&cache, &s, ANSWER);
    // A command started meanwhile: the answer may be anyone's.
    command(&cache, &s, "x UID FETCH 7 (FLAGS)\r\n");
    tagged(&cache, &s, "a", Outcome::Ok);
    tagged(&cache, &s, "x", Outcome::Ok);
    assert_eq!(command(&cache, &s, COLD), CommandDecision::Forward);
}

#[test]
fn other_users_mailboxes_and_missing_items_miss() {
    let (cache, _) = filled();
    let bob = info(2, b"bob");
    assert_eq!(command(&cache, &bob, COLD), CommandDecision::Forward);
    let mut new_uv = info(3, b"alice");
    new_uv.selected.as_mut().unwrap().uidvalidity = Some(43);
    assert_eq!(command(&cache, &new_uv, COLD), CommandDecision::Forward);
    let s = info(4, b"alice");
    let more = "c UID FETCH 7:8 (BODY.PEEK[HEADER] RFC822.SIZE FLAGS)\r\n";
    assert_eq!(command(&cache, &s, more), CommandDecision::Forward);
    tagged(&cache, &s, "c", Outcome::Ok);
    let other_item = "d UID FETCH 7 (BODY.PEEK[TEXT])\r\n";
    assert_eq!(command(&cache, &s, other_item), CommandDecision::Forward);
}

#[test]
fn an_expunged_uid_gets_nothing_and_unrelated_answers_pass() {
    let (cache, s) = filled();
    let d = command(&cache, &s, "b UID FETCH 7 (RFC822.SIZE)\r\n");
    assert!(matches!(d, CommandDecision::Rewrite(_)));
    let unsolicited = b"* 9 FETCH (UID 12 FLAGS ())\r\n";
    assert_eq!(respond(&cache, &s, unsolicited), unsolicited);
    tagged(&cache, &s, "b", Outcome::Ok);
    assert_eq!(cache.store().metrics.hits.get(), 0);
}

#[test]
fn fill_from_an_answer_split_at_every_byte() {
    for at in 0..=ANSWER.len() {
        let cache = Cache::new(&CacheConfig::default());
        let s = info(1, b"alice");
        command(&cache, &s, COLD);
        let mut framer = Framer::new(Direction::ServerToClient, Limits::default());
        let limits = AssembleLimits {
            max_bytes: 4096,
            keep_literal: u64::MAX,
        };
        let chunks: [&[u8]; 2] = [&ANSWER[..at], &ANSWER[at..]];
        let mut seen = 0;
        for_each_message(&mut framer, limits, &chunks, |m| {
            seen += 1;
            assert!(cache.on_response_start(&s, Kinds::FETCH, m.lines[0]));
            let msg = ResponseMessage {
                kind: Kinds::FETCH,
                bytes: &[],
                streamed: false,
                assembled: Some(m),
            };
            assert_eq!(cache.on_response(&s, &msg), ResponseDecision::Forward);
        })
        .unwrap();
        assert_eq!(seen, 1);
        tagged(&cache, &s, "a", Outcome::Ok);
        let d = command(
            &cache,
            &s,
            "b UID FETCH 7 (BODY.PEEK[HEADER] RFC822.SIZE)\r\n",
        );
        assert!(matches!(d, CommandDecision::Rewrite(_)), "split at {at}");
    }
}

#[test]
fn items_over_the_limit_are_not_kept() {
    let cache = Cache::new(&CacheConfig {
        max_item_bytes: 20,
        ..CacheConfig::default()
    });
    let s = info(1, b"alice");
    command(&cache, &s, COLD);
    respond(&cache, &s, ANSWER);
    tagged(&cache, &s, "a", Outcome::Ok);
    let size_only = "b UID FETCH 7 (RFC822.SIZE)\r\n";
    assert!(matches!(
        command(&cache, &s, size_only),
        CommandDecision::Rewrite(_)
    ));
    tagged(&cache, &s, "b", Outcome::Ok);
    assert_eq!(command(&cache, &s, COLD), CommandDecision::Forward);
}

#[test]
fn default_order_is_dovecots() {
    use super::plan::default_order;
    let Parsed::Fetch(req) = rewrite::parse_request(
        b"a UID FETCH 1 (BODY.PEEK[HEADER] FLAGS ENVELOPE INTERNALDATE UID)\r\n",
    ) else {
        panic!()
    };
    let labels = [
        "BODY[HEADER]".to_owned(),
        "ENVELOPE".into(),
        "INTERNALDATE".into(),
    ];
    assert_eq!(
        default_order(&req, &labels),
        [
            "UID",
            "FLAGS",
            "INTERNALDATE",
            "FLAGS",
            "MODSEQ",
            "BODY[HEADER]",
            "ENVELOPE",
            "UID"
        ]
    );
}

#[test]
fn eviction_never_breaks_a_served_command() {
    let (cache, s) = filled();
    let d = command(&cache, &s, "b UID FETCH 7 (BODY.PEEK[HEADER] FLAGS)\r\n");
    assert!(matches!(d, CommandDecision::Rewrite(_)));
    cache.store().clear();
    let got = respond(&cache, &s, b"* 3 FETCH (UID 7 FLAGS ())\r\n");
    assert_eq!(
        got,
        b"* 3 FETCH (UID 7 FLAGS () BODY[HEADER] {12}\r\nSubject: x\r\n)\r\n"
    );
    tagged(&cache, &s, "b", Outcome::Ok);
    // Gone now: the next one goes upstream whole.
    assert_eq!(
        command(&cache, &s, "c UID FETCH 7 (BODY.PEEK[HEADER] FLAGS)\r\n"),
        CommandDecision::Forward
    );
}

/// A one-line untagged message through the stage (EXISTS, EXPUNGE, VANISHED).
fn untagged(cache: &Cache, info: &SessionInfo, kind: Kinds, line: &[u8]) {
    assert!(
        !cache.on_response_start(info, kind, line),
        "never assembled"
    );
}

#[test]
fn a_fetch_by_number_is_served_once_the_numbers_are_known_and_follows_expunges() {
    let (cache, s) = filled();
    // The fill's answer taught message 3 = UID 7; another UID FETCH teaches 4 = UID 9.
    command(&cache, &s, "c UID FETCH 9 (FLAGS)\r\n");
    respond(&cache, &s, b"* 4 FETCH (UID 9 FLAGS ())\r\n");
    tagged(&cache, &s, "c", Outcome::Ok);
    let d = command(&cache, &s, "d FETCH 3 (BODY.PEEK[HEADER] RFC822.SIZE)\r\n");
    assert_eq!(d, CommandDecision::Rewrite(b"d FETCH 3 (UID)\r\n".to_vec()));
    // The UID the proxy added is not shown.
    let got = respond(&cache, &s, b"* 3 FETCH (UID 7)\r\n");
    assert_eq!(
        got,
        b"* 3 FETCH (RFC822.SIZE 120 BODY[HEADER] {12}\r\nSubject: x\r\n)\r\n"
    );
    tagged(&cache, &s, "d", Outcome::Ok);
    // Message 1 goes: UID 7 is now message 2, and 3 is unknown.
    untagged(&cache, &s, Kinds::EXPUNGE, b"* 1 EXPUNGE\r\n");
    assert!(matches!(
        command(&cache, &s, "e FETCH 2 (RFC822.SIZE)\r\n"),
        CommandDecision::Rewrite(_)
    ));
    tagged(&cache, &s, "e", Outcome::Ok);
    assert_eq!(
        command(&cache, &s, "f FETCH 3 (RFC822.SIZE)\r\n"),
        CommandDecision::Forward
    );
    tagged(&cache, &s, "f", Outcome::Ok);
    // Another mailbox: nothing known.
    let select = Command {
        tag: b"g",
        name: CommandName::Select,
        uid: false,
        line: b"g SELECT INBOX\r\n",
        message: None,
    };
    let _ = cache.on_command(&s, &select);
    cache.listening(&s);
    tagged(&cache, &s, "g", Outcome::Ok);
    assert_eq!(
        command(&cache, &s, "h FETCH 2 (RFC822.SIZE)\r\n"),
        CommandDecision::Forward
    );
}

#[test]
fn a_gap_below_an_answered_uid_is_remembered() {
    let cache = Cache::new(&CacheConfig::default());
    let s = info(1, b"alice");
    let cold = "a UID FETCH 5:8 (RFC822.SIZE)\r\n";
    assert_eq!(command(&cache, &s, cold), CommandDecision::Forward);
    respond(&cache, &s, b"* 1 FETCH (UID 5 RFC822.SIZE 10)\r\n");
    respond(&cache, &s, b"* 2 FETCH (UID 7 RFC822.SIZE 11)\r\n");
    tagged(&cache, &s, "a", Outcome::Ok);
    // 6 is gone for good; 8 may still come.
    assert!(matches!(
        command(&cache, &s, "b UID FETCH 5:7 (RFC822.SIZE)\r\n"),
        CommandDecision::Rewrite(_)
    ));
    tagged(&cache, &s, "b", Outcome::Ok);
    assert_eq!(
        command(&cache, &s, "c UID FETCH 5:8 (RFC822.SIZE)\r\n"),
        CommandDecision::Forward
    );
    tagged(&cache, &s, "c", Outcome::Ok);
    // With CHANGEDSINCE, unanswered UIDs say nothing.
    let c2 = Cache::new(&CacheConfig::default());
    command(
        &c2,
        &s,
        "a UID FETCH 5:7 (RFC822.SIZE) (CHANGEDSINCE 3)\r\n",
    );
    respond(&c2, &s, b"* 2 FETCH (UID 7 RFC822.SIZE 11 MODSEQ (4))\r\n");
    tagged(&c2, &s, "a", Outcome::Ok);
    assert_eq!(
        command(&c2, &s, "b UID FETCH 5:7 (RFC822.SIZE)\r\n"),
        CommandDecision::Forward
    );
}

#[test]
fn partials_are_cut_and_a_second_answer_for_a_uid_passes() {
    let (cache, s) = filled();
    let d = command(
        &cache,
        &s,
        "b UID FETCH 7 (BODY.PEEK[HEADER]<3.4>) (CHANGEDSINCE 1)\r\n",
    );
    assert_eq!(
        d,
        CommandDecision::Rewrite(b"b UID FETCH 7 (UID) (CHANGEDSINCE 1)\r\n".to_vec())
    );
    let got = respond(&cache, &s, b"* 3 FETCH (UID 7 MODSEQ (5))\r\n");
    assert_eq!(
        got,
        b"* 3 FETCH (UID 7 MODSEQ (5) BODY[HEADER]<3> {4}\r\nject)\r\n"
    );
    // A flag change the server reports for the same UID afterwards is passed as it is.
    let update = b"* 3 FETCH (UID 7 MODSEQ (6) FLAGS (\\Seen))\r\n";
    assert_eq!(respond(&cache, &s, update), update);
    tagged(&cache, &s, "b", Outcome::Ok);
    assert_eq!(cache.store().metrics.hits.get(), 1);
}

#[test]
fn pipelined_uid_fetches_fill_and_are_served_by_uid() {
    let cache = Cache::new(&CacheConfig::default());
    let s = info(1, b"alice");
    let mut at = s.clone();
    // Three FETCHes sent at once, each naming its own UID.
    for (i, tag) in ["a", "b", "c"].iter().enumerate() {
        at.in_flight = i;
        let line = format!("{tag} UID FETCH {} (BODY.PEEK[])\r\n", 5 + i);
        assert_eq!(command(&cache, &at, &line), CommandDecision::Forward);
    }
    for (seq, uid) in [(1, 5), (2, 6), (3, 7)] {
        let answer = format!("* {seq} FETCH (UID {uid} BODY[] {{3}}\r\nm{uid}!)\r\n");
        respond(&cache, &s, answer.as_bytes());
    }
    for tag in ["a", "b", "c"] {
        tagged(&cache, &s, tag, Outcome::Ok);
    }
    // Again, pipelined: all three served, each answer with its own message.
    for (i, tag) in ["d", "e", "f"].iter().enumerate() {
        at.in_flight = i;
        let line = format!("{tag} UID FETCH {} (BODY.PEEK[])\r\n", 5 + i);
        let want = format!("{tag} UID FETCH {} (UID)\r\n", 5 + i);
        assert_eq!(
            command(&cache, &at, &line),
            CommandDecision::Rewrite(want.into_bytes())
        );
    }
    for (seq, uid) in [(1, 5), (2, 6), (3, 7)] {
        let got = respond(
            &cache,
            &s,
            format!("* {seq} FETCH (UID {uid})\r\n").as_bytes(),
        );
        let want = format!("* {seq} FETCH (UID {uid} BODY[] {{3}}\r\nm{uid}!)\r\n");
        assert_eq!(got, want.as_bytes());
    }
    for tag in ["d", "e", "f"] {
        tagged(&cache, &s, tag, Outcome::Ok);
    }
    // Two in flight naming the same UID: the second is left alone, and a command the cache
    // does not follow in flight keeps a later FETCH from being acted on.
    at.in_flight = 0;
    assert!(matches!(
        command(&cache, &at, "g UID FETCH 5 (BODY.PEEK[])\r\n"),
        CommandDecision::Rewrite(_)
    ));
    at.in_flight = 1;
    assert_eq!(
        command(&cache, &at, "h UID FETCH 5:6 (BODY.PEEK[])\r\n"),
        CommandDecision::Forward
    );
    at.in_flight = 2;
    assert_eq!(
        command(&cache, &at, "i UID FETCH 7 (BODY.PEEK[])\r\n"),
        CommandDecision::Forward
    );
}

#[test]
fn a_flag_change_before_the_answer_does_not_set_the_order() {
    let cache = Cache::new(&CacheConfig::default());
    let s = info(1, b"alice");
    command(&cache, &s, COLD);
    respond(&cache, &s, b"* 3 FETCH (UID 7 FLAGS (\\Deleted))\r\n");
    respond(&cache, &s, ANSWER);
    tagged(&cache, &s, "a", Outcome::Ok);
    command(
        &cache,
        &s,
        "b UID FETCH 7 (BODY.PEEK[HEADER] RFC822.SIZE FLAGS)\r\n",
    );
    // The answer's order, learned from the real answer: RFC822.SIZE before FLAGS.
    let got = respond(&cache, &s, b"* 3 FETCH (UID 7 FLAGS ())\r\n");
    assert_eq!(
        got,
        b"* 3 FETCH (UID 7 RFC822.SIZE 120 FLAGS () BODY[HEADER] {12}\r\nSubject: x\r\n)\r\n"
    );
}

#[test]
fn an_idling_session_keeps_nothing_and_other_commands_create_nothing() {
    let cache = Cache::new(&CacheConfig::default());
    let s = info(1, b"alice");
    let plain = |tag: &'static str, name, line: &'static str| Command {
        tag: tag.as_bytes(),
        name,
        uid: false,
        line: line.as_bytes(),
        message: None,
    };
    let _ = cache.on_command(&s, &plain("n", CommandName::Noop, "n NOOP\r\n"));
    cache.listening(&s);
    assert_eq!(cache.followed(), 0);
    let _ = cache.on_command(&s, &plain("s", CommandName::Select, "s SELECT INBOX\r\n"));
    cache.listening(&s);
    tagged(&cache, &s, "s", Outcome::Ok);
    assert_eq!(cache.followed(), 1);
    let _ = cache.on_command(&s, &plain("i", CommandName::Idle, "i IDLE\r\n"));
    cache.listening(&s);
    assert_eq!(cache.followed(), 0);
    // A FETCH in flight keeps its session's state through an IDLE pipelined behind it.
    command(&cache, &s, COLD);
    let mut busy = s.clone();
    busy.in_flight = 1;
    let _ = cache.on_command(&busy, &plain("j", CommandName::Idle, "j IDLE\r\n"));
    cache.listening(&busy);
    assert_eq!(cache.followed(), 1);
}

#[test]
fn a_fetch_by_number_in_a_cold_mailbox_fills_lazily_then_is_served() {
    let cache = Cache::new(&CacheConfig::default());
    let s = info(1, b"alice");
    let line = "a FETCH 3 (UID BODY.PEEK[HEADER] RFC822.SIZE)\r\n";
    assert_eq!(command(&cache, &s, line), CommandDecision::Forward);
    // The answer settles the pending plan into a fill, which keeps the items.
    assert_eq!(respond(&cache, &s, ANSWER), ANSWER);
    tagged(&cache, &s, "a", Outcome::Ok);
    assert_eq!(cache.store().metrics.misses.get(), 2);
    let line = "b FETCH 3 (UID BODY.PEEK[HEADER] RFC822.SIZE)\r\n";
    assert_eq!(
        command(&cache, &s, line),
        CommandDecision::Rewrite(b"b FETCH 3 (UID)\r\n".to_vec())
    );
    let got = respond(&cache, &s, b"* 3 FETCH (UID 7)\r\n");
    assert_eq!(
        got,
        b"* 3 FETCH (UID 7 RFC822.SIZE 120 BODY[HEADER] {12}\r\nSubject: x\r\n)\r\n"
    );
    assert_eq!(cache.store().metrics.hits.get(), 2);
    tagged(&cache, &s, "b", Outcome::Ok);
    // A pending plan spoiled by the command behind it keeps nothing.
    let cache = Cache::new(&CacheConfig::default());
    command(&cache, &s, "c FETCH 3 (BODY.PEEK[HEADER])\r\n");
    let mut busy = s.clone();
    busy.in_flight = 1;
    command(&cache, &busy, "d FETCH 4 (UID BODY.PEEK[HEADER])\r\n");
    assert_eq!(respond(&cache, &busy, ANSWER), ANSWER);
    tagged(&cache, &busy, "c", Outcome::Ok);
    tagged(&cache, &s, "d", Outcome::Ok);
    assert_eq!(cache.store().metrics.misses.get(), 0);
}

#[test]
fn numbers_are_not_followed_in_a_mailbox_that_holds_nothing() {
    let cache = Cache::new(&CacheConfig::default());
    let s = info(1, b"alice");
    // Nothing cached for INBOX, a client fetching by number: followed while its FETCH may
    // fill, and not after.
    assert_eq!(
        command(&cache, &s, "a FETCH 3 (UID FLAGS)\r\n"),
        CommandDecision::Forward
    );
    assert_eq!(cache.listening(&s), cache.subscriptions());
    respond(&cache, &s, b"* 3 FETCH (UID 7 FLAGS ())\r\n");
    tagged(&cache, &s, "a", Outcome::Ok);
    assert_eq!(cache.listening(&s), Kinds::NONE);
    // (The core shows it nothing now; shown anyway, it learns nothing.)
    respond(&cache, &s, b"* 2 FETCH (UID 6 FLAGS ())\r\n");
    // Another session of the same user fills UID 7; this one then misses an expunge it does not
    // listen to: message 3 is UID 8 now.
    let other = info(2, b"alice");
    command(&cache, &other, COLD);
    respond(&cache, &other, ANSWER);
    tagged(&cache, &other, "a", Outcome::Ok);
    assert!(cache.store().metrics.misses.get() > 0, "filled");
    // Message 3 is not taken for UID 7: the numbers are followed from here on, afresh.
    assert_eq!(
        command(&cache, &s, "b FETCH 3 (BODY.PEEK[HEADER] RFC822.SIZE)\r\n"),
        CommandDecision::Forward
    );
    assert_eq!(cache.listening(&s), cache.subscriptions());
    respond(
        &cache,
        &s,
        b"* 3 FETCH (UID 8 RFC822.SIZE 9 BODY[HEADER] {2}\r\n\r\n)\r\n",
    );
    tagged(&cache, &s, "b", Outcome::Ok);
    // Learned while followed (a UID FETCH: followed from here on): message 2 is UID 7.
    command(&cache, &s, "c UID FETCH 7 (FLAGS)\r\n");
    respond(&cache, &s, b"* 2 FETCH (UID 7 FLAGS ())\r\n");
    tagged(&cache, &s, "c", Outcome::Ok);
    assert!(matches!(
        command(&cache, &s, "d FETCH 2 (RFC822.SIZE)\r\n"),
        CommandDecision::Rewrite(_)
    ));
}

#[test]
fn a_client_syncing_by_uid_fills_by_number_in_a_mailbox_that_holds_nothing() {
    let cache = Cache::new(&CacheConfig::default());
    let s = info(1, b"alice");
    command(&cache, &s, "a UID FETCH 1:* (FLAGS)\r\n");
    respond(&cache, &s, b"* 1 FETCH (UID 4 FLAGS ())\r\n");
    tagged(&cache, &s, "a", Outcome::Ok);
    assert_eq!(cache.listening(&s), cache.subscriptions());
    command(&cache, &s, "b FETCH 1 (RFC822.SIZE)\r\n");
    respond(&cache, &s, b"* 1 FETCH (RFC822.SIZE 10)\r\n");
    tagged(&cache, &s, "b", Outcome::Ok);
    assert!(matches!(
        command(&cache, &s, "c UID FETCH 4 (RFC822.SIZE)\r\n"),
        CommandDecision::Rewrite(_)
    ));
}
