//! OAuth2 injection: legacy clients log in with a local password; the proxy logs them in
//! upstream with XOAUTH2 or OAUTHBEARER and an access token it obtains itself. The provider
//! password never exists anywhere, and no password ever goes upstream for such a login.
//!
//! ```text
//!  LOGIN alice pw ─► OAuthStage::on_login ─ Argon2id check (cached briefly) ─► Rewrite to
//!                    (or a policy's `oauth` decision)              Credentials::OAuth{user, account}
//!                                                                              │
//!  session login path ─► TokenService::token(account) ─ cached? ─► yes: no I/O │
//!                                   │ no: single-flight per account (and per Redis lock)
//!                                   ▼
//!                       token endpoint (refresh_token / client_credentials grant, rustls)
//!                       rotated refresh token ─► Store (encrypted file | Redis) at once
//!                                   │
//!  upstream: AUTHENTICATE XOAUTH2|OAUTHBEARER <b64> (SASL-IR when offered) ─► OK / NO
//! ```
//!
//! - [`config`]: `[oauth]`, `[oauth.accounts.NAME]`, `[oauth.users.NAME]`.
//! - [`stage`]: the built-in stage (local users with Argon2id hashes); [`password`] the hashing.
//! - [`cache`]: the token service (cache, single-flight, failure sharing, Redis lock).
//! - [`token`], [`http`]: token-endpoint requests over hyper + tokio-rustls (ring).
//! - [`store`]: the encrypted file and Redis stores.
//! - [`sasl`]: the XOAUTH2/OAUTHBEARER messages; [`enroll`]: the device-code flow for the CLI.
//! - [`error`]: what can fail and what the client is told (`UNAVAILABLE` for a token endpoint
//!   that is down or slow, `AUTHENTICATIONFAILED` for a revoked grant).

pub mod cache;
pub mod config;
pub mod enroll;
pub mod error;
pub mod http;
pub mod password;
pub mod sasl;
pub mod stage;
pub mod store;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

pub use cache::{AccessToken, TokenService};
pub use config::OAuthConfig;
pub use error::OAuthError;
pub use stage::OAuthStage;

/// The token client for `config`: HTTPS verified with `oauth.ca_file` or the system roots.
pub fn token_client(config: &OAuthConfig) -> Result<token::TokenClient, OAuthError> {
    let tls = match crate::tls::https_client_config(config.ca_file.as_deref()) {
        Ok(tls) => tls,
        // Only loopback http:// endpoints: no trust anchors needed.
        Err(crate::tls::TlsError::NoRoots) if !uses_https(config) => empty_roots(),
        Err(e) => return Err(OAuthError::Unavailable(format!("token endpoint TLS: {e}"))),
    };
    let http = http::HttpClient::new(tls, Duration::from_millis(config.request_timeout_ms));
    Ok(token::TokenClient::new(http, config.client_auth))
}

/// The token service for `config` (validated, with accounts).
pub fn token_service(config: &OAuthConfig) -> Result<Arc<TokenService>, OAuthError> {
    let client = token_client(config)?;
    let store = store::Store::open(config)?;
    Ok(Arc::new(TokenService::new(config.clone(), client, store)))
}

fn uses_https(config: &OAuthConfig) -> bool {
    let mut urls: Vec<&str> = vec![&config.token_endpoint];
    urls.extend(config.device_authorization_endpoint.as_deref());
    urls.extend(
        config
            .accounts
            .values()
            .filter_map(|a| a.token_endpoint.as_deref()),
    );
    urls.iter().any(|u| u.starts_with("https:"))
}

fn empty_roots() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Arc::new(config)
}
