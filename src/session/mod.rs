//! A client session from accept to close: the TLS handshake (implicit-TLS listener), the
//! proxy's own pre-login dialogue, then the relay, with per-state timeouts and the shutdown
//! signal watched throughout. Only this module and `upstream` touch sockets.

pub mod core;
pub mod credentials;
pub mod pipe;
pub mod preauth;
pub mod relay;
pub mod sasl;
pub mod state;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::config::Config;
use crate::error::{SessionError, Side};
use crate::guard::{ClientKey, Guard, Ticket};
use crate::phases::{ConnectDecision, Event, SessionInfo, Stages, Summary, Verdict};
use crate::proto::framer::{Direction, Framer, Limits};
use crate::session::core::Core;
use crate::session::relay::{End, Relay};
use crate::session::wire::Wire;
use crate::shutdown::Shutdown;
use crate::stream::Stream;
use crate::upstreams::{NamedUpstream, Upstreams};

/// Which kind of listener accepted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// TLS from the first byte (993).
    Tls,
    /// Cleartext with STARTTLS (143).
    Plain,
}

/// What every session shares: configuration, TLS set-up, the upstreams and the stages, built
/// once at start.
pub struct Context {
    /// The configuration.
    pub config: Config,
    /// Accepts client TLS.
    pub acceptor: TlsAcceptor,
    /// The named upstreams (`default` and any `[upstreams.NAME]`).
    pub upstreams: Upstreams,
    /// The stages every session runs, in order (metrics, later policy, OAuth, cache).
    pub stages: Stages,
    /// Limits and login penalties across connections; one for the process, kept by reloads.
    pub guard: Arc<Guard>,
    /// OAuth injection's token service (`[oauth]`); one for the process, kept by reloads.
    pub oauth: Option<Arc<crate::oauth::TokenService>>,
}

/// A connection as the accept loop hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    /// The socket's peer (a load balancer's address when a PROXY header follows).
    pub peer: SocketAddr,
    /// Which kind of listener accepted it.
    pub listener: ListenerKind,
    /// A PROXY protocol header comes first.
    pub proxy_protocol: bool,
    /// Session id for logs (increasing with accept order).
    pub id: u64,
}

impl Context {
    /// Builds the shared context.
    pub fn new(
        config: Config,
        server: Arc<ServerConfig>,
        upstreams: Upstreams,
        stages: Stages,
    ) -> Context {
        Context {
            guard: Arc::new(Guard::new(&config)),
            config,
            acceptor: TlsAcceptor::from(server),
            upstreams,
            stages,
            oauth: None,
        }
    }

    /// The same context with OAuth injection's token service.
    pub fn with_oauth(mut self, oauth: Option<Arc<crate::oauth::TokenService>>) -> Context {
        self.oauth = oauth;
        self
    }

    /// The same context with the records of `guard` (a reload keeps the running process's).
    pub fn with_guard(mut self, guard: Arc<Guard>) -> Context {
        self.guard = guard;
        self
    }

    /// Connects to a named upstream, telling the stages how it went.
    pub async fn connect_upstream(
        &self,
        target: &NamedUpstream,
    ) -> Result<crate::upstream::Upstream, SessionError> {
        let started = std::time::Instant::now();
        let result = crate::upstream::connect(target, self.upstream_limits()).await;
        self.stages.observe(&Event::UpstreamConnect {
            upstream: &target.name,
            elapsed: started.elapsed(),
            failure: result.as_ref().err().map(|e| {
                e.upstream_failure()
                    .unwrap_or(crate::phases::UpstreamFailure::Protocol)
            }),
        });
        result
    }

