//! The phase seam: what a feature (metrics, policy, OAuth, the FETCH cache) implements to take
//! part in a session without the relay knowing it exists.
//!
//! A feature is a *stage*: a value implementing [`Phases`], whose methods all have no-op
//! defaults. The proxy holds an ordered list of stages ([`Stages`]) and calls each phase on every
//! stage, in list order, at fixed points of a session:
//!
//! ```text
//!  client ──accept──► on_connect ──► pre-login dialogue ──LOGIN/AUTHENTICATE──► on_login
//!                      (refuse)          (proxy's own)                 (route, rewrite, refuse)
//!                                                                              │
//!                                       upstream connect + login ◄─────────────┘
//!                                                                              │
//!         ┌──────────────── relay (after login) ───────────────────────────────┘
//!         │  client command ──► on_command ──► forward / refuse / answer / rewrite
//!         │                        (may wait: the command parks, later ones queue behind it)
//!         │  server untagged ──► on_response   (whole message, only the kinds subscribed to)
//!         │  server tagged   ──► on_tagged     (status, code, elapsed; observe only)
//!         └─ end ──► on_close (summary: user, upstream, duration, commands, bytes, ending)
//!
//!  at any time: observe(Event) — TLS failures, limit rejections, upstream connects, logins,
//!  traffic — for stages that count things.
//! ```
//!
//! Decision phases (`on_connect`, `on_login`, `on_command`) return a [`Verdict`]: a decision now,
//! or a future that yields it later (a Lua call, a token refresh, a cache lookup). A waiting
//! command parks in the session core without blocking other sessions; commands pipelined behind
//! it are not read until it is decided, so the client sees responses in order. The first stage
//! whose decision is not the default ends the chain: later stages are not asked.
//!
//! Observation phases (`on_tagged`, `on_close`, `observe`) are synchronous and must be cheap:
//! they run on the session's task (an atomic increment, not a network call).

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Side;
use crate::proto::command::CommandName;
use crate::proto::response::Status;
use crate::session::ListenerKind;
use crate::session::credentials::Credentials;

/// A decision that will be ready later.
pub type Pending<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A decision now, or one to wait for.
pub enum Verdict<T> {
    /// Decided.
    Now(T),
    /// Decided when the future completes; the session keeps serving the other direction.
    Wait(Pending<T>),
}

impl<T> From<T> for Verdict<T> {
    fn from(decision: T) -> Self {
        Verdict::Now(decision)
    }
}

/// A tiny bitflags: a `Copy` newtype over an integer with named constants and set operations.
macro_rules! bitflags_lite {
    ($(#[$doc:meta])* $name:ident : $int:ty { $($(#[$fdoc:meta])* $flag:ident = $value:expr,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
        pub struct $name(pub $int);
        #[allow(missing_docs)]
        impl $name {
            /// No flag.
            pub const NONE: $name = $name(0);
            $($(#[$fdoc])* pub const $flag: $name = $name($value);)*
            /// Whether every flag of `other` is set.
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0 && other.0 != 0
            }
            /// Whether any flag of `other` is set.
            pub const fn intersects(self, other: $name) -> bool {
                self.0 & other.0 != 0
            }
            /// Both sets.
            pub const fn union(self, other: $name) -> $name {
                $name(self.0 | other.0)
            }
            /// Sets the flags of `other`.
            pub fn insert(&mut self, other: $name) {
                self.0 |= other.0;
            }
        }
        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, other: $name) -> $name {
                self.union(other)
            }
        }
    };
}

bitflags_lite! {
    /// Extensions the client enabled (RFC 5161 ENABLE, or implicitly as RFC 7162 §3.1 says).
    Enabled: u8 {
        /// `CONDSTORE`
        CONDSTORE = 1,
        /// `QRESYNC`
        QRESYNC = 2,
        /// `UTF8=ACCEPT` (RFC 6855)
        UTF8_ACCEPT = 4,
        /// `IMAP4rev2`
        IMAP4REV2 = 8,
    }
}

/// Kinds of server messages a stage wants to see whole (see [`Phases::subscriptions`]): the
/// classification of `proto::message`, so a stage parses what it subscribed to with the same
/// module.
pub use crate::proto::message::Kinds;

/// The selected mailbox, as learned from the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The mailbox name as the client sent it, decoded (quoted-string escapes removed, a
    /// literal's bytes); modified UTF-7 or UTF-8 as on the wire.
    pub name: Vec<u8>,
    /// `[UIDVALIDITY n]` from the SELECT/EXAMINE answer.
    pub uidvalidity: Option<u32>,
    /// EXAMINE, or `[READ-ONLY]` in the answer.
    pub read_only: bool,
}

