//! The fixed label sets of the metrics stage and the maps from the seam's enums to array
//! indices, so the stage resolves every hot-path series once and an event is an index plus an
//! atomic add.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

use crate::phases::{LoginResult, Outcome, UpstreamFailure};
use crate::proto::command::CommandName;
use crate::session::ListenerKind;

/// Every command name, in [`CommandName::ALL`]'s order (which [`CommandName::index`] follows).
pub const COMMANDS: [CommandName; CommandName::ALL.len()] = {
    let mut out = [CommandName::Other; CommandName::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = CommandName::ALL[i].0;
        i += 1;
    }
    out
};

/// Every outcome, indexed by [`outcome_idx`].
pub const OUTCOMES: [Outcome; 5] = [
    Outcome::Ok,
    Outcome::No,
    Outcome::Bad,
    Outcome::Bye,
    Outcome::None,
];

/// Every login result, indexed by [`login_idx`].
pub const RESULTS: [LoginResult; 5] = [
    LoginResult::Ok,
    LoginResult::Refused,
    LoginResult::Denied,
    LoginResult::Invalid,
    LoginResult::Error,
];

/// Mechanism labels (as the pre-login dialogue names them); anything else counts as `other`.
pub const MECHANISMS: [&str; 5] = ["LOGIN", "PLAIN", "XOAUTH2", "OAUTHBEARER", "other"];

/// Upstream failure causes, indexed by [`cause_idx`].
pub const CAUSES: [UpstreamFailure; 4] = [
    UpstreamFailure::Connect,
    UpstreamFailure::Timeout,
    UpstreamFailure::Tls,
    UpstreamFailure::Protocol,
];

/// Limit kinds the proxy reports today (pre-resolved, so they show as 0 from the start); other
/// kinds get a series when first seen.
pub const LIMIT_KINDS: [&str; 13] = [
    "connections",
    "line",
    "literal",
    "auth_failures",
    "bad_commands",
    "assembled",
    "held",
    "accept_rate",
    "connections_per_ip",
    "preauth_per_ip",
    "evicted_preauth",
    "auth_penalty",
    "proxy_untrusted",
];

/// Index of a command name in [`COMMANDS`].
pub fn command_idx(name: CommandName) -> usize {
    name.index()
}

/// Index of an outcome in [`OUTCOMES`].
pub fn outcome_idx(o: Outcome) -> usize {
    match o {
        Outcome::Ok => 0,
        Outcome::No => 1,
        Outcome::Bad => 2,
        Outcome::Bye => 3,
        Outcome::None => 4,
    }
}

/// Index of a login result in [`RESULTS`].
pub fn login_idx(r: LoginResult) -> usize {
    match r {
        LoginResult::Ok => 0,
        LoginResult::Refused => 1,
        LoginResult::Denied => 2,
        LoginResult::Invalid => 3,
        LoginResult::Error => 4,
    }
}

/// Index of a mechanism in [`MECHANISMS`] (`other` when unknown).
pub fn mechanism_idx(m: &str) -> usize {
    MECHANISMS
        .iter()
        .position(|k| *k == m)
        .unwrap_or(MECHANISMS.len() - 1)
}

/// Index of a cause in [`CAUSES`].
pub fn cause_idx(c: UpstreamFailure) -> usize {
    match c {
        UpstreamFailure::Connect => 0,
        UpstreamFailure::Timeout => 1,
        UpstreamFailure::Tls => 2,
        UpstreamFailure::Protocol => 3,
    }
}

/// A connection series: listener kind × encrypted at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnIdx(pub usize);

impl ConnIdx {
    /// How many combinations.
    pub const COUNT: usize = 4;

    /// The series of a connection.
    pub fn of(listener: ListenerKind, tls: bool) -> ConnIdx {
        let l = match listener {
            ListenerKind::Tls => 0,
            ListenerKind::Plain => 2,
        };
        ConnIdx(l + usize::from(tls))
    }

    /// Its `listener` and `tls` label values.
    pub fn labels(self) -> (&'static str, &'static str) {
        let listener = if self.0 < 2 { "tls" } else { "plain" };
        let tls = if self.0 % 2 == 1 { "true" } else { "false" };
        (listener, tls)
    }
}

/// The connect series of one upstream.
#[derive(Debug)]
pub struct UpstreamHandles {
    /// The upstream's configured name.
    pub name: Arc<str>,
    /// Successful connects' duration.
    latency: Histogram,
    /// Failures by cause, indexed by [`cause_idx`].
    failures: [IntCounter; CAUSES.len()],
}

impl UpstreamHandles {
    /// Resolves the series of `name`.
    pub fn new(name: &str, latency: &HistogramVec, failures: &IntCounterVec) -> UpstreamHandles {
        UpstreamHandles {
            name: name.into(),
            latency: latency.with_label_values(&[name]),
            failures: CAUSES.map(|c| failures.with_label_values(&[name, c.label()])),
        }
    }

    /// Counts one connect attempt.
    pub fn record(&self, elapsed: Duration, failure: Option<UpstreamFailure>) {
        match failure {
            None => self.latency.observe(elapsed.as_secs_f64()),
            Some(cause) => self.failures[cause_idx(cause)].inc(),
        }
    }
}
