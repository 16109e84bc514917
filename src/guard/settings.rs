//! The `[auth_penalty]` configuration table: how failed logins slow down and then refuse the
//! client and the user name they came from (after Dovecot's `auth_penalty`).

use serde::{Deserialize, Serialize};

/// What a login refused for too many failures is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PenaltyAnswer {
    /// `NO [AUTHENTICATIONFAILED]`: the client cannot tell a block from a wrong password.
    Authenticationfailed,
    /// `NO [UNAVAILABLE]`: says the service is refusing for now (RFC 5530).
    Unavailable,
}

/// Brute-force protection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PenaltyConfig {
    /// Delay before answering a client with one failure on record (milliseconds); it doubles
    /// with each further failure.
    pub base_delay_ms: u64,
    /// The delay never exceeds this (seconds); Dovecot caps its own at 15.
    pub max_delay_secs: u64,
    /// One failure on record is forgiven for every this many seconds without a new one.
    pub decay_secs: u64,
    /// Failures on record for one client address (IPv6: its /64) after which its logins are
    /// refused without contacting the upstream.
    pub max_failures_per_ip: u32,
    /// Failures on record for one user name (from any address) after which logins to it are
    /// refused without contacting the upstream; a successful login clears them.
    pub max_failures_per_user: u32,
    /// How a refused login is answered.
    pub refuse_with: PenaltyAnswer,
    /// Client addresses and user names tracked at most (least recently used ones are
    /// forgotten first), which bounds the memory an attack can make the proxy spend.
    pub max_tracked: u64,
}

impl Default for PenaltyConfig {
    fn default() -> Self {
        PenaltyConfig {
            base_delay_ms: 1000,
            max_delay_secs: 15,
            decay_secs: 60,
            max_failures_per_ip: 20,
            max_failures_per_user: 10,
            refuse_with: PenaltyAnswer::Authenticationfailed,
            max_tracked: 100_000,
        }
    }
}

impl PenaltyConfig {
    /// What types alone cannot check: `(key, reason)` of the first problem.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if self.decay_secs == 0 {
            return Some(("auth_penalty.decay_secs", "must be at least 1"));
        }
        if self.max_failures_per_ip == 0 || self.max_failures_per_user == 0 {
            return Some(("auth_penalty", "failure thresholds must be at least 1"));
        }
        if self.max_tracked < 1000 {
            return Some(("auth_penalty.max_tracked", "must be at least 1000"));
        }
        if self.base_delay_ms > self.max_delay_secs.saturating_mul(1000) {
            return Some((
                "auth_penalty.base_delay_ms",
                "must not exceed max_delay_secs",
            ));
        }
        None
    }
}
