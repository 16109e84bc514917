//! The cache stage driven by arbitrary bytes: a FETCH command line and a server answer (both
//! from the input), run once to fill and once more to be served, with the answer framed as
//! the core frames it. Must never panic, and a served answer must frame as exactly one whole
//! message. Also the FETCH request reader and the message-number map on their own.
#![no_main]

use std::time::Instant;

use imapgate::cache::rewrite::{self, Parsed};
use imapgate::cache::seqmap::SeqMap;
use imapgate::cache::{Cache, CacheConfig};
use imapgate::phases::{
    Command, CommandDecision, Completion, Outcome, Phases, ResponseDecision, ResponseMessage,
    Selected, SessionInfo, Verdict,
};
use imapgate::proto::command::CommandName;
use imapgate::proto::framer::{Direction, Framer, Limits};
use imapgate::proto::message::{AssembleLimits, for_each_message, kind};
use imapgate::session::ListenerKind;
use libfuzzer_sys::fuzz_target;

fn session() -> SessionInfo {
    let mut i = SessionInfo::new(1, "127.0.0.1:1".parse().unwrap(), ListenerKind::Plain);
    i.user = Some((*b"alice").into());
    i.upstream = Some("default".into());
    i.selected = Some(Selected {
        name: b"INBOX".to_vec(),
        uidvalidity: Some(7),
        read_only: false,
    });
    i
}

/// One round: the command, then every message of `answer`, then the tagged OK.
fn round(cache: &Cache, info: &SessionInfo, line: &[u8], answer: &[u8]) {
    let tag = line.split(|&c| c == b' ').next().unwrap_or_default();
    let cmd = Command {
        tag,
        name: CommandName::Fetch,
        uid: line.windows(4).any(|w| w.eq_ignore_ascii_case(b"UID ")),
        line,
        message: None,
    };
    if let Verdict::Now(CommandDecision::Rewrite(new)) = cache.on_command(info, &cmd) {
        assert!(new.starts_with(tag) && new.ends_with(b"\n"));
    }
    // As the session core asks after the command chain: only these kinds are shown.
    let listening = cache.listening(info);
    assert!(cache.subscriptions().contains(listening));
    let mut framer = Framer::new(Direction::ServerToClient, Limits::default());
    let limits = AssembleLimits {
        max_bytes: 1 << 16,
        keep_literal: u64::MAX,
    };
    let _ = for_each_message(&mut framer, limits, &[answer], |m| {
        let Some(first) = m.lines.first() else { return };
        let kinds = kind(first).kinds();
        if !listening.intersects(kinds) || !cache.on_response_start(info, kinds, first) {
            return;
        }
        let msg = ResponseMessage {
            kind: kinds,
            bytes: &[],
            streamed: false,
            assembled: Some(m),
        };
        if let ResponseDecision::Rewrite(bytes) = cache.on_response(info, &msg) {
            // A rewrite is one whole message.
            let mut f = Framer::new(Direction::ServerToClient, Limits::default());
            let mut n = 0;
            let whole = for_each_message(&mut f, limits, &[&bytes], |_| n += 1).is_ok();
            assert!(whole && n == 1 && f.at_message_boundary(), "{bytes:?}");
        }
    });
    cache.on_tagged(
        info,
        &Completion {
            tag,
            name: CommandName::Fetch,
            uid: cmd.uid,
            outcome: Outcome::Ok,
            code: None,
            started: Instant::now(),
            at: Instant::now(),
            local: false,
        },
    );
    let _ = cache.listening(info);
}

fuzz_target!(|data: &[u8]| {
    if let Parsed::Fetch(req) = rewrite::parse_request(data) {
        let line = rewrite::upstream_line(&req);
        assert!(line.starts_with(&req.tag));
    }
    let _ = rewrite::expand_set(data, 1000);
    let mut map = SeqMap::default();
    for pair in data.chunks(3) {
        let (op, n) = (pair[0] % 5, u32::from(*pair.get(1).unwrap_or(&1)));
        match op {
            0 => map.learn(n, u32::from(*pair.get(2).unwrap_or(&1))),
            1 => map.expunge(n),
            2 => map.exists(n),
            3 => map.vanished(&[n]),
            _ => {
                let _ = map.uid(n);
            }
        }
    }
    // The stage: the first line is the command, the rest the server's answer.
    let Some(nl) = data.iter().position(|&c| c == b'\n') else {
        return;
    };
    let (line, answer) = data.split_at(nl + 1);
    let cache = Cache::new(&CacheConfig::default());
    let info = session();
    round(&cache, &info, line, answer);
    round(&cache, &info, line, answer);
});