/// Who and where a session is: what stages may base decisions on.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Session id (as in the logs).
    pub id: u64,
    /// The client's address (from the PROXY header when there is one).
    pub peer: SocketAddr,
    /// Which listener accepted the connection.
    pub listener: ListenerKind,
    /// Whether the client connection is encrypted now.
    pub tls: bool,
    /// When the connection was accepted.
    pub started: Instant,
    /// The logged-in user (as the client named it), once logged in.
    pub user: Option<Arc<[u8]>>,
    /// The upstream the session was routed to, once logged in.
    pub upstream: Option<Arc<str>>,
    /// The selected mailbox, if any.
    pub selected: Option<Selected>,
    /// Extensions enabled in this session.
    pub enabled: Enabled,
}

impl SessionInfo {
    /// A new session's facts, before login.
    pub fn new(id: u64, peer: SocketAddr, listener: ListenerKind) -> SessionInfo {
        SessionInfo {
            id,
            peer,
            listener,
            tls: listener == ListenerKind::Tls,
            started: Instant::now(),
            user: None,
            upstream: None,
            selected: None,
            enabled: Enabled::NONE,
        }
    }
}

/// What `on_connect` decides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ConnectDecision {
    /// Serve the connection.
    #[default]
    Allow,
    /// Close it with `* BYE` and this text.
    Refuse(Cow<'static, str>),
}

/// A login the client asked for, before the proxy connects upstream.
#[derive(Debug)]
pub struct LoginRequest<'a> {
    /// The user name the client gave (absent for a token whose user could not be read).
    pub user: Option<&'a [u8]>,
    /// `LOGIN`, `PLAIN`, `XOAUTH2`, ...
    pub mechanism: &'static str,
    /// The upstream chosen so far (`default` unless an earlier stage routed elsewhere).
    pub upstream: &'a str,
}

/// What `on_login` decides.
#[derive(Debug, Default)]
pub enum LoginDecision {
    /// Log in as asked.
    #[default]
    Continue,
    /// Route to another upstream and/or log in upstream with other credentials.
    Rewrite {
        /// The named upstream to use (`[upstreams.NAME]`).
        upstream: Option<String>,
        /// Credentials to log in upstream with instead of the client's.
        credentials: Option<Credentials>,
    },
    /// Refuse: the client gets `tag NO [code] text` and no upstream is contacted.
    Refuse {
        /// Response code, e.g. `AUTHENTICATIONFAILED`.
        code: Option<Cow<'static, str>>,
        /// Human-readable text.
        text: Cow<'static, str>,
    },
}

/// A client command as the relay sees it when it starts.
#[derive(Debug)]
pub struct Command<'a> {
    /// The client's tag.
    pub tag: &'a [u8],
    /// Which command (a fixed set; anything else is `Other`).
    pub name: CommandName,
    /// Prefixed with `UID`.
    pub uid: bool,
    /// The command's first line as received, with its line ending (literal bytes follow it on
    /// the wire when it ends with an announcement).
    pub line: &'a [u8],
}

/// What `on_command` decides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CommandDecision {
    /// Relay it upstream unchanged.
    #[default]
    Forward,
    /// Do not relay; answer `tag NO|BAD [code] text` (its literals are not read upstream).
    Refuse {
        /// `No` or `Bad` (`Ok` is taken as `No`).
        status: Status,
        /// Response code without brackets (`NOPERM`, `CANNOT`, ...).
        code: Option<Cow<'static, str>>,
        /// Human-readable text.
        text: Cow<'static, str>,
    },
    /// Do not relay; answer with these untagged lines (each with CRLF) and `tag OK text`.
    Answer {
        /// Untagged responses, complete lines.
        untagged: Vec<u8>,
        /// Text of the tagged OK.
        text: Cow<'static, str>,
    },
    /// Relay this first line instead (with its line ending). If the original line announced a
    /// literal, the replacement must announce the same one; otherwise the command is refused.
    Rewrite(Vec<u8>),
}

/// What `on_response` decides about a whole untagged message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ResponseDecision {
    /// Pass it on unchanged.
    #[default]
    Forward,
    /// Do not pass it on.
    Drop,
    /// Pass on these bytes instead (whole message, literals inline).
    Rewrite(Vec<u8>),
}

