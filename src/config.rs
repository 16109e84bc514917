//! Configuration: typed settings layered by figment — built-in defaults, then a TOML file, then
//! `IMAPGATE_`-prefixed environment variables (`__` separates nesting, e.g.
//! `IMAPGATE_UPSTREAM__ADDRESS`), then command-line flags. Unknown keys and bad values are
//! rejected with the key named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

/// Everything the proxy can be told.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where clients connect.
    pub listen: ListenConfig,
    /// The certificate the proxy presents to clients.
    pub tls: TlsConfig,
    /// The IMAP server behind the proxy: the upstream named `default` (kept for configurations
    /// and flags that know only one upstream).
    pub upstream: UpstreamConfig,
    /// Named upstreams (`[upstreams.NAME]`); a login is routed to one of them (`default` unless
    /// a stage's `on_login` says otherwise).
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// When clients may send passwords.
    pub auth: AuthConfig,
    /// Size and count limits that keep one client from hurting others.
    pub limits: LimitsConfig,
    /// How long each state may last.
    pub timeouts: TimeoutsConfig,
    /// Failed-login penalties per client address and user name (brute-force protection).
    pub auth_penalty: crate::guard::PenaltyConfig,
    /// Log output.
    pub log: LogConfig,
    /// The admin HTTP listener (`/metrics`, `/healthz`, `/readyz`); off unless configured.
    pub admin: AdminConfig,
    /// The audit log (logins, mail-changing commands); off unless `file` is set.
    pub audit: crate::audit::AuditConfig,
    /// The Lua access policy (`docs/policy.md`); off unless `file` is set.
    pub policy: crate::policy::PolicyConfig,
    /// OAuth injection: local passwords in, XOAUTH2/OAUTHBEARER with the proxy's own access
    /// tokens upstream; off unless `[oauth.accounts]` has an entry.
    pub oauth: crate::oauth::OAuthConfig,
    /// The cross-session FETCH cache (`[cache]`); on by default (64 MiB), off with
    /// `max_bytes = 0`.
    pub cache: crate::cache::CacheConfig,
    /// Session threads (`[runtime]`); read at start, a reload does not change them.
    pub runtime: crate::workers::RuntimeConfig,
}

/// The admin HTTP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener (`127.0.0.1:9100`); none means no listener and no metrics.
    pub listen: Option<SocketAddr>,
    /// Seconds between reachability checks of the default upstream (for `/readyz`).
    pub upstream_check_secs: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            upstream_check_secs: 10,
        }
    }
}

/// The name of the upstream that `upstream` (singular) and `--upstream` configure, and that
/// logins go to unless routed elsewhere.
pub const DEFAULT_UPSTREAM: &str = "default";

/// Listener addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Implicit-TLS listeners (IMAPS, RFC 8314), usually port 993.
    pub tls: Vec<SocketAddr>,
    /// Cleartext listeners offering STARTTLS, usually port 143.
    pub plain: Vec<SocketAddr>,
    /// Every listener (these and `[[listen.listener]]` ones) expects a PROXY protocol header
    /// (v1 or v2) from a load balancer (HAProxy `send-proxy`, cloud NLBs) and takes the
    /// client's address from it.
    pub proxy_protocol: bool,
    /// Where PROXY headers are believed from (CIDRs). A connection to a PROXY listener from any
    /// other address is closed: otherwise any client could claim to be anyone (and pass the
    /// loopback rule for cleartext passwords, or dodge the per-address limits).
    pub proxy_trusted_networks: Vec<ipnet::IpNet>,
    /// Further listeners, each with its own settings.
    pub listener: Vec<ListenerConfig>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            tls: vec![SocketAddr::from(([0, 0, 0, 0], 993))],
            plain: vec![SocketAddr::from(([0, 0, 0, 0], 143))],
            proxy_protocol: false,
            proxy_trusted_networks: vec![
                ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(127, 0, 0, 0), 8).into(),
                ipnet::Ipv6Net::new_assert(std::net::Ipv6Addr::LOCALHOST, 128).into(),
            ],
            listener: Vec::new(),
        }
    }
}

