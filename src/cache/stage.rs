//! The cache stage: on a FETCH whose cacheable items are all cached for every message of its
//! set, the command goes upstream with those items taken out and the answers get them back
//! ([`merge`](super::merge)); otherwise the command goes upstream untouched and its complete,
//! successful answer fills the cache ([`plan`](super::plan)).
//!
//! The stage acts on a FETCH with nothing else in flight in its session, or on a `UID FETCH`
//! pipelined behind other FETCHes it acts on, when no UID is named by two of them (a sync
//! client fetching message after message): a server answers pipelined commands in order, so an
//! answer belongs to the oldest command that names its UID. Any other command started meanwhile
//! keeps the fills in flight from being committed. A FETCH by sequence number is served (alone)
//! when the session's [`SeqMap`] knows every number.

use std::collections::VecDeque;
use std::sync::Arc;

use super::CacheConfig;
use super::key::MailboxKey;
use super::merge::{Layout, merge};
use super::plan::{self, Fill, MAX_SET, Op, Pending};
use super::rewrite::{self, ItemClass, Parsed, Request, Wanted};
use super::seqmap::SeqMap;
use super::store::Store;
use crate::phases::{
    Command, CommandDecision, CommandSet, Completion, Kinds, Outcome, Phases, ResponseDecision,
    ResponseMessage, SessionInfo, SessionMap, Summary, Verdict,
};
use crate::proto::command::CommandName;
use crate::proto::message::decimal_u32 as number;
use crate::proto::message::{
    Assembled, FetchData, parse_exists, parse_expunge, parse_fetch, parse_vanished,
};

/// The FETCH cache stage.
pub struct Cache {
    /// The shared store.
    store: Arc<Store>,
    /// Per-session state, by session id.
    sessions: SessionMap<SessionState>,
    /// Message numbers are followed whatever the store holds (tests: the lazy plans compared
    /// with eager ones on equal knowledge).
    #[cfg(test)]
    follow_always: std::sync::atomic::AtomicBool,
}

/// What the stage keeps per session.
#[derive(Default)]
struct SessionState {
    /// The FETCHes the stage is working on, oldest first.
    ops: VecDeque<Op>,
    /// Message numbers of the selected mailbox.
    seqs: SeqMap,
    /// The tag of the SELECT or EXAMINE this stage saw start (its answer's EXISTS is the new
    /// mailbox's count).
    selecting: Option<Vec<u8>>,
    /// The message numbers are followed: the stage listens to every untagged kind it
    /// subscribed to. Only while they may be of use ([`Cache::follows`]); otherwise `seqs` is
    /// empty and nothing is learned into it (a map that missed an EXPUNGE would be wrong), so
    /// a session that can be served nothing costs nothing per server message.
    following: bool,
    /// A `UID FETCH` was sent since the mailbox was selected: the client syncs by UID (a
    /// `UID FETCH 1:* (FLAGS)` teaches every number), so the numbers are followed even before
    /// anything is cached, for a FETCH by number to fill.
    by_uid: bool,
    /// The selected mailbox's [`gate`](super::key::gate), once asked (`Some(None)`: it has no
    /// key); forgotten when another mailbox is selected. The only thing asked of the store
    /// about a mailbox nothing was cached for, once per command: not hashed each time.
    gate: Option<Option<u64>>,
    /// The session's command count ([`SessionInfo::commands`]) when the stage last looked:
    /// it is shown only [`FOLLOWING_CHANGES`], and any other command started since spoils the
    /// fills in flight as if it had been shown it.
    seen: u64,
}

impl SessionState {
    /// Catches up with the commands this stage was not shown: if any started since it last
    /// looked (`started`: the session's count, less a command being decided), the fills in
    /// flight are spoiled, as when it is shown every command.
    fn catch_up(&mut self, started: u64) {
        if started != self.seen {
            spoil(&mut self.ops);
            self.seen = started;
        }
    }
}

