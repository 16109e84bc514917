//! The session-level error: what went wrong and on which side. The side decides what the client
//! is told (a `* BYE [UNAVAILABLE]` for upstream trouble, a `* BYE` naming the protocol error for
//! client trouble, nothing when the client is gone) and, later, the metric label.

use std::io;

use crate::phases::UpstreamFailure;
use crate::proto::framer::FrameError;
use crate::tls::TlsError;

/// Which side of the proxy an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client (downstream).
    Client,
    /// The IMAP server (upstream).
    Upstream,
    /// The proxy itself.
    Internal,
}

impl Side {
    /// A fixed label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Side::Client => "downstream",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        }
    }
}

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading or writing a socket failed, or the peer closed it.
    #[error("{side:?} I/O: {source}")]
    Io {
        /// Whose socket.
        side: Side,
        /// The error.
        source: io::Error,
    },
    /// The peer closed the connection.
    #[error("{0:?} closed the connection")]
    Closed(Side),
    /// The peer's bytes could not be framed.
    #[error("{side:?} framing: {source}")]
    Framing {
        /// Whose bytes.
        side: Side,
        /// The framer's verdict.
        source: FrameError,
    },
    /// The peer broke the protocol in a way that cannot be answered in-band.
    #[error("{side:?} protocol: {what}")]
    Protocol {
        /// Who.
        side: Side,
        /// What happened (fixed text, no peer data).
        what: &'static str,
    },
    /// The peer announced a literal above the limit after the stream could still have been
    /// answered in-band (a non-synchronizing literal, or one inside a command already relayed).
    #[error("{0:?} literal too large")]
    TooBig(Side),
    /// A state lasted longer than allowed.
    #[error("{0:?} timed out")]
    Timeout(Side),
    /// The upstream could not be reached or set up.
    #[error("upstream unavailable: {what}")]
    Unavailable {
        /// Which kind of failure (a metric label).
        cause: UpstreamFailure,
        /// What happened, for the log.
        what: String,
    },
    /// TLS configuration problem (internal).
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

impl SessionError {
    /// The side to blame.
    pub fn side(&self) -> Side {
        match self {
            SessionError::Io { side, .. }
            | SessionError::Framing { side, .. }
            | SessionError::Protocol { side, .. } => *side,
            SessionError::Closed(side)
            | SessionError::Timeout(side)
            | SessionError::TooBig(side) => *side,
            SessionError::Unavailable { .. } => Side::Upstream,
            SessionError::Tls(_) => Side::Internal,
        }
    }

    /// An I/O error on the client's socket.
    pub fn client_io(source: io::Error) -> Self {
        SessionError::Io {
            side: Side::Client,
            source,
        }
    }

    /// Why the upstream could not be used, when that is what this error says.
    pub fn upstream_failure(&self) -> Option<UpstreamFailure> {
        match self {
            SessionError::Unavailable { cause, .. } => Some(*cause),
            SessionError::Timeout(Side::Upstream) => Some(UpstreamFailure::Timeout),
            SessionError::Io {
                side: Side::Upstream,
                ..
            }
            | SessionError::Closed(Side::Upstream) => Some(UpstreamFailure::Connect),
            SessionError::Protocol {
                side: Side::Upstream,
                ..
            }
            | SessionError::Framing {
                side: Side::Upstream,
                ..
            }
            | SessionError::TooBig(Side::Upstream) => Some(UpstreamFailure::Protocol),
            _ => None,
        }
    }

    /// An I/O error on the upstream socket.
    pub fn upstream_io(source: io::Error) -> Self {
        SessionError::Io {
            side: Side::Upstream,
            source,
        }
    }
}
