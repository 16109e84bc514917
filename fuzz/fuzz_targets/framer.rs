//! Frames arbitrary bytes in arbitrary chunks, both directions, with sync literals accepted or
//! refused: must never panic, and must frame exactly as the same bytes given whole. Server
//! side, the runs of `Framer::pass_run` (checked against `next` run by run) frame the same too.
#![no_main]

use imapgate::proto::framer::{Direction, Framer, Limits, RunStep};
use imapgate::proto::message::is_numbered;
use imapgate::proto::replay::{cycle_chunks, replay, replay_runs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&cut_seed, input)) = rest.split_first() else {
        return;
    };
    let dir = if flags & 1 == 0 {
        Direction::ClientToServer
    } else {
        Direction::ServerToClient
    };
    let accept = flags & 2 != 0;
    let limits = Limits {
        max_line: 64 + usize::from(flags >> 2),
        max_literal: 300,
    };
    let (whole, err) = replay(&mut Framer::new(dir, limits), &[input], accept);
    let chunks = cycle_chunks(input, cut_seed);
    let (split, err2) = replay(&mut Framer::new(dir, limits), &chunks, accept);
    assert_eq!(whole, split);
    assert_eq!(err, err2);
    if dir == Direction::ServerToClient {
        // Numbered lines pass as the session core passes them, and other lines starting with
        // a letter end the run after them as tagged answers do; or every line passes, or lines
        // that start with the seed's byte.
        let pass = |line: &[u8]| match cut_seed % 3 {
            0 => match line {
                _ if is_numbered(line) => RunStep::Pass,
                [c, ..] if c.is_ascii_alphabetic() => RunStep::Last,
                _ => RunStep::Stop,
            },
            1 => RunStep::Pass,
            _ => (line.first() == Some(&cut_seed)).into(),
        };
        // Numbered messages pass unasked half the time, as the core lets them when no stage listens.
        let unasked = cut_seed & 0x80 != 0;
        let (runs, err3) = replay_runs(
            &mut Framer::new(dir, limits),
            &chunks,
            accept,
            unasked,
            pass,
        );
        assert_eq!(whole, runs);
        assert_eq!(err, err3);
    }
});
