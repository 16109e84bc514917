//! A client session from accept to close: the TLS handshake (implicit-TLS listener), the
//! proxy's own pre-login dialogue, then the relay, with per-state timeouts and the shutdown
//! signal watched throughout. Only this module and `upstream` touch sockets.

pub mod credentials;
pub mod pipe;
pub mod preauth;
pub mod relay;
pub mod state;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::config::Config;
use crate::error::{SessionError, Side};
use crate::proto::framer::{Direction, Framer, Limits};
use crate::session::credentials::TokenMechanism;
use crate::session::relay::{End, Relay};
use crate::session::wire::Wire;
use crate::shutdown::Shutdown;
use crate::stream::Stream;

/// Which kind of listener accepted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// TLS from the first byte (993).
    Tls,
    /// Cleartext with STARTTLS (143).
    Plain,
}

/// What every session shares: configuration and TLS set-up, built once at start.
pub struct Context {
    /// The configuration.
    pub config: Config,
    /// Accepts client TLS.
    pub acceptor: TlsAcceptor,
    /// Verifies the upstream.
    pub upstream_tls: Arc<ClientConfig>,
    /// Token mechanisms the upstream announced last time we looked (bit 0 XOAUTH2, bit 1
    /// OAUTHBEARER); the proxy advertises only what the upstream can take.
    upstream_tokens: AtomicU8,
}

impl Context {
    /// Builds the shared context.
    pub fn new(
        config: Config,
        server: Arc<ServerConfig>,
        upstream_tls: Arc<ClientConfig>,
    ) -> Context {
        Context {
            config,
            acceptor: TlsAcceptor::from(server),
            upstream_tls,
            upstream_tokens: AtomicU8::new(0),
        }
    }

    /// Remembers which token mechanisms the upstream offers, from its pre-login capabilities.
    pub fn learn_upstream(&self, caps: &[u8]) {
        use crate::proto::response::has_capability;
        let mut bits = 0;
        if has_capability(caps, b"AUTH=XOAUTH2") {
            bits |= 1;
        }
        if has_capability(caps, b"AUTH=OAUTHBEARER") {
            bits |= 2;
        }
        self.upstream_tokens.store(bits, Ordering::Relaxed);
    }

    /// The token mechanisms the proxy can relay now.
    pub fn token_mechanisms(&self) -> Vec<TokenMechanism> {
        let bits = self.upstream_tokens.load(Ordering::Relaxed);
        let mut mechs = Vec::new();
        if bits & 1 != 0 {
            mechs.push(TokenMechanism::Xoauth2);
        }
        if bits & 2 != 0 {
            mechs.push(TokenMechanism::Oauthbearer);
        }
        mechs
    }

    /// Client-side limits before login: the line limit, and literals no larger than a message.
    pub fn preauth_limits(&self) -> Limits {
        Limits {
            max_line: self.config.limits.max_line,
            max_literal: 64 * 1024,
        }
    }

    /// Client-side limits after login.
    fn client_limits(&self) -> Limits {
        Limits {
            max_line: self.config.limits.max_line,
            max_literal: self.config.limits.max_literal,
        }
    }

    /// Upstream-side limits: lines beyond `max_response_line` stream; literals are not limited.
    pub fn upstream_limits(&self) -> Limits {
        Limits {
            max_line: self.config.limits.max_response_line,
            max_literal: i64::MAX as u64,
        }
    }

    /// The TLS handshake with a client, within the configured time.
    pub async fn accept_tls(&self, tcp: TcpStream) -> Result<Stream, SessionError> {
        let timeout = Duration::from_secs(self.config.tls.handshake_timeout_secs);
        match tokio::time::timeout(timeout, self.acceptor.accept(tcp)).await {
            Err(_) => Err(SessionError::Timeout(Side::Client)),
            Ok(Err(e)) => Err(SessionError::client_io(e)),
            Ok(Ok(tls)) => Ok(Stream::ServerTls(Box::new(tls))),
        }
    }
}

