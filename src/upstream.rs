//! The upstream connection before the relay: TCP, TLS (implicit or STARTTLS, verified, SNI from
//! the configured name), the greeting, the server's capabilities, and the login exchange on the
//! client's behalf. The relay after login is the session's business. Every buffer that carries a
//! credential here (the LOGIN line, the PLAIN message, its base64, SASL answers) is a [`Wiped`],
//! sized before the secret goes in so that no reallocation leaves a copy behind.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{UpstreamConfig, UpstreamTls, split_host_port};
use crate::error::{SessionError, Side};
use crate::phases::UpstreamFailure;
use crate::proto::encode::{max_string_len, push_string, quotable};
use crate::proto::framer::{Direction, Limits};
use crate::proto::response::{self, Response, Status, has_capability};
use crate::secret::Wiped;
use crate::session::credentials::{Credentials, TokenMechanism};
use crate::session::wire::{Message, Wire};
use crate::stream::Stream;
use crate::upstreams::NamedUpstream;

/// Largest response message assembled during login (a CAPABILITY list, an ID answer).
const MAX_LOGIN_MESSAGE: usize = 1024 * 1024;

/// Untagged responses kept per command during login before the rest are dropped.
const MAX_UNTAGGED: usize = 64;

/// Who answers the upstream's SASL challenges during a login.
enum Challenges<'a> {
    /// Nobody: `*` (cancel).
    Cancel,
    /// The client (its own token's error report reaches it, its answer goes back).
    Relay(&'a mut Wire),
    /// The proxy, with this line (its own token was refused: the exchange is ended).
    Answer(&'static [u8]),
}

/// A connected upstream that has greeted and told its capabilities.
pub struct Upstream {
    /// The socket with its response framer.
    pub wire: Wire,
    /// The server's current capability list (space-separated).
    pub caps: Vec<u8>,
    /// Counter for the proxy's own tags (`ig1`, `ig2`, ...).
    next_tag: u32,
}

/// The answer to one command the proxy sent.
pub struct Reply {
    /// Its status.
    pub status: Status,
    /// The tagged line, with line ending.
    pub line: Vec<u8>,
    /// Untagged responses that came before it.
    pub untagged: Vec<Vec<u8>>,
}

fn unavailable(cause: UpstreamFailure, what: impl Into<String>) -> SessionError {
    SessionError::Unavailable {
        cause,
        what: what.into(),
    }
}

/// Connects to a named upstream, secures the connection and reads the greeting and
/// capabilities within the configured timeouts; remembers what the upstream offers.
pub async fn connect(target: &NamedUpstream, limits: Limits) -> Result<Upstream, SessionError> {
    let up = connect_to(&target.config, &target.tls, limits).await?;
    target.learn(&up.caps);
    Ok(up)
}

async fn connect_to(
    cfg: &UpstreamConfig,
    tls: &Arc<ClientConfig>,
    limits: Limits,
) -> Result<Upstream, SessionError> {
    use UpstreamFailure::{Connect, Timeout, Tls};
    let (host, port) = split_host_port(&cfg.address)
        .ok_or_else(|| unavailable(Connect, "bad upstream address"))?;
    let connect = TcpStream::connect((host, port));
    let tcp = crate::timer::timeout(Duration::from_secs(cfg.connect_timeout_secs), connect)
        .await
        .map_err(|_| unavailable(Timeout, format!("connect to {} timed out", cfg.address)))?
        .map_err(|e| unavailable(Connect, format!("connect to {}: {e}", cfg.address)))?;
    let _ = tcp.set_nodelay(true);
    let name = cfg.server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|_| unavailable(Tls, format!("invalid upstream server name {name:?}")))?;
    let setup = async {
        let stream = match cfg.tls {
            UpstreamTls::Implicit => handshake(tls, server_name.clone(), tcp).await?,
            UpstreamTls::Starttls | UpstreamTls::None => Stream::Plain(tcp),
        };
        let mut up = Upstream::new(stream, limits, 0);
        up.greeting().await?;
        if cfg.tls == UpstreamTls::Starttls {
            let reply = up.command(b"STARTTLS\r\n").await?;
            if reply.status != Status::Ok {
                return Err(unavailable(Tls, "upstream refused STARTTLS"));
            }
            if !up.wire.buf.is_empty() {
                // Bytes between the OK and the handshake would be injected cleartext.
                return Err(SessionError::Protocol {
                    side: Side::Upstream,
                    what: "data after STARTTLS response",
                });
            }
            let Stream::Plain(tcp) = up.wire.stream else {
                return Err(unavailable(Tls, "STARTTLS on an encrypted connection"));
            };
            // The pre-TLS capabilities are forgotten (RFC 9051 §6.2.1).
            let stream = handshake(tls, server_name, tcp).await?;
            up = Upstream::new(stream, limits, up.next_tag);
        }
        if up.caps.is_empty() {
            up.refresh_capabilities().await?;
        }
        Ok::<_, SessionError>(up)
    };
    crate::timer::timeout(Duration::from_secs(cfg.login_timeout_secs), setup)
        .await
        .map_err(|_| unavailable(Timeout, "upstream set-up timed out"))?
}

