//! The named upstreams (`[upstreams.NAME]`, with `upstream` / `--upstream` as `default`): each
//! with its own verified TLS client configuration and what it was last seen to offer. Routing a
//! login to one of them is a stage's decision (`on_login`); this module only holds them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

use rustls::ClientConfig;

use crate::config::{Config, DEFAULT_UPSTREAM, UpstreamConfig};
use crate::proto::response::has_capability;
use crate::session::credentials::TokenMechanism;
use crate::tls::{TlsError, client_config};

/// One upstream server.
pub struct NamedUpstream {
    /// Its name (`default`, or the key of its `[upstreams.NAME]` table).
    pub name: Arc<str>,
    /// How to reach it.
    pub config: UpstreamConfig,
    /// Verifies its certificate (its own CA file and roots).
    pub tls: Arc<ClientConfig>,
    /// Token mechanisms it announced last time we looked (bit 0 XOAUTH2, bit 1 OAUTHBEARER):
    /// the proxy offers clients only what the upstream can take.
    tokens: AtomicU8,
    /// Its pre-login capability list, as last seen (empty until the first connect).
    caps: RwLock<Arc<[u8]>>,
}

impl std::fmt::Debug for NamedUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedUpstream")
            .field("name", &self.name)
            .field("address", &self.config.address)
            .finish()
    }
}

impl NamedUpstream {
    /// An upstream with nothing learned yet.
    pub fn new(name: &str, config: UpstreamConfig) -> Result<NamedUpstream, TlsError> {
        let tls = client_config(&config)?;
        Ok(NamedUpstream {
            name: name.into(),
            config,
            tls,
            tokens: AtomicU8::new(0),
            caps: RwLock::new(Arc::from(&b""[..])),
        })
    }

    /// Remembers what the upstream offers, from its pre-login capabilities.
    pub fn learn(&self, caps: &[u8]) {
        let mut bits = 0;
        if has_capability(caps, b"AUTH=XOAUTH2") {
            bits |= 1;
        }
        if has_capability(caps, b"AUTH=OAUTHBEARER") {
            bits |= 2;
        }
        self.tokens.store(bits, Ordering::Relaxed);
        if let Ok(mut slot) = self.caps.write() {
            if **slot != *caps {
                *slot = Arc::from(caps);
            }
        }
    }

    /// The pre-login capabilities last seen (empty before the first connect).
    pub fn capabilities(&self) -> Arc<[u8]> {
        self.caps
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|_| Arc::from(&b""[..]))
    }

    /// The token mechanisms the proxy can relay to this upstream now.
    pub fn token_mechanisms(&self) -> Vec<TokenMechanism> {
        let bits = self.tokens.load(Ordering::Relaxed);
        let mut mechs = Vec::new();
        if bits & 1 != 0 {
            mechs.push(TokenMechanism::Xoauth2);
        }
        if bits & 2 != 0 {
            mechs.push(TokenMechanism::Oauthbearer);
        }
        mechs
    }
}

/// Every configured upstream, by name.
#[derive(Debug)]
pub struct Upstreams {
    /// By name; always holds `default`.
    by_name: BTreeMap<String, Arc<NamedUpstream>>,
    /// The `default` entry.
    default: Arc<NamedUpstream>,
}

/// An upstream could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamsError {
    /// Its TLS configuration failed (CA file).
    #[error("upstream {name:?}: {source}")]
    Tls {
        /// Which upstream.
        name: String,
        /// Why.
        source: TlsError,
    },
    /// There is no `default` upstream (the configuration was not validated).
    #[error("no default upstream configured")]
    NoDefault,
}

impl Upstreams {
    /// Builds every upstream of a validated configuration.
    pub fn new(config: &Config) -> Result<Upstreams, UpstreamsError> {
        let mut by_name = BTreeMap::new();
        for (name, cfg) in config.upstreams() {
            let up = NamedUpstream::new(&name, cfg).map_err(|source| UpstreamsError::Tls {
                name: name.clone(),
                source,
            })?;
            by_name.insert(name, Arc::new(up));
        }
        let default = by_name
            .get(DEFAULT_UPSTREAM)
            .cloned()
            .ok_or(UpstreamsError::NoDefault)?;
        Ok(Upstreams { by_name, default })
    }

    /// The upstream logins go to unless routed elsewhere.
    pub fn default_upstream(&self) -> &Arc<NamedUpstream> {
        &self.default
    }

    /// An upstream by name.
    pub fn get(&self, name: &str) -> Option<&Arc<NamedUpstream>> {
        self.by_name.get(name)
    }

    /// All of them, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<NamedUpstream>> {
        self.by_name.values()
    }
}