impl Cache {
    /// A cache stage with its own store.
    pub fn new(config: &CacheConfig) -> Cache {
        Cache {
            store: Arc::new(Store::new(config)),
            sessions: SessionMap::default(),
            #[cfg(test)]
            follow_always: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Registers the cache's metrics.
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        self.store.register(registry)
    }

    /// The store (tests).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Sessions this stage keeps something for (tests).
    #[cfg(test)]
    fn followed(&self) -> usize {
        self.sessions.len()
    }

    /// What to do with a FETCH; `in_flight` are the FETCHes this stage works on that were sent
    /// before it (all the commands in flight), `gate` the selected mailbox's.
    fn plan(
        &self,
        info: &SessionInfo,
        cmd: &Command<'_>,
        state: &SessionState,
        gate: Option<u64>,
    ) -> (Option<Op>, CommandDecision) {
        let (seqs, in_flight) = (&state.seqs, &state.ops);
        let forward = (None, CommandDecision::Forward);
        let alone = in_flight.is_empty();
        if !alone && !cmd.uid {
            // Message numbers are followed only between commands. Checked before the parse:
            // clients that pipeline FETCHes by number (imaptest sends them in batches) would
            // otherwise pay for a plan that could never be made.
            return forward;
        }
        // Without a key (no UIDVALIDITY...) nothing is planned: known before the parse.
        let Some(gate) = gate else {
            return forward;
        };
        // Nothing was ever cached for this mailbox: no serve, so no lookups (and for a FETCH
        // by number, no numbers to resolve: its fill is told apart by being alone).
        let may_serve = self.store.may_hold(gate);
        if alone && !cmd.uid && !may_serve {
            if let Some(p) = Pending::new(cmd.tag, cmd.line) {
                return (Some(Op::Pending(Box::new(p))), CommandDecision::Forward);
            }
        }
        let Some((req, wanted)) = readable(cmd.line, cmd.uid) else {
            return forward;
        };
        let (Some(mailbox), Some(upstream)) = (MailboxKey::of(info), info.upstream.clone()) else {
            return forward;
        };
        let request = plan::canonical_request(&req);
        let uids = if req.uid {
            // The messages that exist, when the session has seen every UID (`*` included);
            // else the set as written.
            seqs.existing(&req.set)
                .filter(|u| u.len() <= MAX_SET)
                .or_else(|| rewrite::expand_set(&req.set, MAX_SET))
        } else if may_serve {
            seqs.resolve(&req.set, MAX_SET)
        } else {
            None
        };
        if !alone
            && !uids
                .as_ref()
                .is_some_and(|u| in_flight.iter().all(|op| op.disjoint(u)))
        {
            return forward;
        }
        // (A UID set none of whose messages exists is served without a lookup.)
        if let Some(uids) = uids.as_ref().filter(|u| may_serve || u.is_empty()) {
            let order = self.store.order(&upstream, &request);
            if let Some(serve) = plan::serve(&self.store, &req, &mailbox, uids, &wanted, order) {
                let line = rewrite::upstream_line(&req);
                return (
                    Some(Op::Serve(Box::new(serve))),
                    CommandDecision::Rewrite(line),
                );
            }
        }
        let set = if req.uid { uids } else { None };
        let fill = fill(req, wanted, request, mailbox, upstream, set);
        (Some(Op::Fill(Box::new(fill))), CommandDecision::Forward)
    }

    /// Whether a session's message numbers are worth following now: a SELECT is under way
    /// (its answer counts the new mailbox), a FETCH is being filled or served, the client
    /// syncs by UID, or the selected mailbox may have entries (a FETCH by number may be
    /// served). Otherwise no plan could use them until the next command, when this is asked
    /// again: a client that fetches by number alone (imaptest) in a mailbox with nothing
    /// cached fills by number only with answers that carry their UID.
    fn follows(&self, info: &SessionInfo, state: &mut SessionState) -> bool {
        #[cfg(test)]
        if self
            .follow_always
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return true;
        }
        state.selecting.is_some()
            || state.by_uid
            || state.ops.iter().any(Op::listens)
            || (*state.gate.get_or_insert_with(|| MailboxKey::gate_of(info)))
                .is_some_and(|g| self.store.may_hold(g))
    }

    /// Puts the cached items into the answer of a served FETCH for one message.
    fn serve_one(
        &self,
        serve: &mut plan::Serve,
        m: &Assembled<'_>,
        data: &FetchData<'_>,
    ) -> Option<Vec<u8>> {
        let uid = data.uid()?;
        let i = serve.hit(uid).filter(|&i| !serve.hits[i].done)?;
        let layout = Layout {
            pieces: serve.pieces(i),
            labels: &serve.labels,
            order: serve.order.as_deref(),
            substitute: serve.substitute,
            drop_uid: serve.drop_uid,
        };
        let hit = &serve.hits[i];
        let (bytes, cached) = merge(m, data, &hit.message.items, &layout)?;
        let metrics = &self.store.metrics;
        metrics.hits.inc_by(layout.pieces.len() as u64);
        metrics.served_bytes.inc_by(cached as u64);
        metrics.saved_bytes.inc_by(cached as u64);
        serve.hits[i].done = true;
        Some(bytes)
    }
}

