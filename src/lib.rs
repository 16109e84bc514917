//! imapgate: a transparent, TLS-terminating IMAP proxy.
//!
//! # Layout
//! - [`admin`]: the admin HTTP listener (`/metrics`, `/healthz`, `/readyz`) and readiness.
//! - [`audit`]: the audit log stage (logins and mail-changing commands as JSON lines).
//! - [`config`]: typed configuration (figment: defaults, TOML file, `IMAPGATE_*` env, flags).
//! - [`server`]: listeners, connection limit, accept loops, graceful shutdown.
//! - [`session`]: one client session: TLS accept, the proxy's own pre-login dialogue, login
//!   upstream, then the full-duplex relay with state tracking.
//! - [`upstream`]: connect, TLS/STARTTLS, greeting, capabilities, login on the client's behalf.
//! - [`proto`]: the wire protocol with no I/O: framer (lines and literal chunks), command and
//!   response classifiers, argument parsers, encoders.
//! - [`proxy_protocol`]: the HAProxy PROXY header (v1/v2) in front of a connection.
//! - [`phases`]: the seam features plug into (stages with named phases; the call order and a
//!   drawing are in its docs). [`metrics`] is the first stage, served by [`admin`].
//! - [`upstreams`]: the named upstreams.
//! - [`oauth`]: OAuth injection (local passwords in, XOAUTH2/OAUTHBEARER with the proxy's own
//!   access tokens upstream; token cache, single-flight refresh, encrypted file or Redis store).
//! - [`metrics`]: the Prometheus metrics stage (on the [`phases`] seam).
//! - [`policy`]: the Lua access policy stage (sandboxed scripts deciding at every phase).
//! - [`workers`]: the session threads; [`timer`]: their timers (they run without tokio's).
//! - [`tls`], [`stream`], [`shutdown`], [`secret`], [`hardening`], [`error`], [`telemetry`].
//!
//! Hot path: client socket → (driver) → core: framer + lexer → classifier → stages'
//! `on_command` → (state, local answers) → upstream socket, and back: upstream socket → framer →
//! classifier → (state, `on_tagged`, subscribed messages to `on_response`, capability filter) →
//! client socket. Bytes nobody subscribed to are forwarded in place, never copied.

// Unit tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod admin;
pub mod audit;
pub mod cache;
pub mod config;
pub mod error;
pub mod guard;
pub mod hardening;
pub mod metrics;
pub mod oauth;
pub mod phases;
pub mod policy;
pub mod proto;
pub mod proxy_protocol;
pub mod reload;
pub mod secret;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod stream;
pub mod telemetry;
pub mod timer;
pub mod tls;
pub mod upstream;
pub mod upstreams;
pub mod workers;
