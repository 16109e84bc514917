//! A list of UIDs by message number, kept as runs: consecutive messages with consecutive UIDs
//! are one run, and so are consecutive messages whose UIDs are not known. A mailbox of 10,000
//! messages with a few hundred expunged over the years is a few hundred runs (8 bytes each),
//! not 40 KB per session, and the map lives as long as the session keeps the mailbox selected.
//!
//! It behaves exactly as a `Vec<u32>` with 0 for "not known" (the tests check it against one).
//! Each run records where it ends (the prefix sums of the run lengths), so a message is found by
//! a binary search, not a walk: a server message reports or expunges one message by number, and
//! a session sees a stream of them. Removing a message shifts the ends after it (a tight loop);
//! setting one's UID shifts nothing.

/// Consecutive messages: UIDs `first`, `first + 1`, ... or, with `first` 0, not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// The first message's UID; 0: none of the run's UIDs is known.
    first: u32,
    /// The index after its last message: the messages in it and every run before it.
    end: u32,
}

impl Run {
    fn known(&self) -> bool {
        self.first != 0
    }

    /// The UID at `off` (0 when not known).
    fn at(&self, off: u32) -> u32 {
        if self.known() { self.first + off } else { 0 }
    }
}

/// UIDs by message number (index 0 is message 1); 0 where not known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunVec {
    /// In message order, none empty, none continuing the one before it.
    runs: Vec<Run>,
}

impl RunVec {
    /// Messages covered.
    pub fn len(&self) -> usize {
        self.runs.last().map_or(0, |r| r.end as usize)
    }

    /// Whether no message is covered.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Where run `r` starts.
    fn start(&self, r: usize) -> u32 {
        match r.checked_sub(1) {
            Some(p) => self.runs[p].end,
            None => 0,
        }
    }

    /// Messages in run `r`.
    fn run_len(&self, r: usize) -> u32 {
        self.runs[r].end - self.start(r)
    }

    /// The run holding index `i`, and `i`'s offset in it (a binary search on the ends).
    fn locate(&self, i: usize) -> Option<(usize, u32)> {
        let r = self.runs.partition_point(|run| run.end as usize <= i);
        (r < self.runs.len()).then(|| (r, (i - self.start(r) as usize) as u32))
    }

    /// The UID at `i` (0 when not known or out of range).
    pub fn get(&self, i: usize) -> u32 {
        self.locate(i).map_or(0, |(r, off)| self.runs[r].at(off))
    }

    /// Whether run `r + 1` continues run `r` (both unknown, or both known with consecutive
    /// UIDs): the two are one run.
    fn joins(&self, r: usize) -> bool {
        let (a, b) = (self.runs[r], self.runs[r + 1]);
        if b.known() {
            a.known() && u64::from(a.first) + u64::from(self.run_len(r)) == u64::from(b.first)
        } else {
            !a.known()
        }
    }

    /// Joins the runs in `from..to` (clamped) where one continues the one before it.
    fn join(&mut self, from: usize, to: usize) {
        let mut i = from;
        let mut end = to.min(self.runs.len());
        while i + 1 < end {
            if self.joins(i) {
                self.runs[i].end = self.runs[i + 1].end;
                self.runs.remove(i + 1);
                end -= 1;
            } else {
                i += 1;
            }
        }
    }

    /// Grows to `n` messages with unknown UIDs, or shrinks to `n`.
    pub fn resize(&mut self, n: usize) {
        let len = self.len();
        if n < len {
            self.truncate(n);
        } else if n > len {
            let end = u32::try_from(n).unwrap_or(u32::MAX);
            match self.runs.last_mut() {
                Some(last) if !last.known() => last.end = end,
                _ => self.runs.push(Run { first: 0, end }),
            }
        }
    }

