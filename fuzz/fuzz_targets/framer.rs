//! Frames arbitrary bytes in arbitrary chunks, both directions, with sync literals accepted or
//! refused: must never panic, and must frame exactly as the same bytes given whole.
#![no_main]

use imapgate::proto::framer::{Direction, Framer, Limits};
use imapgate::proto::replay::{cycle_chunks, replay};
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
});