impl Phases for Cache {
    fn name(&self) -> &'static str {
        "cache"
    }

    fn subscriptions(&self) -> Kinds {
        Kinds::FETCH | Kinds::EXISTS | Kinds::EXPUNGE | Kinds::VANISHED
    }

    fn narrows_listening(&self) -> bool {
        true
    }

    fn listening_changes_with(&self) -> CommandSet {
        FOLLOWING_CHANGES
    }

    fn commands(&self) -> CommandSet {
        // Any other command only spoils the fills in flight: told from the count
        // (`SessionState::catch_up`), not shown one by one.
        FOLLOWING_CHANGES
    }

    fn listening(&self, info: &SessionInfo) -> Kinds {
        let mut sessions = self.sessions.shard(info.id);
        let Some(state) = sessions.get_mut(&info.id) else {
            return Kinds::NONE;
        };
        state.catch_up(info.commands);
        let follow = self.follows(info, state);
        if follow != state.following {
            // Started afresh: numbers learned before were not kept right since.
            state.seqs.clear();
            state.following = follow;
        }
        if follow {
            self.subscriptions()
        } else {
            Kinds::NONE
        }
    }

    fn keeps_fetch_bodies(&self) -> usize {
        // An item as large as may be kept, and the rest of its message.
        usize::try_from(self.store.max_item_bytes().min(self.store.capacity()))
            .unwrap_or(usize::MAX)
            .saturating_add(64 * 1024)
    }

    fn on_command(&self, info: &SessionInfo, cmd: &Command<'_>) -> Verdict<CommandDecision> {
        let mut sessions = self.sessions.shard(info.id);
        let earlier = info.commands.saturating_sub(1);
        if cmd.name == CommandName::Idle
            && sessions.get_mut(&info.id).is_some_and(|s| {
                s.catch_up(earlier);
                // A plan an eager one would not have made is not there.
                s.ops.retain(|op| match op {
                    Op::Pending(p) => readable(&p.line, false).is_some(),
                    _ => true,
                });
                s.ops.is_empty()
            })
        {
            // An idling session keeps nothing here (thousands of them sit idle): its message
            // numbers are learned again after.
            drop(sessions);
            self.sessions.remove(info.id);
            return Verdict::Now(CommandDecision::Forward);
        }
        let state = match cmd.name {
            CommandName::Fetch | CommandName::Select | CommandName::Examine => {
                sessions.entry(info.id).or_default()
            }
            _ => match sessions.get_mut(&info.id) {
                Some(state) => state,
                // Nothing followed, nothing to spoil.
                None => return Verdict::Now(CommandDecision::Forward),
            },
        };
        state.catch_up(earlier);
        state.seen = info.commands;
        match cmd.name {
            CommandName::Select | CommandName::Examine => {
                state.seqs.clear();
                state.selecting = Some(cmd.tag.to_vec());
                state.by_uid = false;
            }
            CommandName::Unselect | CommandName::Close => {
                state.seqs.clear();
                state.by_uid = false;
            }
            CommandName::Fetch if cmd.uid => state.by_uid = true,
            _ => {}
        }
        let tracked = info.in_flight == state.ops.len() && state.ops.len() < MAX_PIPELINED;
        if !tracked || cmd.name != CommandName::Fetch || cmd.message.is_some() {
            // A command whose answers the fills in flight could take for theirs.
            spoil(&mut state.ops);
            return Verdict::Now(CommandDecision::Forward);
        }
        // Hashed once per mailbox, not per FETCH.
        let gate = *state.gate.get_or_insert_with(|| MailboxKey::gate_of(info));
        let (op, decision) = self.plan(info, cmd, state, gate);
        match op {
            Some(op) => state.ops.push_back(op),
            None => spoil(&mut state.ops),
        }
        Verdict::Now(decision)
    }

    fn on_response_start(&self, info: &SessionInfo, kind: Kinds, first_line: &[u8]) -> bool {
        let mut sessions = self.sessions.shard(info.id);
        let Some(state) = sessions.get_mut(&info.id) else {
            return false;
        };
        state.catch_up(info.commands);
        if !state.following {
            // Shown what it no longer listens to (a message already started): nothing learned.
            return false;
        }
        if kind != Kinds::FETCH {
            // One-line messages: followed here, never assembled for the cache.
            track(&mut state.seqs, kind, first_line);
            return false;
        }
        if !state.ops.is_empty() {
            settle(&mut state.ops, info);
            if state.ops.iter().any(Op::listens) {
                return true;
            }
        }
        // Only the numbers: a look at the first line.
        if let Some((seq, uid)) = seq_and_uid(first_line) {
            state.seqs.learn(seq, uid);
        }
        false
    }

    fn on_response(&self, info: &SessionInfo, msg: &ResponseMessage<'_>) -> ResponseDecision {
        let mut sessions = self.sessions.shard(info.id);
        let Some(state) = sessions.get_mut(&info.id) else {
            return ResponseDecision::Forward;
        };
        state.catch_up(info.commands);
        if msg.kind != Kinds::FETCH {
            return ResponseDecision::Forward;
        }
        settle(&mut state.ops, info);
        let max = usize::try_from(self.store.capacity()).unwrap_or(usize::MAX);
        let decision = msg.with_assembled(|m| {
            let data = parse_fetch(m).ok()?;
            if let Some(uid) = data.uid().filter(|_| state.following) {
                state.seqs.learn(data.seq, uid);
            }
            let uid = data.uid().or_else(|| state.seqs.uid(data.seq))?;
            match state.ops.iter_mut().find(|op| op.claims(uid))? {
                Op::Fill(fill) => {
                    fill.take(m, &data, uid, max);
                    None
                }
                Op::Serve(_) if msg.streamed => None,
                Op::Serve(serve) => self.serve_one(serve, m, &data),
                // Spoiled (settled otherwise): keeps nothing, as its fill would.
                Op::Pending(_) => None,
            }
        });
        match decision.flatten() {
            Some(bytes) => ResponseDecision::Rewrite(bytes),
            None => ResponseDecision::Forward,
        }
    }

    fn on_tagged(&self, info: &SessionInfo, done: &Completion<'_>) {
        if !FOLLOWING_CHANGES.contains(done.name) {
            // Nothing of this stage's changes at any other completion.
            return;
        }
        let mut sessions = self.sessions.shard(info.id);
        let Some(state) = sessions.get_mut(&info.id) else {
            return;
        };
        state.catch_up(info.commands);
        match done.name {
            CommandName::Select | CommandName::Examine => {
                // Kept when this stage saw it start (the map began empty then and followed its
                // answer); otherwise the answer came on top of the old mailbox's numbers.
                let seen = state.selecting.take().is_some_and(|t| t == done.tag);
                if !seen || done.outcome != Outcome::Ok {
                    state.seqs.clear();
                }
                state.gate = None;
            }
            CommandName::Unselect | CommandName::Close => {
                state.seqs.clear();
                state.gate = None;
            }
            _ => {}
        }
        if state.ops.is_empty() {
            return;
        }
        settle(&mut state.ops, info);
        let Some(at) = state.ops.iter().position(|op| op.tag() == done.tag) else {
            return;
        };
        let op = state.ops.remove(at);
        drop(sessions);
        if let Some(Op::Fill(fill)) = op {
            if done.outcome == Outcome::Ok && !fill.spoiled {
                fill.commit(&self.store);
            }
        }
    }

    fn on_close(&self, summary: &Summary<'_>) {
        self.sessions.remove(summary.info.id);
    }
}