async fn handshake(
    tls: &Arc<ClientConfig>,
    name: ServerName<'static>,
    tcp: TcpStream,
) -> Result<Stream, SessionError> {
    let shown = name.to_str().into_owned();
    match TlsConnector::from(tls.clone()).connect(name, tcp).await {
        Ok(tls) => Ok(Stream::ClientTls(Box::new(tls))),
        Err(e) => {
            // Logged here, before the client hears about it: a certificate that fails
            // verification is a misconfiguration or an interception, worth a warning.
            let what = format!("TLS handshake: {}", crate::tls::handshake_error(&e));
            tracing::warn!(server = %shown, error = %what, "upstream TLS failed");
            Err(unavailable(UpstreamFailure::Tls, what))
        }
    }
}

impl Upstream {
    fn new(stream: Stream, limits: Limits, next_tag: u32) -> Upstream {
        Upstream {
            wire: Wire::new(stream, Side::Upstream, Direction::ServerToClient, limits),
            caps: Vec::new(),
            next_tag,
        }
    }

    /// Reads the greeting: `* OK` (maybe with capabilities) goes on, anything else ends here.
    async fn greeting(&mut self) -> Result<(), SessionError> {
        let line = self.read_line().await?;
        match response::classify(&line) {
            Some(Response::Untagged { keyword, .. }) if keyword.eq_ignore_ascii_case(b"OK") => {
                if let Some(caps) = response::capabilities(&line) {
                    self.caps = caps.to_vec();
                }
                Ok(())
            }
            Some(Response::Untagged { keyword, .. }) if keyword.eq_ignore_ascii_case(b"BYE") => {
                Err(unavailable(
                    UpstreamFailure::Protocol,
                    "upstream greeted with BYE",
                ))
            }
            _ => Err(unavailable(
                UpstreamFailure::Protocol,
                "unexpected upstream greeting",
            )),
        }
    }

    /// Asks for `CAPABILITY` and remembers the answer.
    pub async fn refresh_capabilities(&mut self) -> Result<(), SessionError> {
        let reply = self.command(b"CAPABILITY\r\n").await?;
        if let Some(caps) = reply
            .untagged
            .iter()
            .find_map(|l| response::capabilities(l))
        {
            self.caps = caps.to_vec();
        }
        Ok(())
    }

    /// Whether the server announced `cap`.
    pub fn has(&self, cap: &[u8]) -> bool {
        has_capability(&self.caps, cap)
    }

    fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("ig{}", self.next_tag)
    }

    /// Reads one response message.
    async fn read_line(&mut self) -> Result<Vec<u8>, SessionError> {
        match self.wire.read_message(MAX_LOGIN_MESSAGE).await? {
            Message::Complete(m) => Ok(m),
            _ => Err(SessionError::Protocol {
                side: Side::Upstream,
                what: "oversized response during login",
            }),
        }
    }

    /// Sends `tag SP rest` and collects the responses up to the tagged one. A continuation
    /// request is answered with `*` (cancel), since commands sent this way never expect one.
    pub async fn command(&mut self, rest: &[u8]) -> Result<Reply, SessionError> {
        let tag = self.tag();
        let mut line = Vec::with_capacity(tag.len() + 1 + rest.len());
        line.extend_from_slice(tag.as_bytes());
        line.push(b' ');
        line.extend_from_slice(rest);
        self.wire.send(&line).await?;
        self.await_tagged(tag.as_bytes(), Challenges::Cancel).await
    }

    /// Reads responses until the one tagged `tag`. Continuation requests go to `challenges`
    /// (which returns the line to answer with), or are cancelled with `*` when there is none.
    async fn await_tagged(
        &mut self,
        tag: &[u8],
        mut challenges: Challenges<'_>,
    ) -> Result<Reply, SessionError> {
        let mut untagged = Vec::new();
        loop {
            let line = self.read_line().await?;
            match response::classify(&line) {
                Some(Response::Tagged { tag: t, status }) if t == tag => {
                    return Ok(Reply {
                        status,
                        line,
                        untagged,
                    });
                }
                Some(Response::Continuation) => {
                    let answer = match &mut challenges {
                        Challenges::Relay(client) => relay_challenge(client, &line).await?,
                        Challenges::Cancel => Wiped::new(b"*\r\n".to_vec()),
                        Challenges::Answer(line) => Wiped::new(line.to_vec()),
                    };
                    self.wire.send(&answer).await?;
                }
                Some(Response::Untagged { .. }) => {
                    if untagged.len() < MAX_UNTAGGED {
                        untagged.push(line);
                    }
                }
                _ => {
                    return Err(SessionError::Protocol {
                        side: Side::Upstream,
                        what: "unexpected response during login",
                    });
                }
            }
        }
    }

    /// Logs in with the client's credentials. SASL challenges from the upstream (an OAuth error
    /// report, say) are relayed to `client` and its answers back.
    pub async fn login(
        &mut self,
        creds: &Credentials,
        client: &mut Wire,
    ) -> Result<Reply, SessionError> {
        let tag = self.tag();
        match creds {
            Credentials::Password {
                authzid,
                user,
                password,
                login_command,
            } => {
                let password = password.expose();
                let plain_ok = self.has(b"AUTH=PLAIN");
                let literal_ok = self.has(b"LITERAL+") || self.has(b"LITERAL-");
                let login_ok = !self.has(b"LOGINDISABLED")
                    && authzid.is_empty()
                    && (literal_ok || (quotable(user) && quotable(password)));
                if login_ok && (*login_command || !plain_ok) {
                    let size = tag.len() + 10 + max_string_len(user) + max_string_len(password);
                    let mut cmd = Wiped::new(Vec::with_capacity(size));
                    cmd.extend_from_slice(tag.as_bytes());
                    cmd.extend_from_slice(b" LOGIN ");
                    push_string(&mut cmd, user);
                    cmd.push(b' ');
                    push_string(&mut cmd, password);
                    cmd.extend_from_slice(b"\r\n");
                    return self.send_login(cmd, &tag, Challenges::Cancel).await;
                }
                if !plain_ok {
                    return Ok(refusal(&tag, "[CANNOT] No usable login method upstream"));
                }
                let size = authzid.len() + user.len() + password.len() + 2;
                let mut message = Wiped::new(Vec::with_capacity(size));
                message.extend_from_slice(authzid);
                message.push(0);
                message.extend_from_slice(user);
                message.push(0);
                message.extend_from_slice(password);
                self.authenticate(&tag, "PLAIN", &message, Challenges::Cancel)
                    .await
            }
            Credentials::Token {
                mechanism, message, ..
            } => {
                let name = mechanism.name();
                if !self.has(format!("AUTH={name}").as_bytes()) {
                    return Ok(refusal(&tag, "[CANNOT] Mechanism not available"));
                }
                self.authenticate(&tag, name, message.expose(), Challenges::Relay(client))
                    .await
            }
            // Resolved to a token before the upstream is contacted (session login path); never
            // a password.
            Credentials::OAuth { .. } => Ok(refusal(&tag, "[UNAVAILABLE] Internal error.")),
        }
    }

    /// Logs in with the proxy's own access token (OAuth injection): `AUTHENTICATE mechanism`
    /// with `message` (SASL-IR when offered). An error challenge is answered by the proxy, so
    /// the exchange ends with the server's `NO`.
    pub async fn login_token(
        &mut self,
        mechanism: TokenMechanism,
        message: &[u8],
    ) -> Result<Reply, SessionError> {
        let tag = self.tag();
        let name = mechanism.name();
        if !self.has(format!("AUTH={name}").as_bytes()) {
            return Ok(refusal(
                &tag,
                "[UNAVAILABLE] Mechanism not available upstream.",
            ));
        }
        let answer = crate::oauth::sasl::error_answer(mechanism);
        self.authenticate(&tag, name, message, Challenges::Answer(answer))
            .await
    }

    /// `AUTHENTICATE mech` with the initial response inline (SASL-IR) or after the first `+`.
    async fn authenticate(
        &mut self,
        tag: &str,
        mechanism: &str,
        message: &[u8],
        client: Challenges<'_>,
    ) -> Result<Reply, SessionError> {
        // base64 of a message: `=` for an empty one (RFC 4959), then CRLF.
        let mut encoded = Wiped::new(vec![0; message.len().div_ceil(3) * 4 + 3]);
        let n = if message.is_empty() {
            encoded[0] = b'=';
            1
        } else {
            BASE64
                .encode_slice(message, &mut encoded[..])
                .map_err(|_| SessionError::Protocol {
                    side: Side::Upstream,
                    what: "SASL message too large",
                })?
        };
        encoded.truncate(n);
        encoded.extend_from_slice(b"\r\n");
        let head = format!("{tag} AUTHENTICATE {mechanism}");
        if self.has(b"SASL-IR") {
            let mut cmd = Wiped::new(Vec::with_capacity(head.len() + 1 + encoded.len()));
            cmd.extend_from_slice(head.as_bytes());
            cmd.push(b' ');
            cmd.extend_from_slice(&encoded);
            return self.send_login(cmd, tag, client).await;
        }
        self.wire.send(format!("{head}\r\n").as_bytes()).await?;
        let first = self.read_line().await?;
        match response::classify(&first) {
            Some(Response::Continuation) => {
                if message.is_empty() {
                    // An empty initial response after `+` is an empty line.
                    encoded.clear();
                    encoded.extend_from_slice(b"\r\n");
                }
                self.send_login(encoded, tag, client).await
            }
            Some(Response::Tagged { tag: t, status }) if t == tag.as_bytes() => Ok(Reply {
                status,
                line: first,
                untagged: Vec::new(),
            }),
            _ => Err(SessionError::Protocol {
                side: Side::Upstream,
                what: "unexpected response to AUTHENTICATE",
            }),
        }
    }

    /// Sends a line carrying a credential, wipes it, and reads up to the tagged answer.
    async fn send_login(
        &mut self,
        bytes: Wiped,
        tag: &str,
        client: Challenges<'_>,
    ) -> Result<Reply, SessionError> {
        self.wire.send(&bytes).await?;
        drop(bytes);
        self.await_tagged(tag.as_bytes(), client).await
    }

    /// After a successful login: the capabilities from the OK's code, or asked for.
    pub async fn learn_capabilities(&mut self, ok_line: &[u8]) -> Result<(), SessionError> {
        match response::capabilities(ok_line) {
            Some(caps) => self.caps = caps.to_vec(),
            None => self.refresh_capabilities().await?,
        }
        Ok(())
    }
}

/// A tagged `NO` made up by the proxy.
fn refusal(tag: &str, text: &str) -> Reply {
    Reply {
        status: Status::No,
        line: format!("{tag} NO {text}\r\n").into_bytes(),
        untagged: Vec::new(),
    }
}

/// Passes an upstream SASL challenge to the client and returns the line to send upstream: the
/// client's one line of base64 decoded and encoded again, or `*` (cancel) for anything else, so
/// no literal, extra line or stray byte of the client's reaches the server.
async fn relay_challenge(client: &mut Wire, challenge: &[u8]) -> Result<Wiped, SessionError> {
    client.send(challenge).await?;
    let reply = crate::session::sasl::read_reply(client).await?;
    Ok(Wiped::new(crate::session::sasl::encode(&reply)))
}