/// A whole untagged server message, assembled for stages that subscribed to its kind.
#[derive(Debug)]
pub struct ResponseMessage<'a> {
    /// Its kind.
    pub kind: Kinds,
    /// The message: its lines with their line endings and any literal bytes inline, exactly as
    /// the server sent them (empty when `streamed`).
    pub bytes: &'a [u8],
    /// The message already went to the client, because a FETCH literal in it was too large to
    /// hold (it streamed): the stage observes it, and any decision but `Forward` is ignored.
    pub streamed: bool,
    /// The parse view of the message (`proto::message`), when the core assembled it; large
    /// FETCH literals are [`LiteralBody::Streamed`](crate::proto::message::LiteralBody).
    pub assembled: Option<&'a crate::proto::message::Assembled<'a>>,
}

impl ResponseMessage<'_> {
    /// Runs `f` on the message as [`proto::message`](crate::proto::message) sees it (lines and
    /// literals delimited as the framer does, every literal kept), for its parsers:
    /// `msg.with_assembled(|m| parse_list(m).map(|l| l.mailbox.bytes.into_owned()))`. `None`
    /// when the bytes are not one whole message (a stage's rewrite gone wrong).
    pub fn with_assembled<R>(
        &self,
        f: impl FnOnce(&crate::proto::message::Assembled<'_>) -> R,
    ) -> Option<R> {
        if let Some(assembled) = self.assembled {
            return Some(f(assembled));
        }
        use crate::proto::framer::{Direction, Framer, Limits};
        use crate::proto::message::{AssembleLimits, for_each_message};
        let mut framer = Framer::new(Direction::ServerToClient, Limits::default());
        let limits = AssembleLimits {
            max_bytes: self.bytes.len(),
            keep_literal: u64::MAX,
        };
        let (mut f, mut out, mut messages) = (Some(f), None, 0);
        for_each_message(&mut framer, limits, &[self.bytes], |m| {
            messages += 1;
            if let Some(f) = f.take() {
                out = Some(f(m));
            }
        })
        .ok()?;
        (messages == 1 && framer.at_message_boundary())
            .then_some(out)
            .flatten()
    }
}

/// How a command ended, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Tagged `OK`.
    Ok,
    /// Tagged `NO`.
    No,
    /// Tagged `BAD`.
    Bad,
    /// The session ended with a `BYE` before the command completed.
    Bye,
    /// No answer: the session ended otherwise (client gone, upstream cut).
    None,
}

impl Outcome {
    /// A fixed label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::No => "no",
            Outcome::Bad => "bad",
            Outcome::Bye => "bye",
            Outcome::None => "none",
        }
    }

    /// From a tagged status.
    pub fn from_status(status: Status) -> Outcome {
        match status {
            Status::Ok => Outcome::Ok,
            Status::No => Outcome::No,
            Status::Bad => Outcome::Bad,
        }
    }
}

/// A command's completion.
#[derive(Debug)]
pub struct Completion<'a> {
    /// The client's tag (empty for an untagged answer of the proxy's).
    pub tag: &'a [u8],
    /// Which command (`Other` for lines the proxy could not classify).
    pub name: CommandName,
    /// Prefixed with `UID`.
    pub uid: bool,
    /// How it ended.
    pub outcome: Outcome,
    /// The response code's text (inside the brackets), if the tagged line had one.
    pub code: Option<&'a [u8]>,
    /// From the command's first byte to its tagged answer.
    pub elapsed: Duration,
    /// Answered by the proxy (a stage or the proxy's own rules), not by the upstream.
    pub local: bool,
}

/// How a session ended, for `on_close`.
#[derive(Debug)]
pub struct Summary<'a> {
    /// Who and where.
    pub info: &'a SessionInfo,
    /// From accept to close.
    pub duration: Duration,
    /// Commands the client sent after login.
    pub commands: u64,
    /// Bytes read from the client.
    pub client_in: u64,
    /// Bytes written to the client.
    pub client_out: u64,
    /// Bytes read from the upstream.
    pub upstream_in: u64,
    /// Bytes written to the upstream.
    pub upstream_out: u64,
    /// How it ended (`logout`, `client closed`, `shutdown`, an error's description).
    pub ending: &'a str,
    /// Which side ended it abnormally, if any.
    pub error_side: Option<Side>,
    /// Whether the client was in IDLE at the end.
    pub idling: bool,
    /// Whether it had logged in.
    pub logged_in: bool,
}

/// Why an upstream could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// TCP connect refused or failed.
    Connect,
    /// Connect or set-up took too long.
    Timeout,
    /// TLS handshake or certificate verification failed.
    Tls,
    /// The server greeted with BYE or something unexpected, or broke the protocol.
    Protocol,
}

impl UpstreamFailure {
    /// A fixed label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Tls => "tls",
            UpstreamFailure::Protocol => "protocol",
        }
    }
}

