//! The proxy's own pre-login dialogue (as Dovecot's and nginx's proxies do): greeting,
//! CAPABILITY, ID, NOOP, STARTTLS, LOGOUT, and LOGIN / AUTHENTICATE (PLAIN, LOGIN, XOAUTH2,
//! OAUTHBEARER; SASL-IR). A login picks the upstream, connects and logs in there with the
//! client's credentials; only a successful login leads to the relay. This is the seam where
//! routing, auth rewriting and OAuth injection plug in.

mod login;
mod oauth;

use std::time::Duration;

use std::time::Instant;

use crate::config::PlaintextAuth;
use crate::error::{SessionError, Side};
use crate::guard::{ClientKey, Ticket};
use crate::phases::{Event, LoginResult, SessionInfo};
use crate::proto::args::{IdField, authenticate_args, id_args, login_args};
use crate::proto::command::{CommandName, parse_command_line, trim_eol};
use crate::secret::Secret;
use crate::session::credentials::{Credentials, TokenMechanism};
use crate::session::sasl::{self, Reply};
use crate::session::wire::{Message, Wire};
use crate::session::{Context, ListenerKind, printable};
use crate::shutdown::Shutdown;
use crate::stream::Stream;
use crate::upstream::Upstream;

/// Largest pre-login message (a LOGIN with literals, an ID list, a SASL response with a token).
const MAX_PREAUTH_MESSAGE: usize = 64 * 1024;

/// The dialogue ended with a logged-in upstream, or the client left.
pub enum Outcome {
    /// Both sides are logged in; relay from here.
    LoggedIn {
        /// The client, with any bytes it pipelined after its login.
        client: Wire,
        /// The upstream, logged in (boxed: it is much larger than the other variant).
        upstream: Box<Upstream>,
    },
    /// The session is over (LOGOUT, too many errors, shutdown, timeout), the client was told and
    /// the connection closed; the text says how it ended.
    Closed(&'static str),
}

/// The pre-login state of one connection.
struct Preauth<'a> {
    /// Shared configuration.
    ctx: &'a Context,
    /// The session's facts: the client's address (loopback decides about cleartext passwords),
    /// the listener (STARTTLS is only offered on the cleartext one); filled in at login.
    info: &'a mut SessionInfo,
    /// Invalid commands so far.
    bad_commands: u32,
    /// Failed logins so far on this connection.
    failures: u32,
    /// The client's address as penalties count it.
    client: ClientKey,
    /// The connection's place in the per-client counts: marked logged in just before the
    /// client hears so.
    ticket: &'a Ticket,
    /// The client's ID fields, passed upstream after login.
    id: Option<Vec<IdField>>,
}

/// What handling one command leads to.
enum Step {
    /// Keep talking.
    Continue,
    /// Upgrade the connection to TLS (after `OK` was sent).
    StartTls,
    /// Logged in.
    LoggedIn(Upstream),
    /// Close the connection (the client was told).
    Close,
}

