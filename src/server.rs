//! Listeners and their accept loops: the global connection limit (when it is reached, the oldest
//! connection that has not logged in is dropped to make room), one task per session, the current
//! configuration (a reload swaps the [`Context`] new connections get; running sessions keep
//! theirs), and graceful shutdown (mini-redis style): on the signal, accept loops stop, every
//! session is told through its [`Shutdown`], and the server waits until all of them have finished
//! or the grace period (plus a small margin for closing) has passed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::session::{self, Context, ListenerKind};
use crate::shutdown::Shutdown;
use crate::workers::Workers;

/// A bound listening socket.
pub struct Listener {
    /// Implicit TLS or cleartext with STARTTLS.
    pub kind: ListenerKind,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
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
    for listener in ctx.config.listen.all() {
        let addr = listener.address;
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("binding {addr}: {e}")))?;
        let kind = if listener.tls {
            ListenerKind::Tls
        } else {
            ListenerKind::Plain
        };
        out.push(Listener {
            kind,
            proxy_protocol: listener.proxy_protocol,
            socket,
        });
    }
    Ok(out)
}

/// What the accept loops share.
struct Shared {
    /// The current session configuration; a reload sends a new one.
    contexts: watch::Receiver<Arc<Context>>,
    /// One permit per open connection.
    limit: Arc<Semaphore>,
    /// The shutdown flag, subscribed to by each session.
    notify: watch::Receiver<bool>,
    /// Cloned into every session; the server's receiver sees the channel close when all of them
    /// (and the accept loops, which hold this struct) are done.
    done: mpsc::Sender<()>,
    /// Session ids for logs.
    next_id: AtomicU64,
    /// Where sessions run: the session threads, or (none) the runtime of the accept loops.
    workers: Option<Arc<Workers>>,
}

/// Serves until `signal` completes, then shuts down gracefully. New connections get the
/// context `contexts` holds at their accept. The connection limit is the first context's.
/// Sessions run on the caller's runtime.
pub async fn run(
    contexts: watch::Receiver<Arc<Context>>,
    listeners: Vec<Listener>,
    signal: impl Future<Output = ()>,
) {
    run_on(contexts, listeners, signal, None).await;
}

/// [`run`], with the sessions on `workers` (one runtime per thread) when given.
pub async fn run_on(
    contexts: watch::Receiver<Arc<Context>>,
    listeners: Vec<Listener>,
    signal: impl Future<Output = ()>,
    workers: Option<Arc<Workers>>,
) {
    let (notify_tx, notify) = watch::channel(false);
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let max_connections = contexts.borrow().config.limits.max_connections;
    let current = contexts.clone();
    let shared = Arc::new(Shared {
        limit: Arc::new(Semaphore::new(max_connections)),
        contexts,
        notify,
        done,
        next_id: AtomicU64::new(1),
        workers,
    });
    for listener in listeners {
        let shutdown = Shutdown::new(shared.notify.clone());
        tokio::spawn(accept_loop(shared.clone(), listener, shutdown));
    }
    drop(shared);
    signal.await;
    // The grace period of the configuration in force when the signal came.
    let grace = Duration::from_secs(current.borrow().config.timeouts.shutdown_grace_secs);
    tracing::info!(grace_secs = grace.as_secs(), "shutting down");
    let _ = notify_tx.send(true);
    // Accept loops exit on the notice and drop their `Shared`; sessions drop their `done` clone
    // when they end. `recv` returns `None` once every sender is gone.
    let margin = Duration::from_secs(3);
    if crate::timer::timeout(grace + margin, all_done.recv())
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
                crate::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = shared.contexts.borrow().clone();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let accepted = session::Accepted {
            peer,
            listener: kind,
            proxy_protocol: listener.proxy_protocol,
            id,
        };
        let permit = match shared.limit.clone().try_acquire_owned() {
            Ok(permit) => permit,
            // Every slot is taken: drop the oldest connection that has not logged in (it may be
            // one of many an attacker holds open) and take its slot once it is gone, as
            // Dovecot's login processes do. The wait happens in the new connection's own task.
            Err(_) if ctx.guard.admission.evict_oldest() => {
                tracing::info!(client = %peer, "connection limit reached: dropping the oldest connection not logged in");
                ctx.stages.observe(&crate::phases::Event::LimitRejected {
                    kind: "evicted_preauth",
                });
                let limit = shared.limit.clone();
                let session_shutdown = Shutdown::new(shared.notify.clone());
                let done = shared.done.clone();
                spawn_session(&shared, tcp, move |tcp| async move {
                    let wait = crate::timer::timeout(EVICTION_WAIT, limit.acquire_owned()).await;
                    match wait {
                        Ok(Ok(permit)) => {
                            session::run(ctx, tcp, accepted, session_shutdown, (permit, done))
                                .await;
                        }
                        _ => match tokio::net::TcpStream::from_std(tcp) {
                            Ok(tcp) => refuse(&ctx, tcp, kind).await,
                            Err(e) => tracing::warn!(error = %e, "accepted connection lost"),
                        },
                    }
                });
                continue;
            }
            Err(_) => {
                tracing::warn!(client = %peer, "connection limit reached");
                tokio::spawn(async move { refuse(&ctx, tcp, kind).await });
                continue;
            }
        };
        let session_shutdown = Shutdown::new(shared.notify.clone());
        let done = shared.done.clone();
        spawn_session(&shared, tcp, move |tcp| {
            session::run(ctx, tcp, accepted, session_shutdown, (permit, done))
        });
    }
}

/// Runs `session` for `tcp` on the next session thread (the socket, handed over as a std
/// socket, registers with that thread's I/O driver when the session first polls it), or on this
/// runtime when there are no session threads. When the socket cannot be taken out of this
/// runtime, the connection is closed (`session` is dropped uncalled, releasing what it holds).
fn spawn_session<F, Fut>(shared: &Shared, tcp: TcpStream, session: F)
where
    F: FnOnce(std::net::TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    match tcp.into_std() {
        Ok(std) => match shared.workers.as_ref() {
            Some(workers) => workers.spawn(session(std)),
            None => drop(tokio::spawn(session(std))),
        },
        Err(e) => tracing::warn!(error = %e, "accepted connection lost moving threads"),
    }
}

/// How long a connection waits for the slot of the one dropped to make room for it.
const EVICTION_WAIT: Duration = Duration::from_secs(2);

/// Turns a connection away for lack of slots: a `* BYE` on a cleartext listener (a TLS client
/// could not read it before the handshake), then close.
async fn refuse(ctx: &Context, mut tcp: tokio::net::TcpStream, kind: ListenerKind) {
    ctx.stages.observe(&crate::phases::Event::LimitRejected {
        kind: "connections",
    });
    if kind == ListenerKind::Plain {
        let _ = crate::timer::timeout(
            Duration::from_secs(1),
            tcp.write_all(b"* BYE [UNAVAILABLE] Too many connections.\r\n"),
        )
        .await;
    }
}
