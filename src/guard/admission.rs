//! Per-client connection limits: how many connections one address (IPv6: its /64) may hold, how
//! many of them may sit before login, and how fast it may open new ones (a token bucket). Also the
//! queue of connections that have not logged in, oldest first, so that when every global slot is
//! taken the oldest of them can be dropped to make room, as Dovecot's login processes do.
//!
//! A [`Ticket`] is one admitted connection; dropping it gives its counts back.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use moka::sync::Cache;
use tokio::sync::Notify;

use crate::config::LimitsConfig;
use crate::guard::key::ClientKey;

/// Why a connection was not admitted; the label is the metric's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address opened connections faster than `limits.accept_rate_per_ip`.
    AcceptRate,
    /// The address holds `limits.max_connections_per_ip` connections.
    PerIp,
    /// The address holds `limits.max_preauth_per_ip` connections that have not logged in.
    PreauthPerIp,
}

impl Refusal {
    /// A fixed label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::AcceptRate => "accept_rate",
            Refusal::PerIp => "connections_per_ip",
            Refusal::PreauthPerIp => "preauth_per_ip",
        }
    }
}

/// One address's open connections.
#[derive(Debug, Default, Clone, Copy)]
struct Open {
    /// All of them.
    total: u32,
    /// Those that have not logged in.
    preauth: u32,
}

/// A token bucket for accepts.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left (each accept takes one).
    tokens: f64,
    /// When `tokens` was computed.
    at: Instant,
}

/// What the limits share.
pub struct Admission {
    /// Open connections per address; an address leaves the map when its last one closes, so the
    /// map is bounded by the global connection limit.
    open: Mutex<HashMap<ClientKey, Open>>,
    /// Accept buckets per address. A bucket idle long enough to be full again carries no
    /// information and is evicted; the capacity bounds memory under address churn.
    buckets: Cache<ClientKey, Bucket>,
    /// Connections that have not logged in, by accept order, each with the signal that drops it.
    waiting: Mutex<BTreeMap<u64, Arc<Notify>>>,
}

/// Locks, recovering the data if a panicking thread poisoned the lock (the counts stay usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Admission {
    /// Empty tables; buckets of `limits` decide how long an idle bucket is kept.
    pub fn new(limits: &LimitsConfig) -> Admission {
        let refill =
            limits.accept_burst_per_ip as f64 / f64::from(limits.accept_rate_per_ip.max(1));
        Admission {
            open: Mutex::new(HashMap::new()),
            buckets: Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs_f64(refill.clamp(1.0, 3600.0)))
                .build(),
            waiting: Mutex::new(BTreeMap::new()),
        }
    }

    /// Admits a connection from `client` (accept `id`, increasing with accept order) or says
    /// which limit refuses it.
    pub fn admit(
        self: &Arc<Self>,
        limits: &LimitsConfig,
        client: ClientKey,
        id: u64,
        now: Instant,
    ) -> Result<Ticket, Refusal> {
        if limits.accept_rate_per_ip > 0 && !self.take_token(limits, client, now) {
            return Err(Refusal::AcceptRate);
        }
        {
            let mut open = lock(&self.open);
            let entry = open.entry(client).or_default();
            if limits.max_connections_per_ip > 0 && entry.total >= limits.max_connections_per_ip {
                return Err(Refusal::PerIp);
            }
            if limits.max_preauth_per_ip > 0 && entry.preauth >= limits.max_preauth_per_ip {
                return Err(Refusal::PreauthPerIp);
            }
            entry.total += 1;
            entry.preauth += 1;
        }
        let evict = Arc::new(Notify::new());
        lock(&self.waiting).insert(id, evict.clone());
        Ok(Ticket {
            admission: self.clone(),
            client,
            id,
            evict,
            logged_in: AtomicBool::new(false),
        })
    }

    /// Takes one accept token of `client`'s bucket; false when it is empty.
    fn take_token(&self, limits: &LimitsConfig, client: ClientKey, now: Instant) -> bool {
        let rate = f64::from(limits.accept_rate_per_ip);
        let burst = f64::from(limits.accept_burst_per_ip.max(1));
        let mut granted = false;
        self.buckets.entry(client).and_compute_with(|entry| {
            let mut bucket = entry.map_or(
                Bucket {
                    tokens: burst,
                    at: now,
                },
                |e| e.into_value(),
            );
            let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
            bucket.at = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                granted = true;
            }
            Op::Put(bucket)
        });
        granted
    }

    /// Tells the oldest connection that has not logged in to go; false when there is none.
    pub fn evict_oldest(&self) -> bool {
        match lock(&self.waiting).pop_first() {
            Some((_, evict)) => {
                evict.notify_one();
                true
            }
            None => false,
        }
    }

    /// Connections open from `client`: (all, not logged in).
    pub fn open(&self, client: ClientKey) -> (u32, u32) {
        lock(&self.open)
            .get(&client)
            .map_or((0, 0), |o| (o.total, o.preauth))
    }
}

