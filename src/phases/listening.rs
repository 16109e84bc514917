//! [`Listening`]: which kinds of untagged message each stage wants shown in one session, now.
//!
//! A stage subscribes to kinds once ([`Phases::subscriptions`](super::Phases::subscriptions)).
//! A stage whose interest comes and goes within a session ([`Phases::narrows_listening`](super::Phases::narrows_listening))
//! says at fixed points which of them it wants from there on
//! ([`Phases::listening`](super::Phases::listening)): the cache follows message numbers only
//! while it may serve the selected mailbox, and a session it follows nothing in passes its
//! `* n FETCH`, `EXISTS` and `EXPUNGE` lines as runs, unclassified, as with no cache at all.
//! The session keeps one [`Listening`]; [`Stages`](super::Stages) fills and reads it.

use super::Kinds;

/// The kinds each stage wants shown in one session.
#[derive(Debug, Clone, Default)]
pub struct Listening {
    /// The union of `each`: a message of a kind outside it passes without any stage being asked.
    any: Kinds,
    /// Stage `i`'s kinds at index `i` (at most its subscriptions).
    each: Box<[Kinds]>,
}

impl Listening {
    /// Built from each stage's kinds, in stage order.
    pub(super) fn new(each: Box<[Kinds]>) -> Listening {
        let any = each.iter().fold(Kinds::NONE, |a, &k| a.union(k));
        Listening { any, each }
    }

    /// Sets stage `i`'s kinds.
    pub(super) fn set(&mut self, i: usize, kinds: Kinds) {
        if let Some(k) = self.each.get_mut(i) {
            *k = kinds;
        }
        self.any = self.each.iter().fold(Kinds::NONE, |a, &k| a.union(k));
    }

    /// The kinds some stage wants shown.
    pub fn any(&self) -> Kinds {
        self.any
    }

    /// Stage `i`'s kinds.
    pub(super) fn of(&self, i: usize) -> Kinds {
        self.each.get(i).copied().unwrap_or(Kinds::NONE)
    }
}