/// Client-supplied bytes made safe for a log line: printable ASCII kept, the rest escaped.
pub fn printable(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(256)];
    shown.escape_ascii().to_string()
}

/// Runs one session in its own span; logs how it ended.
pub async fn run(
    ctx: Arc<Context>,
    tcp: TcpStream,
    peer: SocketAddr,
    listener: ListenerKind,
    id: u64,
    mut shutdown: Shutdown,
) {
    let span = tracing::info_span!(
        "session",
        id,
        client = tracing::field::Empty,
        via = tracing::field::Empty,
        user = tracing::field::Empty
    );
    async move {
        match serve(&ctx, tcp, peer, listener, &mut shutdown).await {
            Ok(how) => tracing::info!(end = how, "session closed"),
            Err(e) => tracing::info!(side = e.side().label(), error = %e, "session ended"),
        }
    }
    .instrument(span)
    .await
}

async fn serve(
    ctx: &Context,
    mut tcp: TcpStream,
    peer: SocketAddr,
    listener: ListenerKind,
    shutdown: &mut Shutdown,
) -> Result<&'static str, SessionError> {
    let _ = tcp.set_nodelay(true);
    let span = tracing::Span::current();
    let peer = if ctx.config.listen.proxy_protocol {
        let client = Box::pin(proxy_header(ctx, &mut tcp, peer)).await?;
        span.record("via", tracing::field::display(peer));
        client
    } else {
        peer
    };
    span.record("client", tracing::field::display(peer));
    tracing::debug!(?listener, "accepted");
    // The handshake and the pre-login dialogue are boxed: their futures are large (TLS, the
    // upstream connect and login) and would otherwise stay allocated in every session's task for
    // its whole life. Boxed, that memory is returned when login completes.
    let stream = match listener {
        ListenerKind::Tls => Box::pin(ctx.accept_tls(tcp)).await?,
        ListenerKind::Plain => Stream::Plain(tcp),
    };
    let client = Wire::new(
        stream,
        Side::Client,
        Direction::ClientToServer,
        ctx.preauth_limits(),
    );
    let preauth = Box::pin(preauth::run(ctx, client, peer, listener, shutdown));
    let (client, upstream) = match preauth.await? {
        preauth::Outcome::LoggedIn { client, upstream } => (client, upstream),
        preauth::Outcome::Closed(how) => return Ok(how),
    };
    // Keep only the socket: the rest of the login state (capabilities, tags) is dropped now
    // rather than held for the whole session.
    let crate::upstream::Upstream { wire, .. } = *upstream;
    relay(ctx, new_relay(ctx, client, wire), shutdown).await
}

/// Builds the relay from the two logged-in connections (a plain function, so the wires it
/// takes apart occupy no space in the session's future).
fn new_relay(ctx: &Context, client: Wire, upstream: Wire) -> Relay {
    let limits = &ctx.config.limits;
    let mut client_framer: Framer = client.framer;
    client_framer.set_limits(ctx.client_limits());
    // After login the `imap` process reads the commands (what each reads of a line differs).
    client_framer.set_dialect(crate::proto::lexer::Dialect::Imap);
    Relay::new(
        client.stream,
        upstream.stream,
        client_framer,
        client.buf,
        upstream.framer,
        upstream.buf,
        limits.max_pipelined,
        limits.max_buffered,
    )
}

/// Reads the PROXY protocol header: the client's real address, or the socket's peer for the
/// balancer's own connections (health checks).
async fn proxy_header(
    ctx: &Context,
    tcp: &mut TcpStream,
    peer: SocketAddr,
) -> Result<SocketAddr, SessionError> {
    let timeout = Duration::from_secs(ctx.config.tls.handshake_timeout_secs);
    match tokio::time::timeout(timeout, crate::proxy_protocol::read_header(tcp)).await {
        Err(_) => Err(SessionError::Timeout(Side::Client)),
        Ok(Err(e)) => Err(SessionError::client_io(e)),
        Ok(Ok(Err(_))) => Err(SessionError::Protocol {
            side: Side::Client,
            what: "invalid or missing PROXY protocol header",
        }),
        Ok(Ok(Ok(crate::proxy_protocol::Origin::Client(addr)))) => Ok(addr),
        Ok(Ok(Ok(crate::proxy_protocol::Origin::Local))) => Ok(peer),
    }
}

