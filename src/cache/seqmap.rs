//! The sequence numbers of a session's selected mailbox, as far as the session has seen them:
//! which UID each message number stands for, so a FETCH by sequence number can be served.
//!
//! Learned from every FETCH answer that carries a UID (a `UID FETCH` always does), kept right
//! through `* n EXISTS`, `* n EXPUNGE` and `* VANISHED` (RFC 9051 §7.4.1, RFC 7162 §3.2.10),
//! and forgotten when another mailbox is selected. Once every message's UID is known (after a
//! sync client's `UID FETCH 1:* (FLAGS)`), the map also says which UIDs of any set exist, `*`
//! included ([`SeqMap::existing`]). Whatever cannot be followed exactly (a
//! VANISHED UID whose number is unknown, a count that shrinks) forgets the map rather than
//! guess: a wrong entry would show one message's content as another's. Served answers are still
//! checked against the UID the server returns.

use super::runs::RunVec;

/// Most messages followed per session.
pub const MAX_TRACKED: usize = 1_000_000;

/// Message number → UID for the selected mailbox.
#[derive(Debug, Default)]
pub struct SeqMap {
    /// Message `n`'s UID at index `n - 1`, 0 when not seen; kept as runs. Only as long as the
    /// highest message number seen: messages after it are not stored.
    uids: RunVec,
    /// The number of messages (the last `* n EXISTS`, less the expunges since), when known.
    exists: Option<u32>,
}

impl SeqMap {
    /// Forgets everything (another mailbox, or something not followed).
    pub fn clear(&mut self) {
        self.uids = RunVec::default();
        self.exists = None;
    }

    /// `* seq FETCH (UID uid ...)`.
    pub fn learn(&mut self, seq: u32, uid: u32) {
        let Some(i) = (seq as usize).checked_sub(1) else {
            return;
        };
        if i >= MAX_TRACKED || uid == 0 {
            return;
        }
        if i < self.uids.len() && self.uids.get(i) == uid {
            // Known already (most FETCH answers are about messages the map has): the map is
            // kept consistent at every change, so there is nothing to check again.
            return;
        }
        if i >= self.uids.len() {
            self.uids.resize(i + 1);
        }
        // UIDs ascend with message numbers: an entry that breaks that means the map is wrong.
        let before = self.uids.known_before(i);
        let after = self.uids.known_after(i);
        if before.is_some_and(|b| b >= uid)
            || after.is_some_and(|a| a <= uid)
            || self.exists.is_some_and(|n| seq > n)
        {
            self.clear();
            self.uids.resize(i + 1);
        }
        self.uids.set(i, uid);
    }

    /// `* n EXISTS`.
    pub fn exists(&mut self, n: u32) {
        if (n as usize) < self.uids.len() {
            // Only an expunge makes a mailbox smaller, and it is announced as such.
            self.clear();
        }
        self.exists = Some(n);
    }

    /// `* n EXPUNGE`.
    pub fn expunge(&mut self, seq: u32) {
        if let Some(i) = (seq as usize).checked_sub(1) {
            if i < self.uids.len() {
                self.uids.remove(i);
            }
        }
        self.exists = self.exists.and_then(|n| n.checked_sub(1));
    }

    /// `* VANISHED uids` (not `EARLIER`): those messages are gone, and the numbers after each
    /// move down.
    pub fn vanished(&mut self, uids: &[u32]) {
        for &uid in uids {
            if let Some(i) = self.uids.position(uid) {
                self.uids.remove(i);
                self.exists = self.exists.and_then(|n| n.checked_sub(1));
                continue;
            }
            // Whether it was in the mailbox is not known: nor is the count.
            self.exists = None;
            match self.uids.last_known() {
                // Above every known UID: after the stored numbers, or one of the unknown ones
                // at the end; drop those.
                Some((at, last)) if uid > last => self.uids.truncate(at + 1),
                None => self.clear(),
                // Between known UIDs with unknown numbers between them: which one is not known.
                Some(_) => {
                    let below = self.uids.last_below(uid);
                    let above = self.uids.first_above(uid);
                    let gap = match (below, above) {
                        (Some(b), Some(a)) => a - b - 1,
                        (None, Some(a)) => a,
                        _ => 1,
                    };
                    if gap > 0 {
                        self.clear();
                    }
                    // No room between them: the UID was not in the mailbox this map knows.
                }
            }
        }
    }

    /// The UID of message `seq`, if known.
    pub fn uid(&self, seq: u32) -> Option<u32> {
        let i = (seq as usize).checked_sub(1)?;
        Some(self.uids.get(i)).filter(|&u| u != 0)
    }

