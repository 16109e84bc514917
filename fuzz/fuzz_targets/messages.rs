//! Frames arbitrary server bytes in arbitrary chunks, assembles every message and runs every
//! message parser on it: must never panic, every reported extent must lie within the message,
//! and the results must be the same however the input was chunked.
#![no_main]

use imapgate::proto::framer::{Direction, Framer, Limits};
use imapgate::proto::message::{
    self, AString, AssembleLimits, Assembled, ParseError, Pos, Shape, Value,
};
use imapgate::proto::replay::cycle_chunks;
use libfuzzer_sys::fuzz_target;

/// Asserts that `start..end` is an extent of `m`.
fn extent(m: &Assembled<'_>, start: Pos, end: Pos) {
    assert!(start <= end, "{start} after {end}");
    assert!(m.contains(start), "{start} outside");
    assert!(m.contains(end), "{end} outside");
}

fn value(m: &Assembled<'_>, v: &Value<'_>) {
    extent(m, v.start, v.end);
    assert_eq!(v.text, m.slice(v.start, v.end));
    match &v.shape {
        Shape::Literal(l) => {
            assert!(l.index < m.literals.len());
            assert_eq!(m.literals.get(l.index).map(|b| b.len()), Some(l.len));
        }
        Shape::List { literals } => assert!(literals.end <= m.literals.len()),
        _ => {}
    }
}

fn string(m: &Assembled<'_>, s: &AString<'_>) {
    extent(m, s.start, s.end);
}

fn error(m: &Assembled<'_>, e: &ParseError) {
    match e {
        ParseError::Expected { at, .. }
        | ParseError::Trailing { at }
        | ParseError::LiteralNotKept { at, .. } => extent(m, *at, *at),
        ParseError::Shape { .. } | ParseError::LiteralLength { .. } => {}
    }
}

/// Runs every parser on `m`, checks the extents, and renders the results.
fn check(m: &Assembled<'_>) -> String {
    let first = m.first_line();
    let mut out = format!(
        "{:?}|{:?}|{:?}",
        message::kind(first),
        message::resp_code(first),
        m
    );
    let mut note = |s: String| {
        out.push('|');
        out.push_str(&s);
    };
    match message::parse_list(m) {
        Ok(l) => {
            string(m, &l.mailbox);
            if let Some(v) = &l.extended {
                value(m, v);
            }
            for i in &l.items {
                string(m, &i.tag);
                value(m, &i.value);
            }
            note(format!("{l:?}"));
        }
        Err(e) => {
            error(m, &e);
            note(format!("{e:?}"));
        }
    }
    match message::parse_lsub(m) {
        Ok(l) => note(format!("{l:?}")),
        Err(e) => error(m, &e),
    }
    match message::parse_status(m) {
        Ok(s) => {
            string(m, &s.mailbox);
            s.items.iter().for_each(|i| value(m, &i.value));
            note(format!("{s:?}"));
        }
        Err(e) => error(m, &e),
    }
    match message::parse_esearch(m) {
        Ok(s) => {
            if let Some(t) = &s.tag {
                string(m, t);
            }
            s.items.iter().for_each(|i| value(m, &i.value));
            note(format!(
                "{s:?} {:?} {:?} {:?}",
                s.min(),
                s.all(),
                s.modseq()
            ));
        }
        Err(e) => error(m, &e),
    }
    match message::parse_fetch(m) {
        Ok(f) => {
            for i in &f.items {
                extent(m, i.start, i.value.start);
                value(m, &i.value);
                let _ = i.label();
            }
            note(format!(
                "{f:?} {:?} {:?} {:?}",
                f.uid(),
                f.flags(),
                f.modseq()
            ));
        }
        Err(e) => error(m, &e),
    }
    match message::parse(m) {
        Ok(msg) => note(format!("{msg:?}")),
        Err(e) => {
            error(m, &e);
            note(format!("{e:?}"));
        }
    }
    note(format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        message::parse_search(first).map(|s| s.numbers.iter().count()),
        message::parse_exists(first),
        message::parse_expunge(first),
        message::parse_flags(first),
        message::parse_enabled(first),
        message::parse_capability(first),
        message::parse_vanished(first),
    ));
    out
}

fn run(chunks: &[&[u8]], limits: Limits, assemble: AssembleLimits) -> (Vec<String>, String) {
    let mut framer = Framer::new(Direction::ServerToClient, limits);
    let mut out = Vec::new();
    let end = message::for_each_message(&mut framer, assemble, chunks, |m| out.push(check(m)));
    (out, format!("{end:?}"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&cut_seed, input)) = rest.split_first() else {
        return;
    };
    let limits = Limits {
        max_line: 64 + usize::from(flags & 0x3f),
        max_literal: 1000,
    };
    let assemble = AssembleLimits {
        max_bytes: 2048,
        keep_literal: u64::from(flags >> 6) * 8,
    };
    let whole = run(&[input], limits, assemble);
    let chunks = cycle_chunks(input, cut_seed);
    assert_eq!(run(&chunks, limits, assemble), whole);
});