/// How a login attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    /// Logged in upstream.
    Ok,
    /// The upstream refused the credentials.
    Refused,
    /// A stage refused it.
    Denied,
    /// The client's message was malformed or it cancelled.
    Invalid,
    /// The upstream could not be reached or broke down.
    Error,
}

impl LoginResult {
    /// A fixed label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::Refused => "refused",
            LoginResult::Denied => "denied",
            LoginResult::Invalid => "invalid",
            LoginResult::Error => "error",
        }
    }
}

/// Direction of counted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read from the side.
    Received,
    /// Written to the side.
    Sent,
}

/// Something that happened, for stages that count or log (no decision to make).
#[derive(Debug)]
pub enum Event<'a> {
    /// A client's TLS handshake failed (or timed out).
    TlsHandshakeFailed {
        /// The listener.
        listener: ListenerKind,
    },
    /// A limit refused something: `connections`, `line`, `literal`, `auth_failures`,
    /// `bad_commands`, `assembled`, ...
    LimitRejected {
        /// Which limit.
        kind: &'static str,
    },
    /// A connection to an upstream was attempted.
    UpstreamConnect {
        /// The upstream's name.
        upstream: &'a str,
        /// How long connect, TLS, greeting and capabilities took (or until failure).
        elapsed: Duration,
        /// `None` on success.
        failure: Option<UpstreamFailure>,
    },
    /// A login attempt ended.
    Login {
        /// `LOGIN`, `PLAIN`, ...
        mechanism: &'static str,
        /// How.
        result: LoginResult,
    },
    /// Bytes moved.
    Traffic {
        /// Which side of the proxy.
        side: Side,
        /// Read from it or written to it.
        flow: Flow,
        /// How many.
        bytes: u64,
    },
}

/// The phases a stage may take part in. Every method has a no-op default.
pub trait Phases: Send + Sync + 'static {
    /// A fixed name for logs.
    fn name(&self) -> &'static str;

    /// A connection was accepted (after the PROXY header and the TLS handshake).
    fn on_connect(&self, _session: &SessionInfo) -> Verdict<ConnectDecision> {
        Verdict::Now(ConnectDecision::Allow)
    }

    /// The client asked to log in; nothing was sent upstream yet.
    fn on_login(
        &self,
        _session: &SessionInfo,
        _login: &LoginRequest<'_>,
    ) -> Verdict<LoginDecision> {
        Verdict::Now(LoginDecision::Continue)
    }

    /// A client command starts (after login).
    fn on_command(&self, _session: &SessionInfo, _cmd: &Command<'_>) -> Verdict<CommandDecision> {
        Verdict::Now(CommandDecision::Forward)
    }

    /// The untagged message kinds this stage wants whole in [`Phases::on_response`]. Messages of
    /// other kinds pass without being assembled (zero-copy). Asked once, when the stages are built.
    fn subscriptions(&self) -> Kinds {
        Kinds::NONE
    }

    /// A whole untagged message of a subscribed kind.
    fn on_response(&self, _session: &SessionInfo, _msg: &ResponseMessage<'_>) -> ResponseDecision {
        ResponseDecision::Forward
    }

    /// A command completed (or the session ended with it in flight).
    fn on_tagged(&self, _session: &SessionInfo, _done: &Completion<'_>) {}

    /// The session ended.
    fn on_close(&self, _summary: &Summary<'_>) {}

    /// Something happened.
    fn observe(&self, _event: &Event<'_>) {}
}

/// The ordered list of stages every session runs.
#[derive(Clone, Default)]
pub struct Stages {
    /// In call order.
    list: Arc<[Arc<dyn Phases>]>,
    /// The union of their subscriptions.
    subscriptions: Kinds,
}

impl std::fmt::Debug for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.list.iter().map(|s| s.name()).collect();
        f.debug_struct("Stages").field("list", &names).finish()
    }
}

