//! The `[oauth]` configuration: the authorization server (token endpoint, client, scope), the
//! token store (an encrypted file or Redis) and its key, the accounts tokens are obtained for
//! (`[oauth.accounts.NAME]`), and the local users who log in with a password and are logged in
//! upstream with an account's token (`[oauth.users.NAME]`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `[oauth]`. Off (no token service, no stage) unless `accounts` has an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// The authorization server's token endpoint (`https://...`; `http://` only to loopback).
    pub token_endpoint: String,
    /// Its device authorization endpoint (RFC 8628), for `imapgate oauth enroll`.
    pub device_authorization_endpoint: Option<String>,
    /// The proxy's client id at the authorization server.
    pub client_id: String,
    /// Its client secret (none for a public client). Better given in the environment:
    /// `IMAPGATE_OAUTH__CLIENT_SECRET`.
    pub client_secret: Option<Hidden>,
    /// How the client authenticates to the token endpoint: `basic` (HTTP Basic, RFC 6749
    /// §2.3.1) or `post` (client_id and client_secret in the form).
    pub client_auth: ClientAuth,
    /// Scope asked for (space-separated), e.g. `https://outlook.office.com/IMAP.AccessAsUser.All
    /// offline_access` or `https://mail.google.com/`.
    pub scope: String,
    /// PEM file of CAs to verify the token endpoint with, instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Bound on getting a token, in milliseconds: one token request (connect, TLS, answer), and
    /// a login's wait for a refresh another session or replica is doing. Past it the client
    /// gets `NO [UNAVAILABLE]`.
    pub request_timeout_ms: u64,
    /// An access token is used until this many seconds before it expires (at most half its
    /// lifetime), then refreshed.
    pub refresh_margin_secs: u64,
    /// After a token request failed, logins for that account get the same answer for this many
    /// seconds without a new request (so a revoked grant is not hammered by every client).
    pub failure_cache_secs: u64,
    /// Where refresh tokens (and, with Redis, access tokens) are kept.
    pub store: StoreKind,
    /// The encrypted token file (`store = "file"`).
    pub store_file: PathBuf,
    /// The 32-byte store key, base64; better given in the environment: `IMAPGATE_OAUTH__KEY`.
    pub key: Option<Hidden>,
    /// A file holding the key (base64). It must not be in the store file's directory.
    pub key_file: Option<PathBuf>,
    /// Redis URL (`store = "redis"`), e.g. `redis://127.0.0.1:6379/0` (`rediss://` for TLS is not
    /// supported; keep Redis on a private network or loopback).
    pub redis_url: Option<String>,
    /// Prefix of every Redis key the proxy writes.
    pub redis_prefix: String,
    /// With Redis: how long a replica may hold an account's refresh lock (ms). A replica that
    /// dies while refreshing frees the account after this.
    pub lock_lease_ms: u64,
    /// A successful local password check is remembered this many seconds (in memory, keyed by
    /// user and a keyed hash of the password), so a warm login skips Argon2id. 0: never.
    pub verify_cache_secs: u64,
    /// Argon2id verifications run at once (each takes tens of ms and ~19 MiB); 0: one per core.
    pub max_parallel_verifications: usize,
    /// The accounts tokens are obtained for.
    pub accounts: BTreeMap<String, AccountConfig>,
    /// Local users: a password checked here, logged in upstream with an account's token.
    pub users: BTreeMap<String, UserConfig>,
    /// Refuse logins of user names not in `users` (`NO [AUTHENTICATIONFAILED]`) instead of
    /// passing them to the upstream with the client's own credentials.
    pub refuse_unknown_users: bool,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            token_endpoint: String::new(),
            device_authorization_endpoint: None,
            client_id: String::new(),
            client_secret: None,
            client_auth: ClientAuth::Basic,
            scope: String::new(),
            ca_file: None,
            request_timeout_ms: 5000,
            refresh_margin_secs: 60,
            failure_cache_secs: 5,
            store: StoreKind::File,
            store_file: PathBuf::from("/var/lib/imapgate/oauth-tokens"),
            key: None,
            key_file: None,
            redis_url: None,
            redis_prefix: "imapgate:oauth:".into(),
            lock_lease_ms: 10_000,
            verify_cache_secs: 300,
            max_parallel_verifications: 0,
            accounts: BTreeMap::new(),
            users: BTreeMap::new(),
            refuse_unknown_users: false,
        }
    }
}

/// A configured secret (client secret, store key): shown as `<redacted>` by `Debug`
/// (`imapgate check-config` prints the configuration).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hidden(pub String);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Hidden {
    /// The secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Hidden {
    fn from(s: &str) -> Hidden {
        Hidden(s.to_string())
    }
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// `Authorization: Basic` (client_secret_basic).
    Basic,
    /// In the form body (client_secret_post).
    Post,
}

