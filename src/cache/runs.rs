//! A list of UIDs by message number, kept as runs: consecutive messages with consecutive UIDs
//! are one run, and so are consecutive messages whose UIDs are not known. A mailbox of 10,000
//! messages with a few hundred expunged over the years is a few hundred runs (8 bytes each),
//! not 40 KB per session, and the map lives as long as the session keeps the mailbox selected.
//!
//! It behaves exactly as a `Vec<u32>` with 0 for "not known" (the tests check it against one);
//! each operation costs a pass over the runs.

/// Consecutive messages: UIDs `first`, `first + 1`, ... or, with `first` 0, not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// The first message's UID; 0: none of the run's UIDs is known.
    first: u32,
    /// How many messages.
    len: u32,
}

impl Run {
    fn known(&self) -> bool {
        self.first != 0
    }

    /// The UID at `off` (0 when not known).
    fn at(&self, off: u32) -> u32 {
        if self.known() { self.first + off } else { 0 }
    }

    /// `next`, placed right after this run, continues it (both unknown, or both known with
    /// consecutive UIDs): the two are one run.
    fn joins(&self, next: &Run) -> bool {
        if next.known() {
            self.known() && u64::from(self.first) + u64::from(self.len) == u64::from(next.first)
        } else {
            !self.known()
        }
    }

    /// The run without its first `skip` messages.
    fn tail(&self, skip: u32) -> Run {
        Run {
            // (A run cut to nothing is dropped: its first UID does not matter.)
            first: if self.known() && skip < self.len {
                self.first + skip
            } else {
                0
            },
            len: self.len - skip,
        }
    }
}

/// UIDs by message number (index 0 is message 1); 0 where not known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunVec {
    /// In message order.
    runs: Vec<Run>,
    /// Messages in all runs.
    len: usize,
}

impl RunVec {
    /// Messages covered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no message is covered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The run holding index `i`, and `i`'s offset in it.
    fn locate(&self, i: usize) -> Option<(usize, u32)> {
        let mut base = 0usize;
        for (r, run) in self.runs.iter().enumerate() {
            let end = base + run.len as usize;
            if i < end {
                return Some((r, (i - base) as u32));
            }
            base = end;
        }
        None
    }

    /// The UID at `i` (0 when not known or out of range).
    pub fn get(&self, i: usize) -> u32 {
        self.locate(i).map_or(0, |(r, off)| self.runs[r].at(off))
    }

    /// Appends a run, merging it into the last one where it continues it.
    fn push(&mut self, run: Run) {
        if run.len == 0 {
            return;
        }
        self.len += run.len as usize;
        if let Some(last) = self.runs.last_mut() {
            if last.joins(&run) {
                last.len += run.len;
                return;
            }
        }
        self.runs.push(run);
    }

    /// Puts `replacement` in place of run `r`.
    fn splice(&mut self, r: usize, replacement: &[Run]) {
        // In place (this runs for every EXPUNGE and every UID learned: no allocation), then the
        // runs around the replaced one are joined where they continue each other.
        let old = self.runs[r].len as usize;
        self.len = self.len - old + replacement.iter().map(|x| x.len as usize).sum::<usize>();
        let kept = replacement.iter().copied().filter(|x| x.len > 0);
        let n = kept.clone().count();
        self.runs.splice(r..=r, kept);
        let mut i = r.saturating_sub(1);
        let mut end = (r + n + 1).min(self.runs.len());
        while i + 1 < end {
            if self.runs[i].joins(&self.runs[i + 1]) {
                self.runs[i].len += self.runs[i + 1].len;
                self.runs.remove(i + 1);
                end -= 1;
            } else {
                i += 1;
            }
        }
    }

    /// Grows to `n` messages with unknown UIDs, or shrinks to `n`.
    pub fn resize(&mut self, n: usize) {
        if n < self.len {
            self.truncate(n);
        } else if n > self.len {
            self.push(Run {
                first: 0,
                len: u32::try_from(n - self.len).unwrap_or(u32::MAX),
            });
        }
    }

