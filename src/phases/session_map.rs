//! [`SessionMap`]: what a stage keeps per session between its phases, by session id.
//!
//! Stages are shared by every session (`&self`), so a stage that follows something across a
//! session's phases (the cache's message numbers, the policy's hidden-mailbox rules, the audit's
//! commands in flight, the metrics' open-connection slot) keeps it in a table keyed by
//! [`SessionInfo::id`](super::SessionInfo). Some stages look at that table on every server
//! message, so it is built for that: split into shards, each behind its own lock (sessions on
//! different threads rarely meet on one), and hashed with a multiply-and-rotate hash (rustc-hash's
//! Fx) rather than SipHash, which cost ~5% of the proxy's instructions under imaptest. Session ids
//! come from the proxy's own counter, never from the network, so a hash without DoS resistance is
//! safe here.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use rustc_hash::FxBuildHasher;

/// Shards: a power of two, comfortably above the session threads of a typical instance.
const SHARDS: usize = 16;

/// One shard: the sessions whose id falls in it.
pub type Shard<T> = HashMap<u64, T, FxBuildHasher>;

/// Per-session values of a stage, by session id.
#[derive(Debug)]
pub struct SessionMap<T> {
    /// The tables, a session's in shard `id % SHARDS`.
    shards: [Mutex<Shard<T>>; SHARDS],
}

impl<T> Default for SessionMap<T> {
    fn default() -> Self {
        SessionMap {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
        }
    }
}

impl<T> SessionMap<T> {
    /// The shard holding session `id`, locked (even if a panicking holder poisoned it: the
    /// values are plain data that a half-done update leaves usable).
    pub fn shard(&self, id: u64) -> MutexGuard<'_, Shard<T>> {
        // The remainder is below SHARDS: the cast is lossless.
        self.shards[(id % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on session `id`'s value, if it has one.
    pub fn with<R>(&self, id: u64, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.shard(id).get_mut(&id).map(f)
    }

    /// Sets session `id`'s value; returns the one it replaces.
    pub fn insert(&self, id: u64, value: T) -> Option<T> {
        self.shard(id).insert(id, value)
    }

    /// Takes session `id`'s value out, giving the shard's memory back once most of its sessions
    /// are gone (a hash map never shrinks by itself: a burst of 10,000 sessions would otherwise
    /// stay allocated).
    pub fn remove(&self, id: u64) -> Option<T> {
        let mut shard = self.shard(id);
        let value = shard.remove(&id);
        shrink(&mut shard);
        value
    }

    /// Sessions with a value, over all shards (tests, gauges).
    pub fn len(&self) -> usize {
        (0..SHARDS as u64).map(|i| self.shard(i).len()).sum()
    }

    /// No session has a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Gives a shard's memory back once it is mostly empty.
fn shrink<T>(shard: &mut Shard<T>) {
    if shard.capacity() > 256 && shard.len() < shard.capacity() / 4 {
        shard.shrink_to(shard.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_by_session_across_shards() {
        let map = SessionMap::default();
        for id in 0..100u64 {
            assert_eq!(map.insert(id, id * 2), None);
        }
        assert_eq!(map.len(), 100);
        assert_eq!(map.with(7, |v| *v), Some(14));
        assert_eq!(
            map.with(7, |v| {
                *v += 1;
                *v
            }),
            Some(15)
        );
        assert_eq!(map.with(1000, |v| *v), None);
        assert_eq!(map.remove(7), Some(15));
        assert_eq!(map.remove(7), None);
        assert_eq!(map.len(), 99);
    }

    #[test]
    fn a_drained_shard_gives_memory_back() {
        let map = SessionMap::default();
        for id in 0..40_000u64 {
            map.insert(id, [0u8; 16]);
        }
        let big = map.shard(0).capacity();
        for id in 0..40_000u64 {
            map.remove(id);
        }
        assert!(map.is_empty());
        assert!(map.shard(0).capacity() < big / 4, "{big}");
    }
}