/// Runs the dialogue on `client` until login, logout, timeout or shutdown.
pub async fn run(
    ctx: &Context,
    mut client: Wire,
    info: &mut SessionInfo,
    ticket: &Ticket,
    shutdown: &mut Shutdown,
) -> Result<Outcome, SessionError> {
    let mut pre = Preauth {
        ctx,
        info,
        bad_commands: 0,
        failures: 0,
        client: ticket.client(),
        ticket,
        id: None,
    };
    let deadline = Instant::now() + Duration::from_secs(ctx.config.timeouts.preauth_secs);
    let greeting = format!(
        "* OK [CAPABILITY {}] imapgate ready.\r\n",
        pre.capabilities(client.stream.is_tls())
    );
    // Everything before login, writes and SASL exchanges included, runs under the pre-login
    // deadline and gives way to shutdown: a client that stops reading or answering is cut off.
    enum Interrupt {
        Shutdown,
        Timeout,
        Evicted,
    }
    let mut greeted = false;
    let ended: Result<&'static str, SessionError> = loop {
        let work = async {
            if !greeted {
                client.send(greeting.as_bytes()).await?;
                greeted = true;
            }
            let message = client.read_message(MAX_PREAUTH_MESSAGE).await?;
            pre.handle(message, &mut client).await
        };
        let step_result = tokio::select! {
            r = crate::timer::timeout_at(deadline, work) => r.map_err(|_| Interrupt::Timeout),
            () = shutdown.recv() => Err(Interrupt::Shutdown),
            () = ticket.evicted() => Err(Interrupt::Evicted),
        };
        let step = match step_result {
            Err(Interrupt::Shutdown) => {
                client.bye(b"* BYE Server shutting down.\r\n").await;
                break Ok("shutdown before login");
            }
            Err(Interrupt::Evicted) => {
                client
                    .bye(b"* BYE [UNAVAILABLE] Connection queue full.\r\n")
                    .await;
                break Ok("dropped to make room");
            }
            Err(Interrupt::Timeout) => {
                client.bye(b"* BYE Disconnected for inactivity.\r\n").await;
                break Err(SessionError::Timeout(Side::Client));
            }
            Ok(Err(e)) => {
                // Input or trouble that cannot be answered in-band: say why before closing.
                let bye: Option<&[u8]> = match &e {
                    SessionError::TooBig(_) => Some(b"* BYE [TOOBIG] Literal too large.\r\n"),
                    SessionError::Protocol {
                        side: Side::Client, ..
                    }
                    | SessionError::Framing {
                        side: Side::Client, ..
                    } => Some(b"* BYE Protocol error.\r\n"),
                    _ if e.side() == Side::Upstream => {
                        Some(b"* BYE [UNAVAILABLE] Upstream server unavailable.\r\n")
                    }
                    _ => None,
                };
                if let Some(bye) = bye {
                    client.bye(bye).await;
                }
                break Err(e);
            }
            Ok(Ok(step)) => step,
        };
        match step {
            Step::Continue => {}
            Step::Close => break Ok("closed before login"),
            Step::LoggedIn(upstream) => {
                return Ok(Outcome::LoggedIn {
                    client,
                    upstream: Box::new(upstream),
                });
            }
            Step::StartTls => {
                client = starttls(ctx, client).await?;
                pre.info.tls = true;
                // Said in cleartext, where anyone could have put it: not passed upstream.
                pre.id = None;
            }
        }
    };
    // Close properly (a TLS close_notify), so the client can tell an end from a cut.
    client.close().await;
    ended.map(Outcome::Closed)
}

/// Upgrades the client connection; bytes pipelined after STARTTLS are dropped (they were sent in
/// cleartext and must not be taken as coming from inside TLS).
async fn starttls(ctx: &Context, client: Wire) -> Result<Wire, SessionError> {
    let Stream::Plain(tcp) = client.stream else {
        return Err(SessionError::Protocol {
            side: Side::Internal,
            what: "STARTTLS on an encrypted connection",
        });
    };
    let stream = ctx.accept_tls(tcp).await?;
    let mut framer = client.framer;
    framer.reset();
    let mut wire = Wire::new(
        stream,
        Side::Client,
        crate::proto::framer::Direction::ClientToServer,
        ctx.preauth_limits(),
    );
    wire.framer = framer;
    Ok(wire)
}

