//! The admin HTTP listener (`[admin] listen`): `GET /metrics` (the [`Metrics`] stage's registry
//! in the Prometheus text format), `GET /healthz` (200 while the process runs) and `GET /readyz`
//! (200 only while the listeners are bound, the default upstream answered at the last check and
//! the server is not draining; otherwise 503 with a one-line reason). Owns the readiness state
//! and the periodic upstream check that feeds it.
//!
//! HTTP/1.1 only, served by hyper 1 directly: three fixed routes need no router.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::session::Context;
use crate::shutdown::Shutdown;

/// The Prometheus text exposition format's content type.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Binding the address failed.
    #[error("binding the admin listener {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The default upstream's state at the last check.
const UPSTREAM_UNCHECKED: u8 = 0;
/// It answered.
const UPSTREAM_UP: u8 = 1;
/// It did not.
const UPSTREAM_DOWN: u8 = 2;

/// What `/readyz` answers from: flags set by `main`, the server and the upstream check.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Every client listener is bound.
    listeners_bound: AtomicBool,
    /// The default upstream at the last check (`UPSTREAM_*`).
    upstream: AtomicU8,
    /// The shutdown signal fired: new sessions should go elsewhere.
    draining: AtomicBool,
}

impl Readiness {
    /// Not ready: nothing bound, upstream unchecked.
    pub fn new() -> Arc<Readiness> {
        Arc::new(Readiness::default())
    }

    /// The client listeners are bound.
    pub fn set_listeners_bound(&self) {
        self.listeners_bound.store(true, Ordering::Release);
    }

    /// The server is shutting down.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Records the outcome of an upstream check; returns whether it changed.
    pub fn set_upstream(&self, up: bool) -> bool {
        let new = if up { UPSTREAM_UP } else { UPSTREAM_DOWN };
        self.upstream.swap(new, Ordering::AcqRel) != new
    }

    /// Why the proxy is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Acquire) {
            return Some("draining: shutting down");
        }
        if !self.listeners_bound.load(Ordering::Acquire) {
            return Some("listeners not bound yet");
        }
        match self.upstream.load(Ordering::Acquire) {
            UPSTREAM_UP => None,
            UPSTREAM_UNCHECKED => Some("default upstream not checked yet"),
            _ => Some("default upstream unreachable at the last check"),
        }
    }
}

/// Binds the admin address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

/// Admin connections served at once; further ones wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 16;

/// Bytes buffered per admin connection (a scrape request is a few hundred bytes).
const MAX_REQUEST_BUFFER: usize = 16 * 1024;

/// What every admin request is answered from.
struct State {
    /// The registry behind `/metrics`.
    metrics: Arc<Metrics>,
    /// Behind `/readyz`.
    readiness: Arc<Readiness>,
}

/// Serves admin requests until `stop` fires; connections open then are closed gracefully
/// (a response being written completes).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    mut stop: Shutdown,
) {
    let state = Arc::new(State { metrics, readiness });
    // Scrapes are one request each from a few scrapers: a small cap keeps a flood of admin
    // connections from costing the IMAP listeners file descriptors or memory.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = stop.recv() => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    crate::timer::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.recv() => return,
        };
        let state = state.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BUFFER)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service);
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.recv() => {
                    conn.as_mut().graceful_shutdown();
                    match crate::timer::timeout(Duration::from_secs(2), conn).await {
                        Ok(r) => r,
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "admin connection");
            }
        });
    }
}

/// Answers one request.
fn route(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => match state.metrics.render() {
            Ok(body) => {
                let mut r = text(StatusCode::OK, body);
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
                r
            }
            Err(e) => {
                tracing::warn!(error = %e, "rendering metrics");
                text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
            }
        },
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match state.readiness.not_ready() {
            None => text(StatusCode::OK, "ready\n".into()),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// A plain-text response.
fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Connects to the default upstream every `admin.upstream_check_secs` (the first time at once),
/// sends `LOGOUT`, and records whether it answered, until `stop` fires. The connects go
/// through [`Context::connect_upstream`], so they show in the upstream connect metrics too.
pub async fn check_upstream(
    contexts: tokio::sync::watch::Receiver<Arc<Context>>,
    readiness: Arc<Readiness>,
    mut stop: Shutdown,
) {
    // The interval is the start-up configuration's (the admin section is not reloaded); the
    // upstream checked is the current configuration's default.
    let every = Duration::from_secs(contexts.borrow().config.admin.upstream_check_secs);
    #[allow(clippy::disallowed_methods)] // Spawned on the main runtime only (main.rs).
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.recv() => return,
        }
        let ctx = contexts.borrow().clone();
        let target = ctx.upstreams.default_upstream();
        let up = tokio::select! {
            r = ctx.connect_upstream(target) => match r {
                Ok(mut upstream) => {
                    // Reachable: the LOGOUT is a courtesy, bounded so that a server that stalls
                    // on it cannot freeze the checks (and /readyz with them).
                    let within = Duration::from_secs(target.config.connect_timeout_secs);
                    let _ = crate::timer::timeout(within, upstream.command(b"LOGOUT\r\n")).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            () = stop.recv() => return,
        };
        let changed = readiness.set_upstream(up.is_ok());
        match up {
            Ok(()) if changed => tracing::info!(upstream = %target.name, "upstream reachable"),
            Err(e) if changed => {
                tracing::warn!(upstream = %target.name, error = %e, "upstream unreachable")
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_bound_upstream_up_and_not_draining() {
        let r = Readiness::new();
        assert_eq!(r.not_ready(), Some("listeners not bound yet"));
        r.set_listeners_bound();
        assert_eq!(r.not_ready(), Some("default upstream not checked yet"));
        assert!(r.set_upstream(false));
        assert!(r.not_ready().is_some_and(|w| w.contains("unreachable")));
        assert!(r.set_upstream(true));
        assert!(!r.set_upstream(true), "no change");
        assert_eq!(r.not_ready(), None);
        r.set_draining();
        assert!(r.not_ready().is_some_and(|w| w.starts_with("draining")));
    }
}