/// One listener of `[[listen.listener]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address to bind.
    pub address: SocketAddr,
    /// Implicit TLS (`true`, IMAPS) or cleartext with STARTTLS (`false`).
    #[serde(default)]
    pub tls: bool,
    /// This listener expects a PROXY protocol header (from `listen.proxy_trusted_networks`).
    #[serde(default)]
    pub proxy_protocol: bool,
}

impl ListenConfig {
    /// Every listener to bind: TLS ones first, then cleartext, then `[[listen.listener]]`.
    pub fn all(&self) -> Vec<ListenerConfig> {
        let shorthand = |tls: bool| {
            move |address: &SocketAddr| ListenerConfig {
                address: *address,
                tls,
                proxy_protocol: false,
            }
        };
        let mut all: Vec<ListenerConfig> = self
            .tls
            .iter()
            .map(shorthand(true))
            .chain(self.plain.iter().map(shorthand(false)))
            .chain(self.listener.iter().cloned())
            .collect();
        for l in &mut all {
            l.proxy_protocol |= self.proxy_protocol;
        }
        all
    }

    /// Whether a PROXY header from `peer` is believed.
    pub fn proxy_trusted(&self, peer: std::net::IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.proxy_trusted_networks
            .iter()
            .any(|n| n.contains(&peer))
    }
}

/// The proxy's own certificate. Without `cert` and `key`, a self-signed one is generated at
/// start-up for `self_signed_names` (a development default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Host names and IPs of the generated certificate.
    pub self_signed_names: Vec<String>,
    /// Seconds a client may take to complete the TLS handshake.
    pub handshake_timeout_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            self_signed_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            handshake_timeout_secs: 10,
        }
    }
}

/// How the proxy talks to the upstream server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamTls {
    /// TLS from the first byte (port 993).
    Implicit,
    /// Cleartext, then `STARTTLS` before anything else (port 143).
    Starttls,
    /// No TLS at all; only when chosen explicitly (a server on loopback or a trusted network).
    None,
}

/// The upstream IMAP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// `host:port` of the server. Required.
    pub address: String,
    /// Transport security towards it.
    pub tls: UpstreamTls,
    /// PEM file of CAs to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Name to send as SNI and verify the certificate against (default: the host of `address`).
    pub server_name: Option<String>,
    /// Seconds to establish TCP.
    pub connect_timeout_secs: u64,
    /// Seconds for the TLS handshake, greeting and login exchange.
    pub login_timeout_secs: u64,
    /// Before login, tell the upstream the client's address (`ID ("x-originating-ip" ...)`).
    /// Dovecot honours it from hosts in its `login_trusted_networks`, so its logs and its
    /// per-address auth penalty see clients, not the proxy. Off by default: a provider need
    /// not learn internal addresses.
    pub forward_client_address: bool,
    /// SHA-256 pins of the upstream's certificate (`AB:CD:...` as `openssl x509 -fingerprint
    /// -sha256` prints it) or key (`spki:` + hex). Set, they replace CA validation: for a server
    /// with a self-signed or private-CA certificate, trusting exactly that certificate or key is
    /// narrower than trusting a CA. Names and dates are then not checked (src/tls/pin.rs).
    pub pin_sha256: Vec<String>,
    /// Allow `tls = "none"` to a host that is not loopback. Off: passwords would cross the
    /// network in cleartext, so that has to be asked for by name.
    pub allow_cleartext_upstream: bool,
    /// The SASL mechanism that carries the proxy's own access token (OAuth injection):
    /// `xoauth2` (Gmail, Microsoft 365, Dovecot) or `oauthbearer` (RFC 7628). SASL-IR is used
    /// when the upstream offers it.
    pub oauth_mechanism: crate::session::credentials::TokenMechanism,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            address: String::new(),
            tls: UpstreamTls::Implicit,
            ca_file: None,
            server_name: None,
            connect_timeout_secs: 10,
            login_timeout_secs: 30,
            forward_client_address: false,
            pin_sha256: Vec::new(),
            allow_cleartext_upstream: false,
            oauth_mechanism: crate::session::credentials::TokenMechanism::Xoauth2,
        }
    }
}

/// Where cleartext passwords are accepted (RFC 9051 §11.1 `LOGINDISABLED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlaintextAuth {
    /// Never without TLS.
    Never,
    /// Without TLS only from loopback addresses (Dovecot's default).
    Loopback,
    /// Always (`--insecure-auth`).
    Always,
}

