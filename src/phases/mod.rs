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
//!         │  server untagged ──► on_response   (whole message, only the kinds subscribed to,
//!         │                                     and of those, the ones `listening` says now)
//!         │  server tagged   ──► on_tagged     (status, code, elapsed; observe only)
//!         └─ end ──► on_close (summary: user, upstream, duration, commands, bytes, ending)
//!
//!  at any time: observe(Event) — TLS failures, limit rejections, upstream connects, logins,
//!  traffic — for stages that count things.
//!
//!  capability lists to the client (pre-login, the login's OK, after login) ──► on_capabilities
//!                                               (edit in place; only stages that edit them)
//!  SIGHUP ──► reload(config) (a stage may hand back a new version of itself for new sessions)
//!         ──► observe(Event::Reload)
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

mod events;
mod identity;
mod listening;
mod session_map;
mod stages;
mod types;

pub use events::{Event, Flow, LoginResult, UpstreamFailure};
pub use identity::{CommandSet, Enabled, Kinds, Selected, SessionInfo};
pub use listening::Listening;
pub use session_map::SessionMap;
pub use stages::Stages;
pub use types::{
    Command, CommandDecision, Completion, ConnectDecision, LoginDecision, LoginRequest, Outcome,
    Pending, ResponseDecision, ResponseMessage, Summary, Verdict,
};

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

    /// The commands whose start (`on_command`) and completion (`on_tagged`) this stage is
    /// shown; for other commands the chain goes on to the next stage, and a command no stage is
    /// shown is relayed without the stages' view of it being built. A stage that must know
    /// whether other commands started meanwhile compares [`SessionInfo::commands`] with what it
    /// last saw. Asked once, when the stages are built.
    fn commands(&self) -> CommandSet {
        CommandSet::ALL
    }

    /// Commands this stage wants to decide on whole, literal arguments included (a mailbox name
    /// sent as `{n}`): the proxy then collects the command before `on_command` — it answers the
    /// client's `+` itself and relays the command with non-synchronizing literals — within
    /// 64 KiB. Only with an upstream that offers `LITERAL+`, and never for APPEND (a message
    /// body is not held); otherwise `on_command` sees the first line alone
    /// (`Command::message` is `None`). Asked once, when the stages are built.
    fn whole_commands(&self) -> CommandSet {
        CommandSet::NONE
    }

    /// The untagged message kinds this stage wants whole in [`Phases::on_response`]. Messages of
    /// other kinds pass without being assembled (zero-copy). Asked once, when the stages are built.
    fn subscriptions(&self) -> Kinds {
        Kinds::NONE
    }

    /// Whether what this stage wants shown of its subscribed kinds changes during a session
    /// ([`Phases::listening`]). Asked once, when the stages are built; a stage that says no is
    /// shown every message of the kinds it subscribed to.
    fn narrows_listening(&self) -> bool {
        false
    }

    /// The kinds, of those it subscribed to, this stage wants shown in this session from now
    /// until it is asked again: asked when the relay starts (after login) and after the
    /// `on_command` chain and the `on_tagged` call of every command in
    /// [`Phases::listening_changes_with`] (whether or not the chain reached this stage).
    /// Messages of other kinds pass this stage unseen — none of its `on_response_start` calls
    /// — and, when no stage wants a kind, unclassified. Only for stages that
    /// [narrow](Phases::narrows_listening); what it returns outside its subscriptions is
    /// ignored.
    fn listening(&self, _session: &SessionInfo) -> Kinds {
        self.subscriptions()
    }

    /// The commands whose start or completion may change what a narrowing stage listens to
    /// ([`Phases::listening`] is asked after those only). Asked once, when the stages are built.
    fn listening_changes_with(&self) -> CommandSet {
        CommandSet::ALL
    }

    /// How large a FETCH message this stage wants with the bytes of its large literals
    /// (message bodies over 64 KiB) in [`Phases::on_response`]; 0: none. They still stream to
    /// the client as they arrive (the message is `streamed`), and a copy is kept for the stages
    /// up to the larger of this and `limits.max_assembled` — that much per session while such
    /// a message passes. Asked once, when the stages are built.
    fn keeps_fetch_bodies(&self) -> usize {
        0
    }

    /// Whether this stage edits capability lists ([`Phases::on_capabilities`]). Asked once, when
    /// the stages are built; a stage that says no is never called with a list.
    fn edits_capabilities(&self) -> bool {
        false
    }

    /// A capability list on its way to the client, after the proxy's own filter: the pre-login
    /// list the proxy gives, the `[CAPABILITY ...]` code of the login's OK, and after login every
    /// untagged `CAPABILITY` and `[CAPABILITY ...]` code from the server. Edit `caps` in place
    /// (one capability per entry); later stages see the edited list.
    fn on_capabilities(&self, _session: &SessionInfo, _caps: &mut Vec<Vec<u8>>) {}

    /// An untagged message of a subscribed kind starts; `first_line` is its first line with its
    /// line ending (or the start of it, when it is long). Whether this stage wants the message
    /// whole in [`Phases::on_response`]: a stage that needs only something from the first line
    /// (a count, a message number) reads it here and says no, and the message then passes
    /// without being assembled for it — zero-copy, unless another stage wants it (even then,
    /// this stage's `on_response` is not called for it).
    fn on_response_start(&self, _session: &SessionInfo, _kind: Kinds, _first_line: &[u8]) -> bool {
        true
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

    /// SIGHUP with a configuration that passed validation: a stage that keeps a version of
    /// something (a policy script) may return a replacement of itself, built from `config`,
    /// for the sessions that start from now on; sessions already running keep this one (they
    /// hold the stages they started with). `None` keeps this stage for new sessions too. Called
    /// once per reload, before `observe(Event::Reload)`; the subscriptions and whole commands
    /// are asked again of the new list.
    fn reload(&self, _config: &crate::config::Config) -> Option<std::sync::Arc<dyn Phases>> {
        None
    }
}