/// A FETCH line the cache can take part in: the request and its cacheable items (`None`: the
/// command is forwarded with no plan).
fn readable(line: &[u8], uid: bool) -> Option<(Request, Vec<Wanted>)> {
    let Parsed::Fetch(req) = rewrite::parse_request(line) else {
        return None;
    };
    if req.uid != uid {
        // The core and the cache read the line alike; should they ever differ, stay out.
        return None;
    }
    let wanted: Vec<Wanted> = req
        .items
        .iter()
        .filter_map(|i| match &i.class {
            ItemClass::Cached(w) => Some(w.clone()),
            _ => None,
        })
        .collect();
    if wanted.is_empty() || plan::ambiguous(&wanted) {
        return None;
    }
    Some((req, wanted))
}

/// The fill of a request, nothing answered yet.
fn fill(
    req: Request,
    wanted: Vec<Wanted>,
    request: String,
    mailbox: Arc<MailboxKey>,
    upstream: Arc<str>,
    set: Option<Vec<u32>>,
) -> Fill {
    Fill {
        names: wanted.iter().map(|w| (Arc::from(&*w.key), None)).collect(),
        marks_absent: req.uid && req.modifiers.is_none(),
        tag: req.tag,
        mailbox,
        upstream,
        request,
        wanted,
        set,
        found: Vec::new(),
        answered: Vec::new(),
        order: None,
        bytes: 0,
        spoiled: false,
    }
}