/// Authentication settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// When LOGIN and AUTHENTICATE may run over a connection without TLS.
    pub plaintext: PlaintextAuth,
    /// Failed logins after which the session is closed.
    pub max_failures: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            plaintext: PlaintextAuth::Loopback,
            max_failures: 3,
        }
    }
}

/// Hard limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Longest client command line (bytes, including CRLF); longer ones get `BAD`.
    pub max_line: usize,
    /// Largest client literal; larger ones get `BAD` (synchronizing) or `BYE` (non-sync).
    pub max_literal: u64,
    /// Server lines are buffered whole up to this size and streamed in parts beyond it.
    pub max_response_line: usize,
    /// Concurrent client connections. When all are taken, the oldest connection that has not
    /// logged in is dropped to make room; if every one has logged in, the new one gets `* BYE`.
    pub max_connections: usize,
    /// Concurrent connections from one client address (IPv6: its /64); 0 = no limit.
    pub max_connections_per_ip: u32,
    /// Concurrent connections from one address that have not logged in yet; 0 = no limit.
    pub max_preauth_per_ip: u32,
    /// New connections per second one address may open, on average (0 = no limit) ...
    pub accept_rate_per_ip: u32,
    /// ... and in a burst.
    pub accept_burst_per_ip: u32,
    /// Longest line before login (bytes). Dovecot's login processes read far less than a mailbox
    /// command may need; a longer line ends the connection with `* BYE`, terminated or not.
    pub max_preauth_line: usize,
    /// Commands relayed upstream and not yet answered, before the proxy stops reading the client.
    pub max_pipelined: usize,
    /// Bytes buffered towards one peer before the proxy stops reading from the other.
    pub max_buffered: usize,
    /// Invalid commands before login after which the session is closed.
    pub max_bad_commands: u32,
    /// Largest server message assembled whole for a stage that subscribed to its kind (a LIST
    /// or STATUS response with its literals); a larger one is dropped, never passed unseen.
    pub max_assembled: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_line: 64 * 1024,
            max_literal: 64 * 1024 * 1024,
            max_response_line: 64 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 200,
            max_preauth_per_ip: 20,
            accept_rate_per_ip: 20,
            accept_burst_per_ip: 60,
            max_preauth_line: 16 * 1024,
            max_pipelined: 256,
            max_buffered: 256 * 1024,
            max_bad_commands: 10,
            max_assembled: 1024 * 1024,
        }
    }
}

/// Per-state timeouts, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// A connection that has not logged in after this long is closed.
    pub preauth_secs: u64,
    /// An authenticated session with no traffic in either direction is closed (RFC 9051 §5.4
    /// asks for at least 30 minutes; IDLE clients re-issue IDLE within 29).
    pub authenticated_secs: u64,
    /// On shutdown, how long commands in flight may take before sessions are closed anyway.
    pub shutdown_grace_secs: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            preauth_secs: 60,
            authenticated_secs: 31 * 60,
            shutdown_grace_secs: 10,
        }
    }
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Filter directive (`info`, `imapgate=debug`, ...); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// A configuration that could not be loaded or does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Parsing or type error; figment's message names the key and the source.
    #[error(transparent)]
    Load(#[from] Box<figment::Error>),
    /// A value that parses but cannot work.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// Why it is wrong.
        reason: String,
    },
}