impl Preauth<'_> {
    /// Handles one message from the client.
    async fn handle(&mut self, message: Message, client: &mut Wire) -> Result<Step, SessionError> {
        match message {
            Message::Complete(bytes) => {
                // The message may be a LOGIN with its password: wiped once handled.
                let bytes = zeroize::Zeroizing::new(bytes);
                self.command(&bytes, client).await
            }
            Message::Overlong => {
                // As Dovecot's login process: a line this long is no command of a client that
                // has not logged in, and reading on would only let it cost more.
                self.ctx
                    .stages
                    .observe(&Event::LimitRejected { kind: "line" });
                client
                    .send(b"* BYE Input buffer full, aborting.\r\n")
                    .await?;
                Ok(Step::Close)
            }
            Message::LiteralTooLarge { tag } => {
                self.bad(client, tag.as_deref(), "BAD [TOOBIG] Literal too large.")
                    .await
            }
        }
    }

    /// Whether passwords may be sent on this connection now.
    fn auth_allowed(&self, tls: bool) -> bool {
        tls || match self.ctx.config.auth.plaintext {
            PlaintextAuth::Always => true,
            PlaintextAuth::Never => false,
            PlaintextAuth::Loopback => self.info.peer.ip().to_canonical().is_loopback(),
        }
    }

    /// The pre-login capability list; it depends on TLS and on what the upstream offers (and
    /// on the stages that edit capability lists).
    fn capabilities(&self, tls: bool) -> String {
        let mut caps = String::from("IMAP4rev1 SASL-IR LITERAL+ ID");
        if !tls && self.info.listener == ListenerKind::Plain {
            caps.push_str(" STARTTLS");
        }
        if self.auth_allowed(tls) {
            caps.push_str(" AUTH=PLAIN AUTH=LOGIN");
            for mech in self.ctx.upstreams.default_upstream().token_mechanisms() {
                caps.push_str(" AUTH=");
                caps.push_str(mech.name());
            }
        } else {
            caps.push_str(" LOGINDISABLED");
        }
        // Stages that edit capability lists (a policy) see this one too.
        match self.ctx.stages.capability_list(self.info, caps.as_bytes()) {
            Some(edited) => String::from_utf8_lossy(&edited).into_owned(),
            None => caps,
        }
    }

    /// Answers an invalid command; too many of them close the connection.
    async fn bad(
        &mut self,
        client: &mut Wire,
        tag: Option<&[u8]>,
        text: &str,
    ) -> Result<Step, SessionError> {
        self.bad_commands += 1;
        reply(client, tag, text).await?;
        if self.bad_commands >= self.ctx.config.limits.max_bad_commands {
            self.ctx.stages.observe(&Event::LimitRejected {
                kind: "bad_commands",
            });
            client.send(b"* BYE Too many invalid commands.\r\n").await?;
            return Ok(Step::Close);
        }
        Ok(Step::Continue)
    }

    async fn command(&mut self, bytes: &[u8], client: &mut Wire) -> Result<Step, SessionError> {
        let first_line_end = memchr::memchr(b'\n', bytes).map_or(bytes.len(), |i| i + 1);
        let Some(cmd) = parse_command_line(&bytes[..first_line_end]) else {
            return self.bad(client, None, "BAD Invalid command line.").await;
        };
        let tag = cmd.tag;
        // The arguments with any literals that followed the first line.
        let args_at = cmd.args.as_ptr() as usize - bytes.as_ptr() as usize;
        let args = &bytes[args_at..];
        let tls = client.stream.is_tls();
        let no_args = trim_eol(args).is_empty();
        match cmd.name {
            CommandName::Capability if no_args => {
                let caps = format!("* CAPABILITY {}\r\n", self.capabilities(tls));
                client.send(caps.as_bytes()).await?;
                reply(
                    client,
                    Some(tag),
                    "OK Pre-login capabilities listed, post-login capabilities have more.",
                )
                .await?;
            }
            CommandName::Noop if no_args => reply(client, Some(tag), "OK NOOP completed.").await?,
            CommandName::Logout if no_args => {
                client.send(b"* BYE Logging out.\r\n").await?;
                reply(client, Some(tag), "OK Logout completed.").await?;
                return Ok(Step::Close);
            }
            CommandName::Id => {
                let Some(fields) = id_args(args) else {
                    return self
                        .bad(client, Some(tag), "BAD Invalid ID arguments.")
                        .await;
                };
                if let Some((_, Some(name))) =
                    fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(b"name"))
                {
                    tracing::debug!(client_name = %printable(name), "client ID");
                }
                self.id = Some(fields);
                let ours = concat!(
                    "* ID (\"name\" \"imapgate\" \"version\" \"",
                    env!("CARGO_PKG_VERSION"),
                    "\")\r\n"
                );
                client.send(ours.as_bytes()).await?;
                reply(client, Some(tag), "OK ID completed.").await?;
            }
            CommandName::Starttls if no_args => {
                if tls || self.info.listener != ListenerKind::Plain {
                    return self
                        .bad(client, Some(tag), "BAD TLS is already active.")
                        .await;
                }
                reply(client, Some(tag), "OK Begin TLS negotiation now.").await?;
                return Ok(Step::StartTls);
            }
            CommandName::Login | CommandName::Authenticate if !self.auth_allowed(tls) => {
                reply(client, Some(tag), "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.").await?;
            }
            CommandName::Login => {
                let Some((user, password)) = login_args(args) else {
                    return self
                        .bad(client, Some(tag), "BAD Invalid LOGIN arguments.")
                        .await;
                };
                let creds = Credentials::Password {
                    authzid: Vec::new(),
                    user,
                    password: Secret::new(password),
                    login_command: true,
                };
                return self.login(tag, "LOGIN", creds, client).await;
            }
            CommandName::Authenticate => {
                let Some((mechanism, initial)) = authenticate_args(args) else {
                    return self
                        .bad(client, Some(tag), "BAD Invalid AUTHENTICATE arguments.")
                        .await;
                };
                let label = mechanism_label(&mechanism);
                let Some(creds) = self.sasl(tag, &mechanism, initial, client).await? else {
                    // A malformed PLAIN message counts as a failed login too.
                    self.ctx.stages.observe(&Event::Login {
                        info: self.info,
                        user: None,
                        upstream: None,
                        mechanism: label,
                        result: LoginResult::Invalid,
                    });
                    return self.after_failure(client).await;
                };
                return self.login(tag, label, creds, client).await;
            }
            CommandName::Other => {
                return self.bad(client, Some(tag), "BAD Unknown command.").await;
            }
            _ => {
                return self
                    .bad(client, Some(tag), "BAD Command not valid in this state.")
                    .await;
            }
        }
        Ok(Step::Continue)
    }

    /// Runs the client side of a SASL exchange. `None` when it ended with an answer already sent.
    async fn sasl(
        &mut self,
        tag: &[u8],
        mechanism: &[u8],
        initial: Option<Vec<u8>>,
        client: &mut Wire,
    ) -> Result<Option<Credentials>, SessionError> {
        let token = match mechanism {
            b"XOAUTH2" => Some(TokenMechanism::Xoauth2),
            b"OAUTHBEARER" => Some(TokenMechanism::Oauthbearer),
            _ => None,
        };
        match (mechanism, token) {
            (b"PLAIN", _) => {
                let Some(message) = sasl_response(client, tag, b"+ \r\n", initial).await? else {
                    return Ok(None);
                };
                match Credentials::from_plain(message.expose().to_vec()) {
                    Some(creds) => Ok(Some(creds)),
                    None => {
                        self.record_failure(None);
                        reply(
                            client,
                            Some(tag),
                            "NO [AUTHENTICATIONFAILED] Authentication failed.",
                        )
                        .await?;
                        Ok(None)
                    }
                }
            }
            (b"LOGIN", _) => {
                let Some(user) = sasl_response(client, tag, b"+ VXNlcm5hbWU6\r\n", initial).await?
                else {
                    return Ok(None);
                };
                let Some(password) =
                    sasl_response(client, tag, b"+ UGFzc3dvcmQ6\r\n", None).await?
                else {
                    return Ok(None);
                };
                Ok(Some(Credentials::Password {
                    authzid: Vec::new(),
                    user: user.expose().to_vec(),
                    password,
                    login_command: false,
                }))
            }
            (_, Some(mech))
                if self
                    .ctx
                    .upstreams
                    .default_upstream()
                    .token_mechanisms()
                    .contains(&mech) =>
            {
                let Some(message) = sasl_response(client, tag, b"+ \r\n", initial).await? else {
                    return Ok(None);
                };
                Ok(Some(Credentials::from_token(
                    mech,
                    message.expose().to_vec(),
                )))
            }
            _ => {
                reply(
                    client,
                    Some(tag),
                    "NO Unsupported authentication mechanism.",
                )
                .await?;
                Ok(None)
            }
        }
    }
}