    /// Keeps the first `n` messages.
    pub fn truncate(&mut self, n: usize) {
        let Some((r, off)) = self.locate(n) else {
            return;
        };
        self.runs.truncate(r + 1);
        if off == 0 {
            self.runs.pop();
        } else {
            // Below `end`, which is a u32.
            self.runs[r].end = n as u32;
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
        // The run becomes: the messages before `i`, `i`, the messages after it. No end moves.
        let at = self.start(r) + off;
        let mut pieces = [Run { first: 0, end: 0 }; 3];
        let mut n = 0;
        if off > 0 {
            pieces[n] = Run {
                first: run.first,
                end: at,
            };
            n += 1;
        }
        pieces[n] = Run {
            first: uid,
            end: at + 1,
        };
        n += 1;
        if at + 1 < run.end {
            pieces[n] = Run {
                first: if run.known() { run.at(off + 1) } else { 0 },
                end: run.end,
            };
            n += 1;
        }
        self.runs[r] = pieces[0];
        for (k, piece) in pieces[1..n].iter().enumerate() {
            self.runs.insert(r + 1 + k, *piece);
        }
        self.join(r.saturating_sub(1), r + n + 1);
    }

    /// Removes the message at `i`; those after it move down.
    pub fn remove(&mut self, i: usize) {
        let Some((r, off)) = self.locate(i) else {
            return;
        };
        let len = self.run_len(r);
        for run in &mut self.runs[r..] {
            run.end -= 1;
        }
        let run = self.runs[r];
        if len == 1 {
            self.runs.remove(r);
            self.join(r.saturating_sub(1), r + 1);
            return;
        }
        if !run.known() {
            // Still unknown messages, one fewer.
            return;
        }
        if off == 0 {
            self.runs[r].first += 1;
        } else if off < len - 1 {
            // A gap in the UIDs: the run splits around it.
            self.runs[r].end = self.start(r) + off;
            self.runs.insert(
                r + 1,
                Run {
                    first: run.first + off + 1,
                    end: run.end,
                },
            );
        }
        self.join(r.saturating_sub(1), r + 3);
    }

    /// Each run's first UID (0: unknown) and length, in order.
    fn spans(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.runs.iter().scan(0u32, |start, run| {
            let len = run.end - *start;
            *start = run.end;
            Some((run.first, len))
        })
    }

    /// The index of a known UID.
    pub fn position(&self, uid: u32) -> Option<usize> {
        let mut base = 0usize;
        for (first, len) in self.spans() {
            if first != 0 && (first..=first + (len - 1)).contains(&uid) {
                return Some(base + (uid - first) as usize);
            }
            base += len as usize;
        }
        None
    }

    /// The last known UID of run `r` or a run before it.
    fn known_up_to(&self, r: usize) -> Option<u32> {
        let k = self.runs[..=r].iter().rposition(Run::known)?;
        Some(self.runs[k].first + (self.run_len(k) - 1))
    }

    /// The last known UID before index `i`.
    pub fn known_before(&self, i: usize) -> Option<u32> {
        let last = i.min(self.len()).checked_sub(1)?;
        let (r, off) = self.locate(last)?;
        let run = self.runs[r];
        if run.known() {
            return Some(run.first + off);
        }
        self.known_up_to(r.checked_sub(1)?)
    }

    /// The first known UID after index `i`.
    pub fn known_after(&self, i: usize) -> Option<u32> {
        let (r, off) = self.locate(i.checked_add(1)?)?;
        let run = self.runs[r];
        if run.known() {
            return Some(run.first + off);
        }
        self.runs[r + 1..]
            .iter()
            .find(|x| x.known())
            .map(|x| x.first)
    }

    /// The index and UID of the last known message.
    pub fn last_known(&self) -> Option<(usize, u32)> {
        let k = self.runs.iter().rposition(Run::known)?;
        let run = self.runs[k];
        Some((run.end as usize - 1, run.first + (self.run_len(k) - 1)))
    }

    /// The last index whose known UID is below `uid`.
    pub fn last_below(&self, uid: u32) -> Option<usize> {
        let mut base = 0usize;
        let mut found = None;
        for (first, len) in self.spans() {
            if first != 0 && first < uid {
                let n = (uid - first).min(len);
                found = Some(base + n as usize - 1);
            }
            base += len as usize;
        }
        found
    }

    /// The first index whose known UID is above `uid`.
    pub fn first_above(&self, uid: u32) -> Option<usize> {
        let mut base = 0usize;
        for (first, len) in self.spans() {
            if first != 0 && first + (len - 1) > uid {
                let skip = uid.saturating_sub(first - 1).min(len);
                let skip = if first > uid { 0 } else { skip };
                return Some(base + skip as usize);
            }
            base += len as usize;
        }
        None
    }

    /// Whether some message's UID is not known.
    pub fn has_unknown(&self) -> bool {
        self.runs.iter().any(|r| !r.known())
    }

    /// The known UIDs, in order.
    pub fn known(&self) -> impl Iterator<Item = u32> + '_ {
        self.spans()
            .filter(|&(first, _)| first != 0)
            .flat_map(|(first, len)| first..=first + (len - 1))
    }

    /// The UIDs of the given indexes (sorted), 0 where not known.
    pub fn at_sorted(&self, indexes: &[usize]) -> Vec<u32> {
        let mut out = Vec::with_capacity(indexes.len());
        let mut r = 0usize;
        for &i in indexes {
            while r < self.runs.len() && i >= self.runs[r].end as usize {
                r += 1;
            }
            out.push(match self.runs.get(r) {
                Some(run) => run.at((i - self.start(r) as usize) as u32),
                None => 0,
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