impl Config {
    /// Defaults, then `file` (if any), then the environment, then `overrides` (flags).
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment.merge(Env::prefixed("IMAPGATE_").split("__"))
    }

    /// Extracts and validates a configuration from a figment.
    pub fn from_figment(figment: &Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        };
        if !self.upstream.address.is_empty() && self.upstreams.contains_key(DEFAULT_UPSTREAM) {
            return invalid(
                "upstreams.default",
                "the default upstream is set twice (also as `upstream`)",
            );
        }
        let upstreams = self.upstreams();
        if !upstreams.contains_key(DEFAULT_UPSTREAM) {
            return invalid(
                "upstream.address",
                "required (host:port of the IMAP server, or an [upstreams.default] table)",
            );
        }
        for (name, upstream) in &upstreams {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
            {
                return invalid("upstreams", "names are letters, digits, '-', '_' and '.'");
            }
            if split_host_port(&upstream.address).is_none() {
                let key = if name == DEFAULT_UPSTREAM && self.upstreams.is_empty() {
                    "upstream.address"
                } else {
                    "upstreams.*.address"
                };
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("upstream {name:?}: expected host:port"),
                });
            }
            upstream.validate_tls(
                name,
                name == DEFAULT_UPSTREAM && !self.upstream.address.is_empty(),
            )?;
        }
        if self.audit.queue == 0 {
            return invalid("audit.queue", "must be at least 1");
        }
        if let Err(reason) = self.policy.validate() {
            return Err(ConfigError::Invalid {
                key: "policy",
                reason,
            });
        }
        if self.admin.upstream_check_secs == 0 {
            return invalid("admin.upstream_check_secs", "must be at least 1");
        }
        if self.limits.max_assembled < 64 * 1024 {
            return invalid("limits.max_assembled", "must be at least 65536");
        }
        if self.listen.all().is_empty() {
            return invalid("listen", "at least one listener is needed");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return invalid("tls", "cert and key go together");
        }
        if self.limits.max_line < 1024 {
            return invalid("limits.max_line", "must be at least 1024");
        }
        if self.limits.max_response_line < 1024 {
            return invalid("limits.max_response_line", "must be at least 1024");
        }
        if let Some((key, reason)) = self.auth_penalty.problem() {
            return invalid(key, reason);
        }
        if self.limits.max_preauth_line < 1024 {
            return invalid("limits.max_preauth_line", "must be at least 1024");
        }
        if self.limits.accept_rate_per_ip > 0 && self.limits.accept_burst_per_ip == 0 {
            return invalid("limits.accept_burst_per_ip", "must be at least 1");
        }
        if self.limits.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1");
        }
        if self.limits.max_pipelined == 0 {
            return invalid("limits.max_pipelined", "must be at least 1");
        }
        if self.limits.max_buffered < 16 * 1024 {
            return invalid("limits.max_buffered", "must be at least 16384");
        }
        if self.timeouts.preauth_secs == 0 || self.timeouts.authenticated_secs == 0 {
            return invalid("timeouts", "timeouts must be positive");
        }
        let names: Vec<&str> = upstreams.keys().map(String::as_str).collect();
        self.oauth.validate(&names)?;
        Ok(())
    }
}

impl UpstreamConfig {
    /// Pins and cleartext: `single` names keys `upstream.*`, else `upstreams.*.*`.
    fn validate_tls(&self, name: &str, single: bool) -> Result<(), ConfigError> {
        let key = |one, many| if single { one } else { many };
        let invalid = |key, reason: String| {
            Err(ConfigError::Invalid {
                key,
                reason: format!("upstream {name:?}: {reason}"),
            })
        };
        let pin_key = key("upstream.pin_sha256", "upstreams.*.pin_sha256");
        if let Err(e) = crate::tls::pin::parse_pins(&self.pin_sha256) {
            return invalid(pin_key, e);
        }
        if !self.pin_sha256.is_empty() && self.ca_file.is_some() {
            return invalid(pin_key, "pins replace ca_file; set one of them".into());
        }
        if !self.pin_sha256.is_empty() && self.tls == UpstreamTls::None {
            return invalid(pin_key, "pins need tls = implicit or starttls".into());
        }
        let host = split_host_port(&self.address).map_or("", |(h, _)| h);
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if self.tls == UpstreamTls::None && !loopback && !self.allow_cleartext_upstream {
            let reason = format!(
                "tls = \"none\" sends passwords in cleartext to {host}, which is not loopback; \
                 set allow_cleartext_upstream = true if that network is trusted"
            );
            return invalid(key("upstream.tls", "upstreams.*.tls"), reason);
        }
        Ok(())
    }
}

impl Config {
    /// Every upstream by name: the `[upstreams.*]` tables, plus `upstream` (singular) as
    /// `default` when it names an address.
    pub fn upstreams(&self) -> BTreeMap<String, UpstreamConfig> {
        let mut all = self.upstreams.clone();
        if !self.upstream.address.is_empty() {
            all.insert(DEFAULT_UPSTREAM.to_string(), self.upstream.clone());
        }
        all
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals).
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests;
