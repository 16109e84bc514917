//! Events stages observe without deciding anything (for metrics and logs).

use std::time::Duration;

use super::SessionInfo;
use crate::error::Side;
use crate::session::ListenerKind;

/// Why an upstream could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// TCP connect refused or failed.
    Connect,
    /// Connect or set-up took too long.
    Timeout,
    /// TLS handshake or certificate verification failed.
    Tls,
    /// The server greeted with BYE or something unexpected, or broke the protocol.
    Protocol,
}

impl UpstreamFailure {
    /// A fixed label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Tls => "tls",
            UpstreamFailure::Protocol => "protocol",
        }
    }
}

/// How a login attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    /// Logged in upstream.
    Ok,
    /// The upstream refused the credentials.
    Refused,
    /// A stage refused it.
    Denied,
    /// The client's message was malformed or it cancelled.
    Invalid,
    /// The upstream could not be reached or broke down.
    Error,
}

impl LoginResult {
    /// A fixed label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::Refused => "refused",
            LoginResult::Denied => "denied",
            LoginResult::Invalid => "invalid",
            LoginResult::Error => "error",
        }
    }
}

/// Direction of counted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read from the side.
    Received,
    /// Written to the side.
    Sent,
}

/// Something that happened, for stages that count or log (no decision to make).
#[derive(Debug)]
pub enum Event<'a> {
    /// A client's TLS handshake failed (or timed out).
    TlsHandshakeFailed {
        /// The listener.
        listener: ListenerKind,
    },
    /// A limit refused something: `connections`, `line`, `literal`, `auth_failures`,
    /// `bad_commands`, `assembled`, `held`; the gateway guard's `accept_rate`,
    /// `connections_per_ip`, `preauth_per_ip`, `evicted_preauth` (dropped to make room),
    /// `auth_penalty` (login refused for failures on record), `proxy_untrusted` (a PROXY
    /// listener reached from outside `listen.proxy_trusted_networks`).
    LimitRejected {
        /// Which limit.
        kind: &'static str,
    },
    /// A connection to an upstream was attempted.
    UpstreamConnect {
        /// The upstream's name.
        upstream: &'a str,
        /// How long connect, TLS, greeting and capabilities took (or until failure).
        elapsed: Duration,
        /// `None` on success.
        failure: Option<UpstreamFailure>,
    },
    /// A login attempt ended.
    Login {
        /// The session: id, client address, listener (for an audit trail of who tried).
        info: &'a SessionInfo,
        /// The user name the client gave, if it could be read (never a password or token).
        user: Option<&'a [u8]>,
        /// The upstream the login went to; `None` when none was chosen (a malformed message, a
        /// stage refused it).
        upstream: Option<&'a str>,
        /// `LOGIN`, `PLAIN`, ...
        mechanism: &'static str,
        /// How.
        result: LoginResult,
    },
    /// SIGHUP: the configuration was reloaded (`applied`) or the reload refused. Either way a
    /// stage writing a file reopens it (after log rotation).
    Reload {
        /// Whether the new configuration is in force.
        applied: bool,
    },
    /// Bytes moved.
    Traffic {
        /// Which side of the proxy.
        side: Side,
        /// Read from it or written to it.
        flow: Flow,
        /// How many.
        bytes: u64,
    },
}
