//! Property: the stage answers exactly as it did when every FETCH was planned when it started
//! (a store whose record says every mailbox may hold entries never plans lazily), whatever
//! the mix of FETCHes, other commands, answers, expunges and completions.

use super::*;
use crate::cache::CacheConfig;
use crate::cache::key::MessageKey;
use crate::phases::Selected;
use crate::session::ListenerKind;
use proptest::prelude::*;
use std::time::Instant;

/// FETCH lines: by number and by UID, cacheable or not, ambiguous, macros.
const FETCHES: &[&str] = &[
    "FETCH 1 (BODY.PEEK[HEADER])",
    "FETCH 2 (RFC822.SIZE BODY.PEEK[HEADER])",
    "FETCH 1:2 (RFC822.SIZE)",
    "FETCH 1:3 (RFC822.SIZE BODY.PEEK[HEADER])",
    "FETCH 2 (UID RFC822.SIZE)",
    "FETCH 2 (FLAGS)",
    "FETCH 1,3 (BODYSTRUCTURE BODYSTRUCTURE)",
    "FETCH 2 ALL",
    "FETCH 2:* (RFC822.SIZE)",
    "FETCH 3 (BODY[HEADER] RFC822.SIZE)",
    "UID FETCH 7 (BODY.PEEK[HEADER] RFC822.SIZE)",
    "UID FETCH 7:9 (RFC822.SIZE)",
    "UID FETCH 1:* (FLAGS)",
];

#[derive(Debug, Clone)]
enum Event {
    /// A FETCH from [`FETCHES`].
    Fetch(usize),
    /// Another command (`STORE`, `IDLE`, `NOOP`).
    Other(CommandName),
    /// `* seq FETCH (...)`: with the UID or not, with the items or flags only.
    Answer {
        seq: u32,
        uid: u32,
        with_uid: bool,
        items: bool,
    },
    /// `* n EXPUNGE`.
    Expunge(u32),
    /// `* n EXISTS`.
    Exists(u32),
    /// The command in flight at this index (modulo) completes.
    Done { at: usize, ok: bool },
    /// A FETCH, answers for these numbers (message n = UID n + 4) and its completion.
    Round(usize, Vec<u32>),
}

/// The events a [`Event::Round`] stands for.
fn expand(events: &[Event]) -> Vec<Event> {
    let mut out = Vec::new();
    for e in events {
        let Event::Round(fetch, seqs) = e else {
            out.push(e.clone());
            continue;
        };
        out.push(Event::Fetch(*fetch));
        for &seq in seqs {
            out.push(Event::Answer {
                seq,
                uid: seq + 4,
                with_uid: true,
                items: true,
            });
        }
        out.push(Event::Done {
            at: usize::MAX,
            ok: true,
        });
    }
    out
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (0..FETCHES.len()).prop_map(Event::Fetch),
        // (Few: every one spoils the fills in flight.)
        1 => prop_oneof![
            Just(CommandName::Store),
            Just(CommandName::Idle),
            Just(CommandName::Noop)
        ]
        .prop_map(Event::Other),
        // Mostly message n = UID n + 4, so numbers get known and fills can serve.
        4 => (1u32..5, prop::option::weighted(0.2, 5u32..11), prop::bool::weighted(0.8), prop::bool::weighted(0.8))
            .prop_map(|(seq, uid, with_uid, items)| Event::Answer {
                seq,
                uid: uid.unwrap_or(seq + 4),
                with_uid,
                items,
            }),
        1 => (1u32..5).prop_map(Event::Expunge),
        1 => (1u32..6).prop_map(Event::Exists),
        8 => (0..FETCHES.len(), prop::collection::vec(1u32..5, 0..3))
            .prop_map(|(fetch, seqs)| Event::Round(fetch, seqs)),
        3 => (prop::option::weighted(0.2, 0usize..4), prop::bool::weighted(0.9))
            .prop_map(|(at, ok)| Event::Done { at: at.unwrap_or(0), ok }),
    ]
}

fn info() -> SessionInfo {
    let mut i = SessionInfo::new(1, "127.0.0.1:1".parse().unwrap(), ListenerKind::Plain);
    i.user = Some(b"alice".as_slice().into());
    i.upstream = Some("default".into());
    i.selected = Some(Selected {
        name: b"INBOX".to_vec(),
        uidvalidity: Some(42),
        read_only: false,
    });
    i
}