    /// Keeps the first `n` messages.
    pub fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        if let Some((r, off)) = self.locate(n) {
            self.runs.truncate(r + 1);
            self.runs[r].len = off;
            if off == 0 {
                self.runs.pop();
            }
            self.len = n;
        }
    }

    /// Sets the UID at `i` (within the length).
    pub fn set(&mut self, i: usize, uid: u32) {
        let Some((r, off)) = self.locate(i) else {
            return;
        };
        let run = self.runs[r];
        if run.at(off) == uid {
            return;
        }
        let before = Run {
            first: run.first,
            len: off,
        };
        let this = Run { first: uid, len: 1 };
        let after = run.tail(off + 1);
        self.splice(r, &[before, this, after]);
    }

    /// Removes the message at `i`; those after it move down.
    pub fn remove(&mut self, i: usize) {
        let Some((r, off)) = self.locate(i) else {
            return;
        };
        let run = self.runs[r];
        let before = Run {
            first: run.first,
            len: off,
        };
        self.splice(r, &[before, run.tail(off + 1)]);
    }

    /// The index of a known UID.
    pub fn position(&self, uid: u32) -> Option<usize> {
        let mut base = 0usize;
        for run in &self.runs {
            if run.known() && (run.first..=run.first + (run.len - 1)).contains(&uid) {
                return Some(base + (uid - run.first) as usize);
            }
            base += run.len as usize;
        }
        None
    }

    /// The last known UID before index `i`.
    pub fn known_before(&self, i: usize) -> Option<u32> {
        let mut base = 0usize;
        let mut found = None;
        for run in &self.runs {
            if base >= i {
                break;
            }
            let take = (run.len as usize).min(i - base) as u32;
            if run.known() && take > 0 {
                found = Some(run.first + (take - 1));
            }
            base += run.len as usize;
        }
        found
    }

    /// The first known UID after index `i`.
    pub fn known_after(&self, i: usize) -> Option<u32> {
        let mut base = 0usize;
        for run in &self.runs {
            let end = base + run.len as usize;
            if end > i + 1 && run.known() {
                let skip = (i + 1).saturating_sub(base) as u32;
                return Some(run.first + skip);
            }
            base = end;
        }
        None
    }

    /// The index and UID of the last known message.
    pub fn last_known(&self) -> Option<(usize, u32)> {
        let mut base = 0usize;
        let mut found = None;
        for run in &self.runs {
            base += run.len as usize;
            if run.known() {
                found = Some((base - 1, run.first + (run.len - 1)));
            }
        }
        found
    }

    /// The last index whose known UID is below `uid`.
    pub fn last_below(&self, uid: u32) -> Option<usize> {
        let mut base = 0usize;
        let mut found = None;
        for run in &self.runs {
            if run.known() && run.first < uid {
                let n = (uid - run.first).min(run.len);
                found = Some(base + n as usize - 1);
            }
            base += run.len as usize;
        }
        found
    }

    /// The first index whose known UID is above `uid`.
    pub fn first_above(&self, uid: u32) -> Option<usize> {
        let mut base = 0usize;
        for run in &self.runs {
            if run.known() && run.first + (run.len - 1) > uid {
                let skip = uid.saturating_sub(run.first - 1).min(run.len);
                let skip = if run.first > uid { 0 } else { skip };
                return Some(base + skip as usize);
            }
            base += run.len as usize;
        }
        None
    }

    /// Whether some message's UID is not known.
    pub fn has_unknown(&self) -> bool {
        self.runs.iter().any(|r| !r.known())
    }

    /// The known UIDs, in order.
    pub fn known(&self) -> impl Iterator<Item = u32> + '_ {
        self.runs
            .iter()
            .filter(|r| r.known())
            .flat_map(|r| r.first..=r.first + (r.len - 1))
    }

    /// The UIDs of the given indexes (sorted), 0 where not known.
    pub fn at_sorted(&self, indexes: &[usize]) -> Vec<u32> {
        let mut out = Vec::with_capacity(indexes.len());
        let (mut r, mut base) = (0usize, 0usize);
        for &i in indexes {
            while r < self.runs.len() && i >= base + self.runs[r].len as usize {
                base += self.runs[r].len as usize;
                r += 1;
            }
            out.push(match self.runs.get(r) {
                Some(run) if i >= base => run.at((i - base) as u32),
                _ => 0,
            });
        }
        out
    }

    /// Runs held (tests and memory accounting).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
#[path = "runs_tests.rs"]
mod tests;
