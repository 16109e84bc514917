//! Configuration reload on SIGHUP: the file is read and validated again, the certificate files and
//! the upstreams are loaded anew, and the new [`Context`] is handed to the accept loops. Sessions
//! already running keep the context they started with, so a reload drops nothing; new connections
//! see the new certificate and upstreams. A reload that fails leaves the running configuration in
//! place and logs why.
//!
//! What a reload keeps from the start: the bound listeners, the admin listener, logging, the
//! stages (metrics, audit, the FETCH cache and its `[cache]` settings; a stage may hand back a
//! new version of itself for new sessions, as the policy does with its script:
//! [`Phases::reload`](crate::phases::Phases::reload)) and the global connection limit; a change
//! to those is logged as needing a restart. The brute-force records carry over. Every SIGHUP, applied or not, is told
//! to the stages ([`Event::Reload`](crate::phases::Event::Reload)): the audit log reopens its
//! file then, as log rotation expects.

use std::sync::Arc;

use figment::Figment;
use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::session::Context;
use crate::tls::{self, TlsError};
use crate::upstreams::{Upstreams, UpstreamsError};

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file or a value in it is wrong.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The certificate or key could not be loaded.
    #[error("certificate: {0}")]
    Certificate(#[from] TlsError),
    /// An upstream's TLS set-up failed.
    #[error("upstreams: {0}")]
    Upstreams(#[from] UpstreamsError),
}

/// Builds the context for `figment` on the model of `running`.
pub fn rebuild(figment: &Figment, running: &Context) -> Result<Context, ReloadError> {
    let config = Config::from_figment(figment)?;
    for (what, same) in [
        ("listen", config.listen == running.config.listen),
        ("admin", config.admin == running.config.admin),
        ("log", config.log == running.config.log),
        ("oauth", config.oauth == running.config.oauth),
        ("cache", config.cache == running.config.cache),
        (
            "limits.max_connections",
            config.limits.max_connections == running.config.limits.max_connections,
        ),
        (
            // A policy is reloaded on SIGHUP; adding or removing one needs a restart.
            "policy.file",
            config.policy.file.is_some() == running.config.policy.file.is_some(),
        ),
    ] {
        if !same {
            tracing::warn!(
                section = what,
                "reload: this setting changed but takes effect only after a restart"
            );
        }
    }
    // A generated certificate is kept: a new one on every reload would break pinned clients.
    let server = if config.tls.cert.is_none() && config.tls == running.config.tls {
        running.acceptor.config().clone()
    } else {
        let loaded = tls::server_config(&config.tls)?;
        tracing::info!(sha256 = %loaded.fingerprint, "reload: certificate loaded");
        loaded.config
    };
    let upstreams = Upstreams::new(&config)?;
    // Last, once nothing else can fail: a stage may load a new version of itself (a policy
    // script) for the sessions that start from now on.
    let stages = running.stages.reloaded(&config);
    Ok(Context::new(config, server, upstreams, stages)
        .with_guard(running.guard.clone())
        .with_oauth(running.oauth.clone()))
}

/// Reloads on every SIGHUP until the process ends: `figment` gives the layered configuration
/// (file, environment, flags) as it is now.
pub async fn on_sighup(
    figment: impl Fn() -> Figment + Send + 'static,
    contexts: watch::Sender<Arc<Context>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "SIGHUP handler not installed: reload unavailable");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let running = contexts.borrow().clone();
        let result = rebuild(&figment(), &running);
        running.stages.observe(&crate::phases::Event::Reload {
            applied: result.is_ok(),
        });
        match result {
            Ok(ctx) => {
                let ctx = Arc::new(ctx);
                tokio::spawn(probe_upstreams(ctx.clone()));
                contexts.send_replace(ctx);
                tracing::info!("reload: configuration applied to new connections");
                // A line scripts and tests can wait for.
                println!("RELOADED");
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the running configuration stays");
                println!("RELOAD FAILED");
            }
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }
}

/// Learns every upstream's pre-login capabilities, so clients are offered the token mechanisms
/// it supports from the first connection on.
pub async fn probe_upstreams(ctx: Arc<Context>) {
    for target in ctx.upstreams.iter() {
        match ctx.connect_upstream(target).await {
            Ok(mut up) => {
                let _ = up.command(b"LOGOUT\r\n").await;
            }
            Err(e) => {
                tracing::warn!(upstream = %target.name, error = %e, "upstream not reachable")
            }
        }
    }
}