/// The stage's decision on `cmd`: `Forward` without asking it when it is not `shown` the
/// command, as the core does.
fn decide(cache: &Cache, info: &SessionInfo, cmd: &Command<'_>, shown: bool) -> CommandDecision {
    let d = if shown {
        match cache.on_command(info, cmd) {
            Verdict::Now(d) => d,
            Verdict::Wait(_) => panic!("the cache never waits"),
        }
    } else {
        CommandDecision::Forward
    };
    // As the core asks after every command chain (of those that change it, and more).
    cache.listening(info);
    d
}

/// What a message through the stage becomes (`None`: not assembled).
fn respond(cache: &Cache, info: &SessionInfo, kind: Kinds, bytes: &[u8]) -> Option<Vec<u8>> {
    let end = bytes
        .iter()
        .position(|&c| c == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    if !cache.on_response_start(info, kind, &bytes[..end]) {
        return None;
    }
    let msg = ResponseMessage {
        kind,
        bytes,
        streamed: false,
        assembled: None,
    };
    Some(match cache.on_response(info, &msg) {
        ResponseDecision::Forward => bytes.to_vec(),
        ResponseDecision::Rewrite(b) => b,
        ResponseDecision::Drop => Vec::new(),
    })
}

/// Everything the stage said, step by step. With `honor_shown`, the stage is shown only the
/// commands it asks for ([`Phases::commands`]), as the core does; otherwise every command.
fn run(cache: &Cache, events: &[Event], honor_shown: bool) -> Vec<String> {
    let mut s = info();
    let shown = |name: CommandName| !honor_shown || cache.commands().contains(name);
    let mut flight: Vec<(String, CommandName)> = Vec::new();
    let mut out = Vec::new();
    for (n, e) in expand(events).iter().enumerate() {
        let said = match e {
            Event::Fetch(i) => {
                let (tag, line) = (format!("t{n}"), format!("t{n} {}\r\n", FETCHES[*i]));
                s.in_flight = flight.len();
                s.commands += 1;
                let cmd = Command {
                    tag: tag.as_bytes(),
                    name: CommandName::Fetch,
                    uid: FETCHES[*i].starts_with("UID "),
                    line: line.as_bytes(),
                    message: None,
                };
                let d = decide(cache, &s, &cmd, shown(CommandName::Fetch));
                flight.push((tag, CommandName::Fetch));
                format!("{d:?}")
            }
            Event::Other(name) => {
                let tag = format!("t{n}");
                let line = format!("{tag} {name:?}\r\n").to_ascii_uppercase();
                s.in_flight = flight.len();
                s.commands += 1;
                let cmd = Command {
                    tag: tag.as_bytes(),
                    name: *name,
                    uid: false,
                    line: line.as_bytes(),
                    message: None,
                };
                let d = decide(cache, &s, &cmd, shown(*name));
                flight.push((tag, *name));
                format!("{d:?}")
            }
            Event::Answer {
                seq,
                uid,
                with_uid,
                items,
            } => {
                let id = if *with_uid {
                    format!("UID {uid} ")
                } else {
                    String::new()
                };
                let line = if *items {
                    format!(
                        "* {seq} FETCH ({id}RFC822.SIZE {} BODY[HEADER] {{12}}\r\nSubject: {uid}\r\n)\r\n",
                        100 + uid
                    )
                } else {
                    format!("* {seq} FETCH ({id}FLAGS (\\Seen))\r\n")
                };
                format!("{:?}", respond(cache, &s, Kinds::FETCH, line.as_bytes()))
            }
            Event::Expunge(n) => {
                let line = format!("* {n} EXPUNGE\r\n");
                format!("{:?}", respond(cache, &s, Kinds::EXPUNGE, line.as_bytes()))
            }
            Event::Round(..) => unreachable!("expanded"),
            Event::Exists(n) => {
                let line = format!("* {n} EXISTS\r\n");
                format!("{:?}", respond(cache, &s, Kinds::EXISTS, line.as_bytes()))
            }
            Event::Done { at, ok } => {
                if flight.is_empty() {
                    continue;
                }
                // (`usize::MAX`: the newest.)
                let at = if *at == usize::MAX {
                    flight.len() - 1
                } else {
                    at % flight.len()
                };
                let (tag, name) = flight.remove(at);
                let outcome = if *ok { Outcome::Ok } else { Outcome::No };
                if shown(name) {
                    cache.on_tagged(
                        &s,
                        &Completion {
                            tag: tag.as_bytes(),
                            name,
                            uid: false,
                            outcome,
                            code: None,
                            started: Instant::now(),
                            at: Instant::now(),
                            local: false,
                        },
                    );
                }
                cache.listening(&s);
                continue;
            }
        };
        out.push(format!("{n}: {said} (following {})", cache.followed()));
    }
    // What the store holds and counted.
    let mailbox = MailboxKey::of(&s).unwrap();
    for uid in 1..12 {
        let key = MessageKey {
            mailbox: mailbox.clone(),
            uid,
        };
        out.push(format!("uid {uid}: {:?}", cache.store().get(&key)));
    }
    let m = &cache.store().metrics;
    out.push(format!("hits {} misses {}", m.hits.get(), m.misses.get()));
    out.push(format!("followed {}", cache.followed()));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn lazy_plans_answer_as_eager_ones(events in prop::collection::vec(event(), 0..60)) {
        let lazy = Cache::new(&CacheConfig::default());
        // On equal knowledge of the numbers (a store that holds nothing would not follow them
        // at all: `narrowed_listening_*` in the stage's tests).
        lazy.follow_always.store(true, std::sync::atomic::Ordering::Relaxed);
        let eager = Cache::new(&CacheConfig::default());
        eager.store().hold_all();
        prop_assert_eq!(run(&lazy, &events, true), run(&eager, &events, true));
    }

    /// Shown only the commands it asks for, the stage answers as when shown every one.
    #[test]
    fn shown_only_what_it_asks_for_it_answers_as_shown_everything(
        events in prop::collection::vec(event(), 0..60),
        hold_all in any::<bool>(),
    ) {
        let (narrowed, shown_all) = (
            Cache::new(&CacheConfig::default()),
            Cache::new(&CacheConfig::default()),
        );
        if hold_all {
            narrowed.store().hold_all();
            shown_all.store().hold_all();
        }
        prop_assert_eq!(run(&narrowed, &events, true), run(&shown_all, &events, false));
    }
}

/// `seq_and_uid` as it was before the first-letter check (the reference).
fn seq_and_uid_reference(line: &[u8]) -> Option<(u32, u32)> {
    let rest = line.strip_prefix(b"* ")?;
    let sp = rest.iter().position(|&c| c == b' ')?;
    let seq = number(&rest[..sp])?;
    let rest = &rest[sp + 1..];
    let rest = rest
        .get(..11)
        .filter(|p| p.eq_ignore_ascii_case(b"FETCH (UID "))
        .and(rest.get(11..))?;
    let end = rest.iter().position(|c| !c.is_ascii_digit())?;
    Some((seq, number(&rest[..end])?))
}

/// First lines made of the pieces a FETCH answer's first line is made of, and others.
fn first_line() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"* ".to_vec()),
        Just(b" ".to_vec()),
        Just(b"FETCH (UID ".to_vec()),
        Just(b"fetch (uid ".to_vec()),
        Just(b"FETCH (FLAGS (\\Seen) UID ".to_vec()),
        Just(b"FETCH (UIDX ".to_vec()),
        Just(b"FeTcH (uId ".to_vec()),
        Just(b")\r\n".to_vec()),
        "[0-9]{1,11}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..4),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn seq_and_uid_reads_as_before(line in first_line()) {
        prop_assert_eq!(seq_and_uid(&line), seq_and_uid_reference(&line));
    }
}

#[test]
fn seq_and_uid_cases() {
    assert_eq!(seq_and_uid(b"* 3 FETCH (UID 7 FLAGS ())\r\n"), Some((3, 7)));
    assert_eq!(seq_and_uid(b"* 3 fetch (uid 7)\r\n"), Some((3, 7)));
    assert_eq!(seq_and_uid(b"* 3 FETCH (FLAGS () UID 7)\r\n"), None);
    assert_eq!(seq_and_uid(b"* x FETCH (UID 7)\r\n"), None);
    assert_eq!(seq_and_uid(b"* 3 FETCH (UID)\r\n"), None);
}
