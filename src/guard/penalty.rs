//! Failed-login accounting across connections (after Dovecot's `auth_penalty`): failures are
//! counted per client address (IPv6 by /64) and per user name, in bounded moka caches, so a
//! client gains nothing by reconnecting and memory stays bounded under any attack.
//!
//! Before each login the proxy asks [`Penalties::admit`]: the answer is how long to wait and
//! whether to refuse without contacting the upstream. The wait is `base × 2^(failures − 1)`,
//! capped, and a client's penalised attempts are spaced by that wait even when it opens many
//! connections at once, so one address gets at most one answer per wait. One failure is forgiven
//! per `decay_secs` without a new one; a successful login clears the user's count (not the
//! address's: an attacker with one valid account must not wipe its own record).

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use moka::sync::Cache;

use crate::guard::key::ClientKey;
use crate::guard::settings::PenaltyConfig;

/// Longest user name kept as a key; longer ones are cut (they still count, under their prefix).
const MAX_USER_KEY: usize = 256;

/// What is on record for one address or user name.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Failures counted, before decay.
    failures: u32,
    /// When the last one was counted (decay runs from here).
    last_failure: Instant,
    /// When the last penalised attempt from this address was let through; the next one waits
    /// at least its delay after it.
    last_slot: Instant,
}

impl Record {
    /// Failures still on record at `now`.
    fn current(&self, now: Instant, decay: Duration) -> u32 {
        let forgiven =
            now.saturating_duration_since(self.last_failure).as_secs() / decay.as_secs().max(1);
        self.failures
            .saturating_sub(u32::try_from(forgiven).unwrap_or(u32::MAX))
    }
}

/// What to do with a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Wait this long before going on (or before refusing).
    pub wait: Duration,
    /// Refuse the attempt without contacting the upstream: too many failures on record.
    pub refuse: bool,
}

/// Failure records of client addresses and user names.
pub struct Penalties {
    /// Per client address (IPv6: its /64).
    clients: Cache<ClientKey, Record>,
    /// Per user name (ASCII case folded, cut at [`MAX_USER_KEY`]).
    users: Cache<Arc<[u8]>, Record>,
}

impl Penalties {
    /// Empty records holding at most `max_tracked` addresses and as many user names.
    pub fn new(max_tracked: u64) -> Penalties {
        // A record that has not changed for a day has long decayed to nothing.
        let idle = Duration::from_secs(24 * 3600);
        Penalties {
            clients: Cache::builder()
                .max_capacity(max_tracked)
                .time_to_idle(idle)
                .build(),
            users: Cache::builder()
                .max_capacity(max_tracked)
                .time_to_idle(idle)
                .build(),
        }
    }

    /// The delay for `failures` failures on record.
    fn delay(config: &PenaltyConfig, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let doublings = (failures - 1).min(20);
        let ms = config.base_delay_ms.saturating_mul(1 << doublings);
        Duration::from_millis(ms.min(config.max_delay_secs.saturating_mul(1000)))
    }

    /// Decides about a login attempt from `client` for `user` at `now`, and reserves the
    /// attempt's slot when it is penalised.
    pub fn admit(
        &self,
        config: &PenaltyConfig,
        client: ClientKey,
        user: &[u8],
        now: Instant,
    ) -> Admission {
        let decay = Duration::from_secs(config.decay_secs);
        let user_failures = self
            .users
            .get(&user_key(user))
            .map_or(0, |r| r.current(now, decay));
        let mut admission = Admission {
            wait: Duration::ZERO,
            refuse: user_failures >= config.max_failures_per_user,
        };
        self.clients.entry(client).and_compute_with(|entry| {
            let mut record = match entry {
                Some(e) => e.into_value(),
                None if user_failures == 0 => return Op::Nop,
                None => Record {
                    failures: 0,
                    last_failure: now,
                    last_slot: now,
                },
            };
            let failures = record.current(now, decay);
            admission.refuse |= failures >= config.max_failures_per_ip;
            let delay = Self::delay(config, failures.max(user_failures));
            if delay.is_zero() {
                return Op::Nop;
            }
            // Spaced by the delay after the previous penalised attempt, and never sooner than
            // the delay from now.
            let slot = (now + delay).max(record.last_slot + delay);
            record.last_slot = slot;
            admission.wait = slot - now;
            Op::Put(record)
        });
        admission
    }

    /// Whether `client` or `user` is over its threshold now (no slot is reserved): asked again
    /// after the wait, since failures counted meanwhile (the client's other connections) may
    /// have put it over.
    pub fn over_threshold(
        &self,
        config: &PenaltyConfig,
        client: ClientKey,
        user: &[u8],
        now: Instant,
    ) -> bool {
        let decay = Duration::from_secs(config.decay_secs);
        let current = |r: Option<Record>| r.map_or(0, |r| r.current(now, decay));
        current(self.clients.get(&client)) >= config.max_failures_per_ip
            || current(self.users.get(&user_key(user))) >= config.max_failures_per_user
    }

