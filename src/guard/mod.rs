//! Gateway protection that spans connections: per-client connection limits and accept rate
//! ([`admission`]), failed-login penalties per client address and per user name ([`penalty`]).
//! One [`Guard`] lives for the whole process (a configuration reload keeps its records; the
//! limits it applies are read from the configuration each call).
//!
//! Order in a connection's life: [`Admission::admit`] after the client's address is known (after
//! the PROXY header, before TLS), [`Penalties::admit`] before each login, [`Penalties::failed`]
//! or [`Penalties::succeeded`] after it, [`Ticket::logged_in`] once the relay starts.

pub mod admission;
pub mod key;
pub mod penalty;
pub mod settings;

use std::sync::Arc;

pub use admission::{Admission, Refusal, Ticket};
pub use key::ClientKey;
pub use penalty::Penalties;
pub use settings::{PenaltyAnswer, PenaltyConfig};

use crate::config::Config;

/// The process-wide records.
pub struct Guard {
    /// Connection counts and accept buckets per client.
    pub admission: Arc<Admission>,
    /// Failed-login records.
    pub penalties: Penalties,
}

impl Guard {
    /// Empty records sized by `config`.
    pub fn new(config: &Config) -> Guard {
        Guard {
            admission: Arc::new(Admission::new(&config.limits)),
            penalties: Penalties::new(config.auth_penalty.max_tracked),
        }
    }
}