impl Stages {
    /// Stages called in the given order.
    pub fn new(list: Vec<Arc<dyn Phases>>) -> Stages {
        let subscriptions = list
            .iter()
            .fold(Kinds::NONE, |k, s| k.union(s.subscriptions()));
        Stages {
            list: list.into(),
            subscriptions,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The kinds some stage subscribed to.
    pub fn subscriptions(&self) -> Kinds {
        self.subscriptions
    }

    /// Runs `on_connect` through the chain.
    pub fn on_connect(&self, session: &SessionInfo) -> Verdict<ConnectDecision> {
        self.chain(
            |d| *d == ConnectDecision::Allow,
            |s| s.on_connect(session),
            || {
                let session = session.clone();
                move |s: &dyn Phases| s.on_connect(&session)
            },
        )
    }

    /// Runs `on_login` through the chain.
    pub fn on_login(
        &self,
        session: &SessionInfo,
        login: &LoginRequest<'_>,
    ) -> Verdict<LoginDecision> {
        self.chain(
            |d| matches!(d, LoginDecision::Continue),
            |s| s.on_login(session, login),
            || {
                let session = session.clone();
                let user = login.user.map(<[u8]>::to_vec);
                let (mechanism, upstream) = (login.mechanism, login.upstream.to_string());
                move |s: &dyn Phases| {
                    let login = LoginRequest {
                        user: user.as_deref(),
                        mechanism,
                        upstream: &upstream,
                    };
                    s.on_login(&session, &login)
                }
            },
        )
    }

    /// Runs `on_command` through the chain.
    pub fn on_command(&self, session: &SessionInfo, cmd: &Command<'_>) -> Verdict<CommandDecision> {
        self.chain(
            |d| *d == CommandDecision::Forward,
            |s| s.on_command(session, cmd),
            || {
                let session = session.clone();
                let (tag, line) = (cmd.tag.to_vec(), cmd.line.to_vec());
                let (name, uid) = (cmd.name, cmd.uid);
                move |s: &dyn Phases| {
                    let cmd = Command {
                        tag: &tag,
                        name,
                        uid,
                        line: &line,
                    };
                    s.on_command(&session, &cmd)
                }
            },
        )
    }

    /// A decision chain: each stage in order until one decides something other than the
    /// default. `now` asks a stage with borrowed inputs; when a stage makes the chain wait,
    /// `owned` makes a caller that owns copies of them, for the stages after it.
    fn chain<D, F>(
        &self,
        is_default: fn(&D) -> bool,
        now: impl Fn(&dyn Phases) -> Verdict<D>,
        owned: impl FnOnce() -> F,
    ) -> Verdict<D>
    where
        D: Default + Send + 'static,
        F: Fn(&dyn Phases) -> Verdict<D> + Send + 'static,
    {
        for (i, stage) in self.list.iter().enumerate() {
            match now(&**stage) {
                Verdict::Now(d) if is_default(&d) => {}
                Verdict::Now(d) => return Verdict::Now(d),
                Verdict::Wait(first) => {
                    let list = self.list.clone();
                    let ask = owned();
                    return Verdict::Wait(Box::pin(async move {
                        let d = first.await;
                        if !is_default(&d) {
                            return d;
                        }
                        for stage in list.iter().skip(i + 1) {
                            let d = match ask(&**stage) {
                                Verdict::Now(d) => d,
                                Verdict::Wait(later) => later.await,
                            };
                            if !is_default(&d) {
                                return d;
                            }
                        }
                        D::default()
                    }));
                }
            }
        }
        Verdict::Now(D::default())
    }

    /// Runs `on_response` on the stages subscribed to `msg.kind`; the first that does not
    /// forward decides. A rewrite is shown to the later stages in place of the original.
    pub fn on_response(
        &self,
        session: &SessionInfo,
        msg: &ResponseMessage<'_>,
    ) -> ResponseDecision {
        let mut rewritten: Option<Vec<u8>> = None;
        for stage in self.list.iter() {
            if !stage.subscriptions().intersects(msg.kind) {
                continue;
            }
            let current = ResponseMessage {
                kind: msg.kind,
                bytes: rewritten.as_deref().unwrap_or(msg.bytes),
                streamed: msg.streamed,
                // A rewrite is parsed again when a later stage asks.
                assembled: msg.assembled.filter(|_| rewritten.is_none()),
            };
            match stage.on_response(session, &current) {
                ResponseDecision::Forward => {}
                ResponseDecision::Drop => return ResponseDecision::Drop,
                ResponseDecision::Rewrite(bytes) => rewritten = Some(bytes),
            }
        }
        rewritten.map_or(ResponseDecision::Forward, ResponseDecision::Rewrite)
    }

    /// Tells every stage that a command completed.
    pub fn on_tagged(&self, session: &SessionInfo, done: &Completion<'_>) {
        for stage in self.list.iter() {
            stage.on_tagged(session, done);
        }
    }

    /// Tells every stage that the session ended.
    pub fn on_close(&self, summary: &Summary<'_>) {
        for stage in self.list.iter() {
            stage.on_close(summary);
        }
    }

    /// Tells every stage that something happened.
    pub fn observe(&self, event: &Event<'_>) {
        for stage in self.list.iter() {
            stage.observe(event);
        }
    }
}