    /// Counts a failed login (or one refused for failures on record: the address keeps its
    /// count up while it keeps trying; the user's count is not raised by refused attempts, so
    /// a blocked address cannot extend a user's lock).
    pub fn failed(
        &self,
        config: &PenaltyConfig,
        client: ClientKey,
        user: Option<&[u8]>,
        now: Instant,
    ) {
        let decay = Duration::from_secs(config.decay_secs);
        self.clients
            .entry(client)
            .and_compute_with(|e| Op::Put(bumped(e.map(|e| e.into_value()), now, decay)));
        if let Some(user) = user {
            self.users
                .entry(user_key(user))
                .and_compute_with(|e| Op::Put(bumped(e.map(|e| e.into_value()), now, decay)));
        }
    }

    /// A successful login: the user's failures are forgotten.
    pub fn succeeded(&self, user: &[u8]) {
        self.users.invalidate(&user_key(user));
    }

    /// Failures on record for `client` (for logs and tests).
    pub fn failures(&self, config: &PenaltyConfig, client: ClientKey, now: Instant) -> u32 {
        let decay = Duration::from_secs(config.decay_secs);
        self.clients
            .get(&client)
            .map_or(0, |r| r.current(now, decay))
    }
}

/// A record with one more failure at `now`.
fn bumped(record: Option<Record>, now: Instant, decay: Duration) -> Record {
    match record {
        Some(r) => Record {
            failures: r.current(now, decay).saturating_add(1),
            last_failure: now,
            last_slot: r.last_slot,
        },
        None => Record {
            failures: 1,
            last_failure: now,
            last_slot: now,
        },
    }
}

/// The key a user name is counted under.
fn user_key(user: &[u8]) -> Arc<[u8]> {
    let cut = &user[..user.len().min(MAX_USER_KEY)];
    cut.to_ascii_lowercase().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PenaltyConfig {
        PenaltyConfig {
            base_delay_ms: 100,
            max_delay_secs: 1,
            decay_secs: 10,
            max_failures_per_ip: 5,
            max_failures_per_user: 3,
            ..PenaltyConfig::default()
        }
    }

    fn key(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    #[test]
    fn delay_doubles_then_caps_and_other_clients_are_free() {
        let c = config();
        let p = Penalties::new(1000);
        let t = Instant::now();
        let a = key("127.0.0.2");
        assert_eq!(p.admit(&c, a, b"u", t).wait, Duration::ZERO);
        let mut waits = Vec::new();
        let mut now = t;
        for _ in 0..6 {
            p.failed(&c, a, None, now);
            let adm = p.admit(&c, a, b"u", now);
            waits.push(adm.wait.as_millis());
            now += adm.wait;
        }
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert!(
            p.admit(&c, a, b"u", now).refuse,
            "over the address threshold"
        );
        let b = p.admit(&c, key("127.0.0.3"), b"u", now);
        assert_eq!(
            b,
            Admission {
                wait: Duration::ZERO,
                refuse: false
            }
        );
    }

    #[test]
    fn parallel_attempts_are_spaced() {
        let c = config();
        let p = Penalties::new(1000);
        let t = Instant::now();
        let a = key("2001:db8::1");
        for _ in 0..5 {
            p.failed(&c, a, None, t);
        }
        // Ten connections asking at the same instant get slots one capped delay apart.
        let waits: Vec<u128> = (0..10)
            .map(|_| p.admit(&c, key("2001:db8::2"), b"x", t).wait.as_millis())
            .collect();
        assert_eq!(waits, (1..=10).map(|i| i * 1000).collect::<Vec<u128>>());
    }

    #[test]
    fn decay_and_user_records() {
        let c = config();
        let p = Penalties::new(1000);
        let t = Instant::now();
        // A user attacked from many addresses is refused from a fresh one too.
        for i in 0..3 {
            p.failed(&c, key(&format!("10.0.0.{i}")), Some(b"Bob"), t);
        }
        let fresh = p.admit(&c, key("10.9.9.9"), b"bob", t);
        assert!(fresh.refuse);
        assert_eq!(fresh.wait, Duration::from_millis(400));
        assert!(!p.admit(&c, key("10.9.9.9"), b"alice", t).refuse);
        // Two decay periods forgive two failures.
        let later = t + Duration::from_secs(20);
        let adm = p.admit(&c, key("10.9.9.8"), b"bob", later);
        assert!(!adm.refuse);
        assert_eq!(adm.wait, Duration::from_millis(100));
        // Success clears the user, not the address.
        p.succeeded(b"BOB");
        assert!(!p.admit(&c, key("10.9.9.7"), b"bob", t).refuse);
        assert_eq!(p.failures(&c, key("10.0.0.1"), t), 1);
    }
}