/// Where tokens are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// An encrypted local file (one replica).
    File,
    /// Redis, shared by replicas (values encrypted with the same key).
    Redis,
}

/// How an account's tokens are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// The refresh-token grant, from a refresh token `imapgate oauth enroll` stored.
    RefreshToken,
    /// The client-credentials grant (an application's own mailbox access).
    ClientCredentials,
}

/// `[oauth.accounts.NAME]`: a mailbox identity at the provider. Unset keys come from `[oauth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// `refresh_token` (default) or `client_credentials`.
    #[serde(default = "default_grant")]
    pub grant: GrantKind,
    /// Token endpoint for this account.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// Client id for this account.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Client secret for this account.
    #[serde(default)]
    pub client_secret: Option<Hidden>,
    /// Scope for this account.
    #[serde(default)]
    pub scope: Option<String>,
}

fn default_grant() -> GrantKind {
    GrantKind::RefreshToken
}

/// `[oauth.users.NAME]`: a local user (the name the legacy client logs in with).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Argon2id PHC string of the local password (`imapgate hash-password` prints one).
    pub password_hash: String,
    /// The `[oauth.accounts]` entry whose token logs this user in upstream.
    pub account: String,
    /// The user name sent upstream (in the XOAUTH2/OAUTHBEARER message); default: the local name.
    #[serde(default)]
    pub upstream_user: Option<String>,
    /// The named upstream to log in at (`[upstreams.NAME]`); default: the login's upstream.
    #[serde(default)]
    pub upstream: Option<String>,
}

/// An account with `[oauth]` defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Its grant.
    pub grant: GrantKind,
    /// Token endpoint.
    pub token_endpoint: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: Option<Hidden>,
    /// Scope.
    pub scope: String,
}

impl OAuthConfig {
    /// Whether OAuth injection is configured at all.
    pub fn enabled(&self) -> bool {
        !self.accounts.is_empty()
    }

    /// `account` with the `[oauth]` defaults filled in.
    pub fn resolve(&self, account: &str) -> Option<Resolved> {
        let a = self.accounts.get(account)?;
        Some(Resolved {
            grant: a.grant,
            token_endpoint: a
                .token_endpoint
                .clone()
                .unwrap_or_else(|| self.token_endpoint.clone()),
            client_id: a
                .client_id
                .clone()
                .unwrap_or_else(|| self.client_id.clone()),
            client_secret: a
                .client_secret
                .clone()
                .or_else(|| self.client_secret.clone()),
            scope: a.scope.clone().unwrap_or_else(|| self.scope.clone()),
        })
    }

    /// Checks what types alone cannot (named keys in the errors). `upstreams` are the names of
    /// the configured upstreams.
    pub fn validate(&self, upstreams: &[&str]) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        if !self.enabled() {
            if !self.users.is_empty() {
                return invalid("oauth.users", "users need [oauth.accounts] entries".into());
            }
            return Ok(());
        }
        for name in self.accounts.keys() {
            let Some(a) = self.resolve(name) else {
                continue;
            };
            if let Err(reason) = check_endpoint(&a.token_endpoint) {
                return invalid(
                    "oauth.token_endpoint",
                    format!("account {name:?}: {reason}"),
                );
            }
            if a.client_id.is_empty() {
                return invalid("oauth.client_id", format!("account {name:?}: required"));
            }
        }
        if let Some(device) = &self.device_authorization_endpoint {
            if let Err(reason) = check_endpoint(device) {
                return invalid("oauth.device_authorization_endpoint", reason);
            }
        }
        for (name, user) in &self.users {
            if !self.accounts.contains_key(&user.account) {
                return invalid(
                    "oauth.users.*.account",
                    format!("user {name:?}: no [oauth.accounts.{}]", user.account),
                );
            }
            if let Err(e) = argon2::PasswordHash::new(&user.password_hash) {
                return invalid(
                    "oauth.users.*.password_hash",
                    format!("user {name:?}: not a PHC string ({e}); see `imapgate hash-password`"),
                );
            }
            if !user.password_hash.starts_with("$argon2id$") {
                return invalid(
                    "oauth.users.*.password_hash",
                    format!("user {name:?}: must be Argon2id ($argon2id$...)"),
                );
            }
            if let Some(up) = &user.upstream {
                if !upstreams.contains(&up.as_str()) {
                    return invalid(
                        "oauth.users.*.upstream",
                        format!("user {name:?}: no upstream named {up:?}"),
                    );
                }
            }
        }
        if self.request_timeout_ms == 0 {
            return invalid("oauth.request_timeout_ms", "must be at least 1".into());
        }
        if self.lock_lease_ms < self.request_timeout_ms {
            return invalid(
                "oauth.lock_lease_ms",
                "must be at least oauth.request_timeout_ms (a refresh must fit in the lease)"
                    .into(),
            );
        }
        match (&self.key, &self.key_file) {
            (None, None) => {
                return invalid(
                    "oauth.key",
                    "a store key is required: oauth.key (or IMAPGATE_OAUTH__KEY) or oauth.key_file"
                        .into(),
                );
            }
            (Some(_), Some(_)) => {
                return invalid(
                    "oauth.key",
                    "set oauth.key or oauth.key_file, not both".into(),
                );
            }
            (Some(k), None) => {
                if let Err(reason) = crate::oauth::store::parse_key(k.expose()) {
                    return invalid("oauth.key", reason);
                }
            }
            (None, Some(file)) => {
                if self.store == StoreKind::File && beside(file, &self.store_file) {
                    return invalid(
                        "oauth.key_file",
                        "the key must not be kept beside the token file (same directory)".into(),
                    );
                }
            }
        }
        if self.store == StoreKind::Redis && self.redis_url.is_none() {
            return invalid("oauth.redis_url", "required with store = \"redis\"".into());
        }
        Ok(())
    }
}