    /// Whether every message's UID is known.
    pub fn complete(&self) -> bool {
        self.exists == Some(self.uids.len() as u32) && !self.uids.has_unknown()
    }

    /// When every message's UID is known: the UIDs of a UID set that exist, in order (`*` is
    /// the highest UID). `None` when not every UID is known or the set does not parse.
    pub fn existing(&self, set: &[u8]) -> Option<Vec<u32>> {
        if !self.complete() {
            return None;
        }
        let star = self.uids.last_known().map_or(0, |(_, u)| u);
        let ranges = super::rewrite::ranges(set, Some(star))?;
        Some(
            self.uids
                .known()
                .filter(|u| ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(u)))
                .collect(),
        )
    }

    /// The UIDs of a sequence set, when all are known and there are at most `max` (`*` is the
    /// last message, when the count is known).
    pub fn resolve(&self, set: &[u8], max: usize) -> Option<Vec<u32>> {
        // `*` is the last message only when the count is known.
        let seqs = super::rewrite::expand(set, self.exists, max)?;
        let indexes: Vec<usize> = seqs.iter().map(|&s| s as usize - 1).collect();
        let uids = self.uids.at_sorted(&indexes);
        (!uids.contains(&0)).then_some(uids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(u32, u32)]) -> SeqMap {
        let mut m = SeqMap::default();
        for &(s, u) in pairs {
            m.learn(s, u);
        }
        m
    }

    #[test]
    fn expunge_shifts_what_follows() {
        let mut m = map(&[(1, 10), (2, 11), (3, 15), (4, 20)]);
        m.expunge(2);
        assert_eq!(m.uid(1), Some(10));
        assert_eq!(m.uid(2), Some(15));
        assert_eq!(m.uid(3), Some(20));
        assert_eq!(m.uid(4), None);
        assert_eq!(m.resolve(b"1:3", 10), Some(vec![10, 15, 20]));
        assert_eq!(m.resolve(b"1:4", 10), None);
        m.expunge(9);
        assert_eq!(m.uid(3), Some(20));
    }

    #[test]
    fn vanished_known_and_unknown() {
        let mut m = map(&[(1, 10), (2, 11), (3, 15)]);
        m.vanished(&[11]);
        assert_eq!(m.resolve(b"1:2", 10), Some(vec![10, 15]));
        // Above everything known: nothing known moves.
        m.vanished(&[99]);
        assert_eq!(m.resolve(b"1:2", 10), Some(vec![10, 15]));
        // Between two known neighbours with no room: was not there.
        m.vanished(&[12]);
        assert_eq!(m.resolve(b"1:2", 10), Some(vec![10, 15]));
        // With unknown numbers between them: forget.
        let mut m = map(&[(1, 10), (4, 15)]);
        m.vanished(&[12]);
        assert_eq!(m.uid(1), None);
    }

    #[test]
    fn a_complete_map_says_which_uids_exist() {
        let mut m = map(&[(1, 10), (2, 11), (3, 15)]);
        assert_eq!(m.existing(b"1:*"), None, "the count is not known yet");
        m.exists(3);
        assert!(m.complete());
        assert_eq!(m.existing(b"1:*"), Some(vec![10, 11, 15]));
        assert_eq!(m.existing(b"12:*"), Some(vec![15]));
        assert_eq!(m.existing(b"11:14,99"), Some(vec![11]));
        assert_eq!(m.existing(b"*:12"), Some(vec![15]), "*:12 is 12:15");
        assert_eq!(m.resolve(b"2:*", 10), Some(vec![11, 15]));
        m.expunge(2);
        assert_eq!(m.existing(b"1:*"), Some(vec![10, 15]));
        m.vanished(&[15]);
        assert_eq!(m.existing(b"1:*"), Some(vec![10]));
        // A new message announced: not complete until its UID is seen.
        m.exists(2);
        assert_eq!(m.existing(b"1:*"), None);
        m.learn(2, 20);
        assert_eq!(m.existing(b"1:*"), Some(vec![10, 20]));
        // A UID whose place is not known makes the count unknown too.
        let mut m = map(&[(1, 10), (3, 15)]);
        m.exists(3);
        m.vanished(&[12]);
        assert!(!m.complete());
    }

    #[test]
    fn inconsistency_forgets() {
        let mut m = map(&[(1, 10), (2, 11)]);
        m.learn(3, 5);
        assert_eq!(m.uid(1), None);
        assert_eq!(m.uid(3), Some(5));
        let mut m = map(&[(1, 10), (2, 11)]);
        m.exists(1);
        assert_eq!(m.uid(1), None);
        let mut m = map(&[(1, 10), (2, 11)]);
        m.exists(5);
        assert_eq!(m.uid(2), Some(11));
    }
}
