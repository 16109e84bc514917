//! The ordered list of stages and the decision chains that run them.

use std::sync::Arc;

use crate::proto::command::CommandName;

use super::{
    Command, CommandDecision, CommandSet, Completion, ConnectDecision, Event, Kinds, Listening,
    LoginDecision, LoginRequest, Phases, ResponseDecision, ResponseMessage, SessionInfo, Summary,
    Verdict,
};

/// The ordered list of stages every session runs.
#[derive(Clone, Default)]
pub struct Stages {
    /// In call order.
    list: Arc<[Arc<dyn Phases>]>,
    /// Each stage's subscriptions, in list order (asked once, not at every message).
    subscribed: Arc<[Kinds]>,
    /// The stages (bit `i` for the `i`-th) whose listening changes during a session.
    narrowing: u64,
    /// By command index: the narrowing stages (bit `i` for the `i`-th) asked again after that
    /// command's chain and completion.
    relisten_after: Arc<[u64]>,
    /// By command index: the stages (bit `i` for the `i`-th) shown its start and completion
    /// ([`Phases::commands`]); stages past the 64th are shown every command.
    shown: Arc<[u64]>,
    /// There are more than 64 stages (those past the 64th are shown every command).
    over_64: bool,
    /// The union of the commands they want whole.
    whole_commands: CommandSet,
    /// Some stage edits capability lists.
    edits_capabilities: bool,
    /// How large a FETCH message some stage wants kept while its large literals stream (0:
    /// none).
    keeps_fetch_bodies: usize,
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
        let subscribed: Arc<[Kinds]> = list.iter().map(|s| s.subscriptions()).collect();
        let narrowing = list
            .iter()
            .enumerate()
            .take(64)
            .filter(|(_, s)| s.narrows_listening())
            .fold(0, |n, (i, _)| n | 1 << i);
        let changes: Vec<CommandSet> = list.iter().map(|s| s.listening_changes_with()).collect();
        let relisten_after = by_command(&changes, narrowing);
        let over_64 = list.len() > 64;
        let commands: Vec<CommandSet> = list.iter().map(|s| s.commands()).collect();
        let shown = by_command(&commands, u64::MAX);
        let whole_commands = list
            .iter()
            .fold(CommandSet::NONE, |c, s| c.union(s.whole_commands()));
        let edits_capabilities = list.iter().any(|s| s.edits_capabilities());
        let keeps_fetch_bodies = list
            .iter()
            .map(|s| s.keeps_fetch_bodies())
            .max()
            .unwrap_or(0);
        Stages {
            list: list.into(),
            subscribed,
            narrowing,
            relisten_after,
            shown,
            over_64,
            whole_commands,
            edits_capabilities,
            keeps_fetch_bodies,
        }
    }

    /// The stages for new sessions after a reload: each stage's replacement, if it has one
    /// ([`Phases::reload`]), else itself; subscriptions are asked again.
    pub fn reloaded(&self, config: &crate::config::Config) -> Stages {
        Stages::new(
            self.list
                .iter()
                .map(|s| s.reload(config).unwrap_or_else(|| s.clone()))
                .collect(),
        )
    }

    /// How large a FETCH message some stage wants kept while its large literals stream (0:
    /// none).
    pub fn keeps_fetch_bodies(&self) -> usize {
        self.keeps_fetch_bodies
    }

    /// Whether some stage edits capability lists.
    pub fn edits_capabilities(&self) -> bool {
        self.edits_capabilities
    }

    /// Runs `on_capabilities` on a line carrying a capability list (`* CAPABILITY ...` or a
    /// `[CAPABILITY ...]` code); returns the line with the edited list, or `None` when no stage
    /// edits lists, the line has none, or nothing changed.
    pub fn capability_line(&self, session: &SessionInfo, line: &[u8]) -> Option<Vec<u8>> {
        if !self.edits_capabilities {
            return None;
        }
        let caps = crate::proto::response::capabilities(line)?;
        let edited = self.capability_list(session, caps)?;
        // `caps` is a sub-slice of `line`: splice the edited list in its place.
        let start = caps.as_ptr() as usize - line.as_ptr() as usize;
        let end = start + caps.len();
        let mut out = Vec::with_capacity(line.len() + 32);
        out.extend_from_slice(&line[..start]);
        out.extend_from_slice(&edited);
        out.extend_from_slice(&line[end..]);
        Some(out)
    }

    /// Runs `on_capabilities` on a space-separated list; the edited list, or `None` when no
    /// stage edits lists or nothing changed.
    pub fn capability_list(&self, session: &SessionInfo, caps: &[u8]) -> Option<Vec<u8>> {
        if !self.edits_capabilities {
            return None;
        }
        let original: Vec<Vec<u8>> = caps
            .split(|&c| c == b' ')
            .filter(|c| !c.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let mut list = original.clone();
        for stage in self.list.iter().filter(|s| s.edits_capabilities()) {
            stage.on_capabilities(session, &mut list);
        }
        // Only atoms go out: an entry with a space, bracket or control byte would break the line.
        list.retain(|c| !c.is_empty() && c.iter().all(|&b| b > b' ' && b < 0x7f && b != b']'));
        (list != original).then(|| list.join(&b' '))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The stages (bit `i` for the `i`-th) shown commands `name` ([`Phases::commands`]).
    fn shown(&self, name: CommandName) -> u64 {
        self.shown.get(name.index()).copied().unwrap_or(u64::MAX)
    }

    /// Whether some stage is shown commands `name` (none is, with no stages).
    #[inline]
    pub fn shows(&self, name: CommandName) -> bool {
        self.shown(name) != 0 || self.over_64
    }

    /// The commands some stage wants whole.
    pub fn whole_commands(&self) -> CommandSet {
        self.whole_commands
    }

    /// Runs `on_connect` through the chain.
    pub fn on_connect(&self, session: &SessionInfo) -> Verdict<ConnectDecision> {
        self.chain(
            u64::MAX,
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
            u64::MAX,
            |d| matches!(d, LoginDecision::Continue),
            |s| s.on_login(session, login),
            || {
                let session = session.clone();
                let user = login.user.map(<[u8]>::to_vec);
                let (mechanism, upstream) = (login.mechanism, login.upstream.to_string());
                let credentials = login.credentials.clone();
                move |s: &dyn Phases| {
                    let login = LoginRequest {
                        user: user.as_deref(),
                        mechanism,
                        upstream: &upstream,
                        credentials: &credentials,
                    };
                    s.on_login(&session, &login)
                }
            },
        )
    }

    /// Runs `on_command` through the chain of the stages shown the command.
    pub fn on_command(&self, session: &SessionInfo, cmd: &Command<'_>) -> Verdict<CommandDecision> {
        self.chain(
            self.shown(cmd.name),
            |d| *d == CommandDecision::Forward,
            |s| s.on_command(session, cmd),
            || {
                let session = session.clone();
                let (tag, line) = (cmd.tag.to_vec(), cmd.line.to_vec());
                let message = cmd.message.map(<[u8]>::to_vec);
                let (name, uid) = (cmd.name, cmd.uid);
                move |s: &dyn Phases| {
                    let cmd = Command {
                        tag: &tag,
                        name,
                        uid,
                        line: &line,
                        message: message.as_deref(),
                    };
                    s.on_command(&session, &cmd)
                }
            },
        )
    }

    /// A decision chain: each stage in `shown` (bit `i` for the `i`-th; every stage past the
    /// 64th) in order until one decides something other than the default. `now` asks a stage
    /// with borrowed inputs; when a stage makes the chain wait, `owned` makes a caller that
    /// owns copies of them, for the stages after it.
    fn chain<D, F>(
        &self,
        shown: u64,
        is_default: fn(&D) -> bool,
        now: impl Fn(&dyn Phases) -> Verdict<D>,
        owned: impl FnOnce() -> F,
    ) -> Verdict<D>
    where
        D: Default + Send + 'static,
        F: Fn(&dyn Phases) -> Verdict<D> + Send + 'static,
    {
        let asked = move |i: usize| i >= 64 || shown & (1 << i) != 0;
        for (i, stage) in self.list.iter().enumerate() {
            if !asked(i) {
                continue;
            }
            match now(&**stage) {
                Verdict::Now(d) if is_default(&d) => {}
                Verdict::Now(d) => return Verdict::Now(d),
                Verdict::Wait(first) => {
                    let list = self.list.clone();
                    let ask = owned();
                    // On the main runtime: a stage's work may arm tokio timers (its HTTP
                    // client's, its Redis client's), which session threads have none of.
                    return Verdict::Wait(Box::pin(crate::timer::offload(async move {
                        let d = first.await;
                        if !is_default(&d) {
                            return d;
                        }
                        let later = list.iter().enumerate().skip(i + 1);
                        for (_, stage) in later.filter(|&(j, _)| asked(j)) {
                            let d = match ask(&**stage) {
                                Verdict::Now(d) => d,
                                Verdict::Wait(later) => later.await,
                            };
                            if !is_default(&d) {
                                return d;
                            }
                        }
                        D::default()
                    })));
                }
            }
        }
        Verdict::Now(D::default())
    }

    /// What each stage wants shown as a session's relay starts: its subscriptions, narrowed by
    /// [`Phases::listening`] for the stages that narrow them.
    pub fn listening(&self, session: &SessionInfo) -> Listening {
        let mut each: Box<[Kinds]> = self.subscribed.iter().copied().collect();
        // (Stages past the 64th are never narrowed, as they are never asked for a message.)
        for (i, kinds) in each.iter_mut().enumerate().take(64) {
            if self.narrowing & (1 << i) != 0 {
                *kinds = self.list[i].listening(session).intersection(*kinds);
            }
        }
        Listening::new(each)
    }

    /// Asks the stages that narrow what they want shown again, after a command `name`'s chain
    /// or completion (those whose listening may change with it).
    ///
    /// Inlined up to the test of whether any stage is to be asked (none, for most commands).
    #[inline]
    pub fn relisten(&self, session: &SessionInfo, name: CommandName, listening: &mut Listening) {
        let narrowing = self
            .relisten_after
            .get(name.index())
            .copied()
            .unwrap_or(self.narrowing);
        if narrowing != 0 {
            self.ask_listening(session, narrowing, listening);
        }
    }

    /// Asks the stages in `narrowing` (bit `i` for the `i`-th) what they listen to now.
    fn ask_listening(&self, session: &SessionInfo, mut narrowing: u64, listening: &mut Listening) {
        while narrowing != 0 {
            let i = narrowing.trailing_zeros() as usize;
            narrowing &= narrowing - 1;
            let kinds = self.list[i].listening(session);
            listening.set(i, kinds.intersection(self.subscribed[i]));
        }
    }

    /// An untagged message starts: which stages want it whole (bit `i` for the `i`-th
    /// stage), by what they listen to now ([`Stages::listening`]) and
    /// [`Phases::on_response_start`]. 0: pass it on as it comes.
    pub fn response_start(
        &self,
        session: &SessionInfo,
        listening: &Listening,
        kind: Kinds,
        first_line: &[u8],
    ) -> u64 {
        if !listening.any().intersects(kind) {
            return 0;
        }
        let mut wanted = 0;
        for (i, stage) in self.list.iter().enumerate().take(64) {
            if listening.of(i).intersects(kind)
                && stage.on_response_start(session, kind, first_line)
            {
                wanted |= 1 << i;
            }
        }
        wanted
    }

    /// Runs `on_response` on the stages that wanted the message ([`Stages::response_start`]);
    /// a rewrite is what later stages see.
    pub fn on_response(
        &self,
        session: &SessionInfo,
        msg: &ResponseMessage<'_>,
        wanted: u64,
    ) -> ResponseDecision {
        let mut rewritten: Option<Vec<u8>> = None;
        for (i, stage) in self.list.iter().enumerate().take(64) {
            if wanted & (1 << i) == 0 {
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

    /// Tells the stages shown the command that it completed.
    pub fn on_tagged(&self, session: &SessionInfo, done: &Completion<'_>) {
        let shown = self.shown(done.name);
        for (i, stage) in self.list.iter().enumerate() {
            if i >= 64 || shown & (1 << i) != 0 {
                stage.on_tagged(session, done);
            }
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

/// By command index: the stages among `among` (bit `i` for the `i`-th, of the first 64) whose
/// set (`sets[i]`) holds that command.
fn by_command(sets: &[CommandSet], among: u64) -> Arc<[u64]> {
    CommandName::ALL
        .iter()
        .map(|&(name, _, _)| {
            sets.iter()
                .enumerate()
                .take(64)
                .filter(|&(i, c)| among & (1 << i) != 0 && c.contains(name))
                .fold(0, |n, (i, _)| n | 1 << i)
        })
        .collect()
}
