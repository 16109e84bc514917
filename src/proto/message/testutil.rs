//! Test helpers: assemble wire bytes into messages and parse them.

use super::*;
use crate::proto::framer::{Direction, Framer, Limits};

/// Frames `chunks` and returns `f` of every assembled message, plus the error that stopped it.
pub(crate) fn collect<T>(
    chunks: &[&[u8]],
    limits: AssembleLimits,
    mut f: impl FnMut(&Assembled<'_>) -> T,
) -> (Vec<T>, Option<AssembleError>) {
    let mut framer = Framer::new(Direction::ServerToClient, Limits::default());
    let mut out = Vec::new();
    let err = for_each_message(&mut framer, limits, chunks, |m| out.push(f(m))).err();
    (out, err)
}

/// Assembles the single message in `wire` (literals kept) and hands it to `f`.
pub(crate) fn with_msg<T>(wire: &[u8], f: impl FnOnce(&Assembled<'_>) -> T) -> T {
    with_msg_limits(wire, AssembleLimits::default(), f)
}

/// As [`with_msg`] with chosen limits (a small `keep_literal` streams literals).
pub(crate) fn with_msg_limits<T>(
    wire: &[u8],
    limits: AssembleLimits,
    f: impl FnOnce(&Assembled<'_>) -> T,
) -> T {
    let mut f = Some(f);
    let (mut out, err) = collect(&[wire], limits, |m| f.take().map(|f| f(m)));
    assert_eq!(err, None);
    assert_eq!(out.len(), 1, "exactly one message in {wire:?}");
    out.pop().flatten().expect("one message")
}