/// How the relay loop ended, before the sockets are closed.
enum Ending {
    /// The relay itself ended.
    Relay(End),
    /// No traffic for the authenticated timeout.
    Timeout,
    /// The shutdown grace period ran out with commands still in flight.
    GraceExpired,
}

/// Relays between the logged-in client and upstream until one side ends it.
async fn relay(
    ctx: &Context,
    mut relay: Relay,
    shutdown: &mut Shutdown,
) -> Result<&'static str, SessionError> {
    let idle = Duration::from_secs(ctx.config.timeouts.authenticated_secs);
    let grace = Duration::from_secs(ctx.config.timeouts.shutdown_grace_secs);
    let mut grace_deadline: Option<tokio::time::Instant> = None;
    let ending = loop {
        let idle_deadline = tokio::time::Instant::from_std(relay.last_activity + idle);
        let grace_at = grace_deadline.unwrap_or(idle_deadline);
        tokio::select! {
            end = relay.run() => break end.map(Ending::Relay),
            () = tokio::time::sleep_until(idle_deadline) => {
                if relay.last_activity + idle <= std::time::Instant::now() {
                    break Ok(Ending::Timeout);
                }
            }
            () = shutdown.recv(), if grace_deadline.is_none() => {
                relay.begin_drain();
                grace_deadline = Some(tokio::time::Instant::now() + grace);
            }
            () = tokio::time::sleep_until(grace_at), if grace_deadline.is_some() => {
                break Ok(Ending::GraceExpired);
            }
        }
    };
    let logout: &[u8] = if relay.idling() {
        b"DONE\r\nig0 LOGOUT\r\n"
    } else {
        b"ig0 LOGOUT\r\n"
    };
    let close_within = Duration::from_secs(2);
    let (bye, tail, result): (Option<&[u8]>, &[u8], Result<&'static str, SessionError>) =
        match ending {
            Ok(Ending::Relay(End::ClientClosed)) => {
                let tail = if relay.client_idle() { logout } else { b"" };
                (None, tail, Ok("client closed"))
            }
            Ok(Ending::Relay(End::UpstreamClosed { expected: true })) => (None, b"", Ok("logout")),
            Ok(Ending::Relay(End::UpstreamClosed { expected: false })) => (
                Some(b"* BYE [UNAVAILABLE] Upstream connection lost.\r\n"),
                b"",
                Err(SessionError::Closed(Side::Upstream)),
            ),
            Ok(Ending::Relay(End::Drained)) => (
                Some(b"* BYE Server shutting down.\r\n"),
                logout,
                Ok("shutdown"),
            ),
            Ok(Ending::GraceExpired) => (
                Some(b"* BYE Server shutting down.\r\n"),
                b"",
                Ok("shutdown (grace period expired)"),
            ),
            Ok(Ending::Timeout) => (
                Some(b"* BYE Autologout; idle for too long.\r\n"),
                logout,
                Err(SessionError::Timeout(Side::Client)),
            ),
            Err(e) => {
                let bye: Option<&[u8]> = match (&e, e.side()) {
                    (SessionError::Io { .. }, _) => None,
                    (SessionError::TooBig(Side::Client), _) => {
                        Some(b"* BYE [TOOBIG] Literal too large.\r\n")
                    }
                    (_, Side::Client) => Some(b"* BYE Protocol error.\r\n"),
                    _ => Some(b"* BYE [UNAVAILABLE] Upstream protocol error.\r\n"),
                };
                (bye, b"", Err(e))
            }
        };
    if let Some(bye) = bye {
        if relay.client_at_boundary() {
            relay.say(bye);
        }
    }
    // Boxed: the closing future is only needed once, not kept in every idle session's task.
    Box::pin(relay.finish(tail, close_within)).await;
    result
}