    /// Client-side limits before login: the pre-login line limit, and literals no larger than
    /// a message.
    pub fn preauth_limits(&self) -> Limits {
        Limits {
            max_line: self.config.limits.max_preauth_line,
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
        match crate::timer::timeout(timeout, self.acceptor.accept(tcp)).await {
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

/// What a session counted, for the stages' `on_close` summary.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Commands the client sent after login.
    pub commands: u64,
    /// Bytes read from the client after login.
    pub client_in: u64,
    /// Bytes written to the client after login.
    pub client_out: u64,
    /// Bytes read from the upstream after login.
    pub upstream_in: u64,
    /// Bytes written to the upstream after login.
    pub upstream_out: u64,
    /// Whether the client was in IDLE at the end.
    pub idling: bool,
    /// Whether the session logged in.
    pub logged_in: bool,
}

/// Runs one session in its own span (entered at each poll before login, and after login only
/// around what logs: [`crate::telemetry::InSession`]); logs how it ended and tells the stages.
///
/// `tcp` is the accepted socket, registered with the runtime that polls this future (so the
/// accept loop can hand it to another thread's runtime as it is). `hold` is whatever must live
/// as long as the session (its connection slot, the shutdown counter): dropped when it ends.
/// Taking them here, rather than in a wrapping future, keeps them stored once in the session's
/// task (each wrapping layer would keep its own copy of what it moves in).
pub async fn run<H: Send>(
    ctx: Arc<Context>,
    tcp: std::net::TcpStream,
    accepted: Accepted,
    mut shutdown: Shutdown,
    hold: H,
) {
    let tcp = match TcpStream::from_std(tcp) {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::warn!(error = %e, "accepted connection lost moving threads");
            return;
        }
    };
    let Accepted {
        peer, listener, id, ..
    } = accepted;
    let span = tracing::info_span!(
        "session",
        id,
        client = tracing::field::Empty,
        via = tracing::field::Empty,
        user = tracing::field::Empty,
        upstream = tracing::field::Empty
    );
    let session = async move {
        let mut info = SessionInfo::new(id, peer, listener);
        let mut stats = Stats::default();
        let result = serve(&ctx, tcp, accepted, &mut info, &mut stats, &mut shutdown).await;
        crate::telemetry::in_session(|| closed(&ctx, &result, &info, &stats));
    };
    crate::telemetry::InSession::new(session, span).await;
    drop(hold);
}

/// Logs how a session ended and tells the stages (in the session's span).
fn closed(ctx: &Context, result: &Result<&str, SessionError>, info: &SessionInfo, stats: &Stats) {
    let (ending, error_side) = match result {
        Ok(how) => {
            tracing::info!(end = how, "session closed");
            (std::borrow::Cow::Borrowed(*how), None)
        }
        Err(e) => {
            tracing::info!(side = e.side().label(), error = %e, "session ended");
            (std::borrow::Cow::Owned(e.to_string()), Some(e.side()))
        }
    };
    ctx.stages.on_close(&Summary {
        info,
        duration: info.started.elapsed(),
        commands: stats.commands,
        client_in: stats.client_in,
        client_out: stats.client_out,
        upstream_in: stats.upstream_in,
        upstream_out: stats.upstream_out,
        ending: &ending,
        error_side,
        idling: stats.idling,
        logged_in: stats.logged_in,
    });
}

/// How the part before login ended.
enum Prelogin {
    /// Logged in on both sides: relay from here.
    LoggedIn {
        /// The client, with any bytes it pipelined after its login.
        client: Wire,
        /// The upstream, logged in.
        upstream: Box<crate::upstream::Upstream>,
        /// The connection's place in the per-client counts (now logged in).
        ticket: Ticket,
    },
    /// The connection ended before login (the client was told); how.
    Ended(&'static str),
}

async fn serve(
    ctx: &Context,
    tcp: TcpStream,
    accepted: Accepted,
    info: &mut SessionInfo,
    stats: &mut Stats,
    shutdown: &mut Shutdown,
) -> Result<&'static str, SessionError> {
    // Everything before login (the PROXY header, the limits, the TLS handshake, the pre-login
    // dialogue, the upstream connect and login) runs in its own boxed future: it is large and
    // would otherwise stay allocated in every session's task for its whole life. Boxed, that
    // memory is returned when login completes.
    let (client, upstream, _ticket) = match Box::pin(
        before_login(ctx, tcp, accepted, info, shutdown)
            .instrument(crate::telemetry::session_span()),
    )
    .await?
    {
        Prelogin::LoggedIn {
            client,
            upstream,
            ticket,
        } => (client, upstream, ticket),
        Prelogin::Ended(how) => return Ok(how),
    };
    let (peer, listener) = (info.peer, info.listener);
    stats.logged_in = true;
    // Keep only the socket: the rest of the login state (capabilities, tags) is dropped now
    // rather than held for the whole session.
    let literal_plus = upstream.has(b"LITERAL+");
    let crate::upstream::Upstream { wire, .. } = *upstream;
    let session = std::mem::replace(info, SessionInfo::new(0, peer, listener));
    let mut relay = new_relay(ctx, client, wire, session, literal_plus);
    let result = relay_until_end(ctx, &mut relay, shutdown).await;
    relay.core.end(result.2);
    std::mem::swap(info, &mut relay.core.info);
    *stats = Stats {
        commands: relay.core.commands,
        idling: relay.idling(),
        logged_in: true,
        ..relay.stats.clone()
    };
    // Boxed: the closing future is only needed once, not kept in every idle session's task.
    let (tail, close_within) = result.1;
    Box::pin(relay.finish(tail, close_within)).await;
    result.0
}

/// The connection up to login: PROXY header, per-client limits, TLS, the stages' `on_connect`,
/// the pre-login dialogue.
async fn before_login(
    ctx: &Context,
    mut tcp: TcpStream,
    accepted: Accepted,
    info: &mut SessionInfo,
    shutdown: &mut Shutdown,
) -> Result<Prelogin, SessionError> {
    let _ = tcp.set_nodelay(true);
    let span = tracing::Span::current();
    let (peer, listener) = (info.peer, info.listener);
    let peer = if accepted.proxy_protocol {
        if !ctx.config.listen.proxy_trusted(peer.ip()) {
            tracing::warn!(client = %peer, "PROXY listener: connection from outside listen.proxy_trusted_networks closed");
            ctx.stages.observe(&Event::LimitRejected {
                kind: "proxy_untrusted",
            });
            return Ok(Prelogin::Ended("refused: PROXY header source not trusted"));
        }
        let client = Box::pin(proxy_header(ctx, &mut tcp, peer)).await?;
        span.record("via", tracing::field::display(peer));
        client
    } else {
        peer
    };
    info.peer = peer;
    span.record("client", tracing::field::display(peer));
    tracing::debug!(?listener, "accepted");
    let ticket = match admit(ctx, &mut tcp, peer, accepted).await {
        Ok(ticket) => ticket,
        Err(how) => return Ok(Prelogin::Ended(how)),
    };
    let stream = match listener {
        ListenerKind::Tls => {
            let handshake = tokio::select! {
                r = Box::pin(ctx.accept_tls(tcp)) => r,
                () = ticket.evicted() => {
                    return Ok(Prelogin::Ended("dropped to make room (during TLS handshake)"));
                }
            };
            match handshake {
                Ok(stream) => stream,
                Err(e) => {
                    ctx.stages.observe(&Event::TlsHandshakeFailed { listener });
                    return Err(e);
                }
            }
        }
        ListenerKind::Plain => Stream::Plain(tcp),
    };
    let mut client = Wire::new(
        stream,
        Side::Client,
        Direction::ClientToServer,
        ctx.preauth_limits(),
    );
    let decision = match ctx.stages.on_connect(info) {
        Verdict::Now(d) => d,
        Verdict::Wait(pending) => pending.await,
    };
    if let ConnectDecision::Refuse(text) = decision {
        client.bye(format!("* BYE {text}\r\n").as_bytes()).await;
        client.close().await;
        return Ok(Prelogin::Ended("refused by a stage"));
    }
    match preauth::run(ctx, client, info, &ticket, shutdown).await? {
        // The ticket was marked logged in by the login itself, just before the client's OK.
        preauth::Outcome::LoggedIn { client, upstream } => Ok(Prelogin::LoggedIn {
            client,
            upstream,
            ticket,
        }),
        preauth::Outcome::Closed(how) => Ok(Prelogin::Ended(how)),
    }
}

/// Builds the relay from the two logged-in connections (a plain function, so the wires it
/// takes apart occupy no space in the session's future).
fn new_relay(
    ctx: &Context,
    client: Wire,
    upstream: Wire,
    info: SessionInfo,
    literal_plus: bool,
) -> Relay {
    let limits = &ctx.config.limits;
    let mut client_framer: Framer = client.framer;
    client_framer.set_limits(ctx.client_limits());
    // After login the `imap` process reads the commands (what each reads of a line differs).
    client_framer.set_dialect(crate::proto::lexer::Dialect::Imap);
    let core = Core::new(
        client_framer,
        upstream.framer,
        info,
        ctx.stages.clone(),
        limits.max_assembled,
        literal_plus,
    );
    Relay::new(
        client.stream,
        upstream.stream,
        core,
        client.buf,
        upstream.buf,
        limits.max_pipelined,
        limits.max_buffered,
    )
}

/// Applies the per-client connection limits; a refused client is told (cleartext listeners) and
/// the connection closed.
async fn admit(
    ctx: &Context,
    tcp: &mut TcpStream,
    peer: SocketAddr,
    accepted: Accepted,
) -> Result<Ticket, &'static str> {
    let key = ClientKey::of(peer.ip());
    let now = std::time::Instant::now();
    match ctx
        .guard
        .admission
        .admit(&ctx.config.limits, key, accepted.id, now)
    {
        Ok(ticket) => Ok(ticket),
        Err(refusal) => {
            tracing::info!(client = %key, limit = refusal.label(), "connection refused");
            ctx.stages.observe(&Event::LimitRejected {
                kind: refusal.label(),
            });
            if accepted.listener == ListenerKind::Plain {
                use tokio::io::AsyncWriteExt as _;
                let _ = crate::timer::timeout(
                    Duration::from_secs(1),
                    tcp.write_all(
                        b"* BYE [UNAVAILABLE] Too many connections from your address.\r\n",
                    ),
                )
                .await;
            }
            Err("refused: per-client connection limit")
        }
    }
}

/// Reads the PROXY protocol header: the client's real address, or the socket's peer for the
/// balancer's own connections (health checks).
async fn proxy_header(
    ctx: &Context,
    tcp: &mut TcpStream,
    peer: SocketAddr,
) -> Result<SocketAddr, SessionError> {
    let timeout = Duration::from_secs(ctx.config.tls.handshake_timeout_secs);
    match crate::timer::timeout(timeout, crate::proxy_protocol::read_header(tcp)).await {
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

/// What the session ends with: its result, what to send upstream (a LOGOUT) and for how long
/// to try when closing, and whether the client was sent a `* BYE`.
type Closing = (
    Result<&'static str, SessionError>,
    (&'static [u8], Duration),
    bool,
);

/// Relays between the logged-in client and upstream until one side ends it.
async fn relay_until_end(ctx: &Context, relay: &mut Relay, shutdown: &mut Shutdown) -> Closing {
    let idle = Duration::from_secs(ctx.config.timeouts.authenticated_secs);
    let grace = Duration::from_secs(ctx.config.timeouts.shutdown_grace_secs);
    let mut grace_deadline: Option<std::time::Instant> = None;
    let ending = loop {
        let idle_deadline = relay.last_activity + idle;
        // One timer for both deadlines: every idle session holds it for its whole life, and a
        // second would cost another keeper entry (src/timer.rs) per session.
        let wake_at = grace_deadline.map_or(idle_deadline, |g| g.min(idle_deadline));
        tokio::select! {
            // In this order, without the random start: polled at every wake-up, and the relay
            // is what woke it nearly every time (the timer and shutdown rarely fire).
            biased;
            end = relay.run() => break end.map(Ending::Relay),
            () = crate::timer::sleep_until(wake_at) => {
                if grace_deadline.is_some_and(|g| g <= std::time::Instant::now()) {
                    break Ok(Ending::GraceExpired);
                }
                if relay.last_activity + idle <= std::time::Instant::now() {
                    break Ok(Ending::Timeout);
                }
            }
            () = shutdown.notice(), if grace_deadline.is_none() => {
                relay.begin_drain();
                grace_deadline = Some(std::time::Instant::now() + grace);
            }
        }
    };
    let logout: &[u8] = if relay.idle_open() {
        b"DONE\r\nig0 LOGOUT\r\n"
    } else {
        b"ig0 LOGOUT\r\n"
    };
    let close_within = Duration::from_secs(2);
    let (bye, tail, result): (
        Option<&[u8]>,
        &'static [u8],
        Result<&'static str, SessionError>,
    ) = match ending {
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
    let mut said_bye = relay.core.bye_seen;
    relay.core.drop_held_message();
    if let Some(bye) = bye {
        if relay.client_at_boundary() {
            relay.say(bye);
            said_bye = true;
        }
    }
    (result, (tail, close_within), said_bye)
}