/// One admitted connection; dropping it releases its counts.
pub struct Ticket {
    /// The tables it counts in.
    admission: Arc<Admission>,
    /// Whose connection it is.
    client: ClientKey,
    /// Its accept id (its place in the eviction queue).
    id: u64,
    /// Notified when the connection is to be dropped for room (ignored once logged in).
    evict: Arc<Notify>,
    /// Logged in: no longer waiting, never evicted. Set through a shared reference, so the
    /// login can mark it just before the client is told (a newcomer arriving right after the
    /// client's OK must not take this connection for one still waiting).
    logged_in: AtomicBool,
}

impl Ticket {
    /// The connection logged in: it no longer counts as waiting and cannot be evicted.
    pub fn logged_in(&self) {
        if !self.logged_in.swap(true, Ordering::AcqRel) {
            lock(&self.admission.waiting).remove(&self.id);
            if let Some(o) = lock(&self.admission.open).get_mut(&self.client) {
                o.preauth = o.preauth.saturating_sub(1);
            }
        }
    }

    /// Completes when the connection is to be dropped to make room (never after login).
    pub async fn evicted(&self) {
        if self.logged_in.load(Ordering::Acquire) {
            return std::future::pending().await;
        }
        self.evict.notified().await;
        if self.logged_in.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
    }

    /// The client's key.
    pub fn client(&self) -> ClientKey {
        self.client
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let preauth = !self.logged_in.load(Ordering::Acquire);
        if preauth {
            lock(&self.admission.waiting).remove(&self.id);
        }
        let mut open = lock(&self.admission.open);
        if let Some(o) = open.get_mut(&self.client) {
            o.total = o.total.saturating_sub(1);
            if preauth {
                o.preauth = o.preauth.saturating_sub(1);
            }
            if o.total == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            max_connections_per_ip: 3,
            max_preauth_per_ip: 2,
            accept_rate_per_ip: 2,
            accept_burst_per_ip: 4,
            ..LimitsConfig::default()
        }
    }

    fn key(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    #[test]
    fn per_ip_and_preauth_limits() {
        let l = limits();
        let a = Arc::new(Admission::new(&l));
        let t = Instant::now();
        let ip = key("127.0.0.2");
        let t1 = a.admit(&l, ip, 1, t).unwrap();
        let _t2 = a.admit(&l, ip, 2, t).unwrap();
        assert_eq!(a.admit(&l, ip, 3, t).err(), Some(Refusal::PreauthPerIp));
        t1.logged_in();
        let t3 = a.admit(&l, ip, 4, t).unwrap();
        assert_eq!(a.open(ip), (3, 2));
        assert_eq!(a.admit(&l, ip, 5, t).err(), Some(Refusal::AcceptRate));
        let later = t + Duration::from_secs(1);
        assert_eq!(a.admit(&l, ip, 6, later).err(), Some(Refusal::PerIp));
        // Another address is not affected.
        assert!(a.admit(&l, key("127.0.0.3"), 7, t).is_ok());
        drop(t3);
        drop(t1);
        assert_eq!(a.open(ip), (1, 1));
    }

    #[test]
    fn oldest_waiting_connection_is_evicted_first() {
        let l = LimitsConfig::default();
        let a = Arc::new(Admission::new(&l));
        let t = Instant::now();
        let first = a.admit(&l, key("127.0.0.2"), 10, t).unwrap();
        let second = a.admit(&l, key("127.0.0.3"), 11, t).unwrap();
        let third = a.admit(&l, key("127.0.0.4"), 12, t).unwrap();
        first.logged_in();
        assert!(a.evict_oldest());
        // The evicted one is `second`: its notification is stored, so `evicted` is ready.
        use futures::FutureExt as _;
        assert!(second.evicted().now_or_never().is_some());
        assert!(third.evicted().now_or_never().is_none());
        drop(second);
        drop(third);
        assert!(!a.evict_oldest(), "first logged in, the others are gone");
    }
}
