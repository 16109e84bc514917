//! Listeners and their accept loops: the connection limit, one task per session, and graceful
//! shutdown (mini-redis style): on the signal, accept loops stop, every session is told through
//! its [`Shutdown`], and the server waits until all of them have finished or the grace period
//! (plus a small margin for closing) has passed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::session::{self, Context, ListenerKind};
use crate::shutdown::Shutdown;

/// A bound listening socket.
pub struct Listener {
    /// Implicit TLS or cleartext with STARTTLS.
    pub kind: ListenerKind,
    /// The socket.
    pub socket: TcpListener,
}

impl Listener {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Binds every configured listener (TLS ones first).
pub async fn bind(ctx: &Context) -> io::Result<Vec<Listener>> {
    let mut out = Vec::new();
    let listen = &ctx.config.listen;
    let all = listen
        .tls
        .iter()
        .map(|a| (ListenerKind::Tls, a))
        .chain(listen.plain.iter().map(|a| (ListenerKind::Plain, a)));
    for (kind, addr) in all {
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("binding {addr}: {e}")))?;
        out.push(Listener { kind, socket });
    }
    Ok(out)
}

/// What the accept loops share.
struct Shared {
    /// Session configuration.
    ctx: Arc<Context>,
    /// One permit per open connection.
    limit: Arc<Semaphore>,
    /// The shutdown flag, subscribed to by each session.
    notify: watch::Receiver<bool>,
    /// Cloned into every session; the server's receiver sees the channel close when all of them
    /// (and the accept loops, which hold this struct) are done.
    done: mpsc::Sender<()>,
    /// Session ids for logs.
    next_id: AtomicU64,
}

/// Serves until `signal` completes, then shuts down gracefully.
pub async fn run(ctx: Arc<Context>, listeners: Vec<Listener>, signal: impl Future<Output = ()>) {
    let (notify_tx, notify) = watch::channel(false);
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let grace = Duration::from_secs(ctx.config.timeouts.shutdown_grace_secs);
    let shared = Arc::new(Shared {
        limit: Arc::new(Semaphore::new(ctx.config.limits.max_connections)),
        ctx,
        notify,
        done,
        next_id: AtomicU64::new(1),
    });
    for listener in listeners {
        let shutdown = Shutdown::new(shared.notify.clone());
        tokio::spawn(accept_loop(shared.clone(), listener, shutdown));
    }
    drop(shared);
    signal.await;
    tracing::info!(grace_secs = grace.as_secs(), "shutting down");
    let _ = notify_tx.send(true);
    // Accept loops exit on the notice and drop their `Shared`; sessions drop their `done` clone
    // when they end. `recv` returns `None` once every sender is gone.
    let margin = Duration::from_secs(3);
    if tokio::time::timeout(grace + margin, all_done.recv())
        .await
        .is_err()
    {
        tracing::warn!("shutdown: sessions still open after the grace period");
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: Listener, mut shutdown: Shutdown) {
    let kind = listener.kind;
    loop {
        let accepted = tokio::select! {
            r = listener.socket.accept() => r,
            () = shutdown.recv() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = shared.limit.clone().try_acquire_owned() else {
            tracing::warn!(client = %peer, "connection limit reached");
            shared
                .ctx
                .stages
                .observe(&crate::phases::Event::LimitRejected {
                    kind: "connections",
                });
            if kind == ListenerKind::Plain {
                tokio::spawn(async move {
                    let mut tcp = tcp;
                    let _ = tcp
                        .write_all(b"* BYE [UNAVAILABLE] Too many connections.\r\n")
                        .await;
                });
            }
            continue;
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let ctx = shared.ctx.clone();
        let session_shutdown = Shutdown::new(shared.notify.clone());
        let done = shared.done.clone();
        tokio::spawn(async move {
            session::run(ctx, tcp, peer, kind, id, session_shutdown).await;
            drop(permit);
            drop(done);
        });
    }
}
