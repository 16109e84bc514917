//! Property: the proxy's view of client command boundaries (message starts, literal extents,
//! line validity), from the framer fed in arbitrary chunks, equals the independent reference
//! machine's in `imapgate::proto::reference`.
#![no_main]

use imapgate::proto::reference::{framer_marks, marks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut_seed, input)) = data.split_first() else {
        return;
    };
    // Cut points from a small pattern seeded by the first byte.
    let mut cuts = Vec::new();
    let mut at = 0;
    let mut step = usize::from(cut_seed % 19) + 1;
    while at < input.len() {
        at += step;
        cuts.push(at);
        step = step * 7 % 29 + 1;
    }
    let want = marks(input);
    let got = framer_marks(input, &cuts);
    assert_eq!(got, want, "{}", input.escape_ascii());
});