impl Pending {
    /// What an eager plan would have made of it, with the session as it was then: its fill, or
    /// nothing.
    fn fill(&self, info: &SessionInfo) -> Option<Fill> {
        let (req, wanted) = readable(&self.line, false)?;
        let (Some(mailbox), Some(upstream)) = (MailboxKey::of(info), info.upstream.clone()) else {
            return None;
        };
        let request = plan::canonical_request(&req);
        Some(fill(req, wanted, request, mailbox, upstream, None))
    }
}

/// Makes a pending plan that is not spoiled what an eager plan would have made: its fill, or
/// (when it would have had none) nothing. A pending plan is only ever the one op of its session
/// (it is made alone, and nothing is planned behind it: it shares no UID set), so only the first
/// is looked at; this runs for every FETCH message.
#[inline]
fn settle(ops: &mut VecDeque<Op>, info: &SessionInfo) {
    if matches!(ops.front(), Some(Op::Pending(p)) if !p.spoiled) {
        settle_first(ops, info);
    }
}

/// [`settle`] for a first op that is a pending plan, not spoiled.
#[cold]
fn settle_first(ops: &mut VecDeque<Op>, info: &SessionInfo) {
    let Some(Op::Pending(p)) = ops.front() else {
        return;
    };
    match p.fill(info) {
        Some(fill) => ops[0] = Op::Fill(Box::new(fill)),
        None => {
            ops.pop_front();
        }
    }
}

/// The commands whose start or completion can change what the stage follows: what starts or
/// ends a plan (FETCH: plans are made for FETCHes alone), changes the selected mailbox, or
/// forgets a session's state (IDLE). A plan another command spoiled stops being followed at
/// its own completion; a mailbox another session filled is followed from this one's next FETCH.
const FOLLOWING_CHANGES: CommandSet = CommandSet::of(&[
    CommandName::Fetch,
    CommandName::Select,
    CommandName::Examine,
    CommandName::Unselect,
    CommandName::Close,
    CommandName::Idle,
]);

/// Most FETCHes the stage works on at once in a session.
const MAX_PIPELINED: usize = 64;

/// Another command started: the fills in flight cannot be sure their answers are theirs.
fn spoil(ops: &mut VecDeque<Op>) {
    for op in ops.iter_mut() {
        match op {
            Op::Fill(fill) => fill.spoiled = true,
            Op::Pending(p) => p.spoiled = true,
            Op::Serve(_) => {}
        }
    }
}

/// Follows `* n EXISTS`, `* n EXPUNGE` and `* VANISHED` in the message numbers.
fn track(seqs: &mut SeqMap, kind: Kinds, line: &[u8]) {
    if kind == Kinds::EXISTS {
        match parse_exists(line) {
            Ok(n) => seqs.exists(n),
            Err(_) => seqs.clear(),
        }
    } else if kind == Kinds::EXPUNGE {
        match parse_expunge(line) {
            Ok(n) => seqs.expunge(n),
            Err(_) => seqs.clear(),
        }
    } else if kind == Kinds::VANISHED {
        match parse_vanished(line) {
            Ok(v) if v.earlier => {}
            Ok(v) => match rewrite::expand_set(v.uids, 1000) {
                Some(uids) => seqs.vanished(&uids),
                None => seqs.clear(),
            },
            Err(_) => seqs.clear(),
        }
    }
}

/// `* seq FETCH (UID uid` at the start of a line (how Dovecot and most servers begin).
fn seq_and_uid(line: &[u8]) -> Option<(u32, u32)> {
    let rest = line.strip_prefix(b"* ")?;
    let sp = rest.iter().position(|&c| c == b' ')?;
    let (seq, rest) = (&rest[..sp], &rest[sp + 1..]);
    // Most FETCH messages begin with another item (a STORE's FLAGS, a FETCH without UID first):
    // the first letter of the first item (only UID's is a U) turns them away before anything is
    // compared or parsed.
    if rest.get(7).is_none_or(|&c| c | 0x20 != b'u') {
        return None;
    }
    let rest = rest
        .get(..11)
        .filter(|p| p.eq_ignore_ascii_case(b"FETCH (UID "))
        .and(rest.get(11..))?;
    let end = rest.iter().position(|c| !c.is_ascii_digit())?;
    Some((number(seq)?, number(&rest[..end])?))
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "stage_props.rs"]
mod props;