/// Whether two files are in the same directory (compared after resolving what exists).
pub fn beside(a: &Path, b: &Path) -> bool {
    let dir = |p: &Path| {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
        let parent = parent.unwrap_or(Path::new("."));
        std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf())
    };
    dir(a) == dir(b)
}

/// An endpoint URL the token client can use: `https://host[:port]/path`, or `http://` to a
/// loopback host.
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err(format!(
            "{url:?}: http:// only to loopback; tokens and secrets need https://"
        )),
        _ => Err(format!("{url:?}: expected https://")),
    }
}

/// Whether a URL host is loopback (`localhost`, 127/8, ::1).
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> OAuthConfig {
        let mut c = OAuthConfig {
            token_endpoint: "https://login.example.com/token".into(),
            client_id: "proxy".into(),
            key: Some(crate::oauth::store::encode_key(&[7; 32]).as_str().into()),
            ..OAuthConfig::default()
        };
        c.accounts.insert(
            "alice".into(),
            AccountConfig {
                grant: GrantKind::RefreshToken,
                token_endpoint: None,
                client_id: None,
                client_secret: None,
                scope: Some("mail".into()),
            },
        );
        c
    }

    #[test]
    fn validation_names_the_key() {
        assert!(base().validate(&["default"]).is_ok());
        let err = |c: OAuthConfig| c.validate(&["default"]).unwrap_err().to_string();

        let mut c = base();
        c.token_endpoint = "http://login.example.com/token".into();
        assert!(err(c).contains("oauth.token_endpoint"));
        let mut c = base();
        c.token_endpoint = "http://127.0.0.1:8080/token".into();
        assert!(c.validate(&["default"]).is_ok());

        let mut c = base();
        c.key = None;
        assert!(err(c).contains("oauth.key"));
        let mut c = base();
        c.key = Some("c2hvcnQ=".into());
        assert!(err(c).contains("oauth.key"));

        let mut c = base();
        c.key = None;
        c.store_file = "/tmp/imapgate-x/tokens".into();
        c.key_file = Some("/tmp/imapgate-x/key".into());
        assert!(err(c).contains("oauth.key_file"));

        let mut c = base();
        c.users.insert(
            "bob".into(),
            UserConfig {
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$\
                    ZmFrZWhhc2hmYWtlaGFzaGZha2VoYXNoZmFrZWhhcw"
                    .into(),
                account: "nobody".into(),
                upstream_user: None,
                upstream: None,
            },
        );
        assert!(err(c.clone()).contains("oauth.users.*.account"));
        c.users.get_mut("bob").unwrap().account = "alice".into();
        assert!(c.validate(&["default"]).is_ok());
        c.users.get_mut("bob").unwrap().upstream = Some("eu".into());
        assert!(err(c.clone()).contains("oauth.users.*.upstream"));
        c.users.get_mut("bob").unwrap().upstream = None;
        c.users.get_mut("bob").unwrap().password_hash = "plain".into();
        assert!(err(c).contains("password_hash"));

        let mut c = base();
        c.store = StoreKind::Redis;
        assert!(err(c).contains("oauth.redis_url"));

        let mut c = base();
        c.lock_lease_ms = 10;
        assert!(err(c).contains("oauth.lock_lease_ms"));
    }

    #[test]
    fn accounts_inherit_the_defaults() {
        let c = base();
        let a = c.resolve("alice").unwrap();
        assert_eq!(a.token_endpoint, "https://login.example.com/token");
        assert_eq!((a.client_id.as_str(), a.scope.as_str()), ("proxy", "mail"));
        assert!(c.resolve("nobody").is_none());
    }
}