/// Sends `tag text` (or `* text`).
async fn reply(client: &mut Wire, tag: Option<&[u8]>, text: &str) -> Result<(), SessionError> {
    let line = [tag.unwrap_or(b"*"), b" ", text.as_bytes(), b"\r\n"].concat();
    client.send(&line).await
}

/// One SASL step: uses the initial response if there is one (RFC 4959: `=` is an empty one),
/// else sends `challenge` and reads the client's answer line. `None` when the client cancelled
/// or sent something other than one line of base64 (already answered).
async fn sasl_response(
    client: &mut Wire,
    tag: &[u8],
    challenge: &[u8],
    initial: Option<Vec<u8>>,
) -> Result<Option<Secret>, SessionError> {
    let answer = match initial {
        Some(ir) if ir == b"=" => Reply::Data(Secret::new(Vec::new())),
        Some(ir) => sasl::decode(&zeroize::Zeroizing::new(ir)),
        None => {
            client.send(challenge).await?;
            sasl::read_reply(client).await?
        }
    };
    match answer {
        Reply::Data(bytes) => Ok(Some(bytes)),
        Reply::Cancel => {
            reply(client, Some(tag), "BAD Authentication aborted by client.").await?;
            Ok(None)
        }
        Reply::Invalid(why) => {
            reply(client, Some(tag), &format!("BAD {why}")).await?;
            Ok(None)
        }
    }
}

/// A fixed name for a SASL mechanism (metrics labels never carry client-chosen text).
fn mechanism_label(mechanism: &[u8]) -> &'static str {
    const KNOWN: &[&str] = &["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"];
    KNOWN
        .iter()
        .find(|m| m.as_bytes() == mechanism)
        .copied()
        .unwrap_or("other")
}
