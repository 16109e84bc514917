//! The session's protocol state after login, followed from the exchange without I/O: which
//! commands are in flight (by tag, in the order the client sent them), what each is waiting for
//! (a continuation for IDLE, the answer the proxy itself will give), whether a mailbox is
//! selected and with which UIDVALIDITY, whether the client is idling, and which extensions are
//! enabled.
//!
//! Answers the proxy gives itself (a stage's refusal, a local BAD) are queued on their command's
//! entry and released only when every command sent before it has completed, so the client sees
//! tagged answers in the order it would from the server.

use std::collections::VecDeque;
use std::time::Instant;

use crate::phases::{Enabled, Outcome, Selected, SessionInfo};
use crate::proto::command::CommandName;
use crate::proto::response::Status;

/// Where the session stands (RFC 9051 §3). The not-authenticated state belongs to the pre-login
/// dialogue, which the proxy conducts itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Logged in, no mailbox selected.
    Authenticated,
    /// A mailbox is selected (its facts are in the session's `SessionInfo::selected`).
    Selected,
    /// LOGOUT was sent or the server said BYE.
    Logout,
}

/// A command relayed upstream (or answered locally) and not yet completed. Kept small: an idle
/// session holds one (its IDLE) for hours; what few commands need is boxed in `Detail`.
#[derive(Debug)]
pub struct InFlight {
    /// The client's tag.
    pub tag: Tag,
    /// When its first byte arrived (latency is measured from here).
    pub started: Instant,
    /// Which command.
    pub name: CommandName,
    /// Prefixed with `UID`.
    pub uid: bool,
    /// Extensions it enables implicitly once it succeeds (RFC 7162 §3.1: CONDSTORE).
    pub enables: Enabled,
    /// IDLE that has not had its `+` yet: the next continuation request is its, not a
    /// literal's.
    pub wants_plus: bool,
    /// What a SELECT or a local answer carries.
    detail: Option<Box<Detail>>,
}

/// A command's tag, in place when short (clients' tags are a few bytes), so that a command in
/// flight costs no allocation; longer ones (up to the proxy's limit, 256) on the heap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    /// Up to [`INLINE_TAG`] bytes: the first `len` of `bytes`.
    Inline {
        /// How many of `bytes` are the tag.
        len: u8,
        /// The tag, then zeros.
        bytes: [u8; INLINE_TAG],
    },
    /// A longer tag.
    Heap(Box<[u8]>),
}

/// The longest tag kept in place (the enum stays 24 bytes, as large as the boxed form).
const INLINE_TAG: usize = 22;

impl Tag {
    /// Keeps `tag`.
    pub fn new(tag: &[u8]) -> Tag {
        match u8::try_from(tag.len()) {
            Ok(len) if tag.len() <= INLINE_TAG => {
                let mut bytes = [0; INLINE_TAG];
                bytes[..tag.len()].copy_from_slice(tag);
                Tag::Inline { len, bytes }
            }
            _ => Tag::Heap(tag.into()),
        }
    }
}

impl std::ops::Deref for Tag {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Tag::Inline { len, bytes } => &bytes[..usize::from(*len).min(INLINE_TAG)],
            Tag::Heap(tag) => tag,
        }
    }
}

impl AsRef<[u8]> for Tag {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// The rarer parts of a command in flight.
#[derive(Debug)]
enum Detail {
    /// SELECT / EXAMINE: the mailbox name, decoded (from an atom, quoted string or literal),
    /// and `[UIDVALIDITY n]` seen while it ran; the identity the session takes on when it
    /// completes.
    Select {
        /// The name.
        mailbox: Vec<u8>,
        /// Its UIDVALIDITY.
        uidvalidity: Option<u32>,
    },
    /// The proxy's own answer (complete lines), sent once the commands before it are done.
    Local {
        /// The lines.
        answer: Vec<u8>,
        /// Its outcome, for `on_tagged`.
        outcome: Outcome,
    },
}

impl InFlight {
    /// A command starting now.
    pub fn new(tag: &[u8], name: CommandName, uid: bool, started: Instant) -> InFlight {
        InFlight {
            tag: Tag::new(tag),
            started,
            name,
            uid,
            enables: Enabled::NONE,
            wants_plus: name == CommandName::Idle,
            detail: None,
        }
    }

    /// Records the mailbox a SELECT / EXAMINE names.
    pub fn set_mailbox(&mut self, mailbox: Vec<u8>) {
        self.detail = Some(Box::new(Detail::Select {
            mailbox,
            uidvalidity: None,
        }));
    }

    /// The mailbox name being captured (a literal arrives in chunks).
    pub fn mailbox_mut(&mut self) -> Option<&mut Vec<u8>> {
        match self.detail.as_deref_mut() {
            Some(Detail::Select { mailbox, .. }) => Some(mailbox),
            _ => None,
        }
    }

    /// Makes this a command the proxy answers itself.
    pub fn set_local(&mut self, answer: Vec<u8>, outcome: Outcome) {
        self.wants_plus = false;
        self.detail = Some(Box::new(Detail::Local { answer, outcome }));
    }

    /// The proxy's own answer and its outcome, for a command answered locally.
    pub fn local(&self) -> Option<(&[u8], Outcome)> {
        match self.detail.as_deref() {
            Some(Detail::Local { answer, outcome }) => Some((answer, *outcome)),
            _ => None,
        }
    }

    /// Whether the proxy answers it.
    pub fn is_local(&self) -> bool {
        self.local().is_some()
    }
}

/// Follows the session's state from the commands and responses that pass.
#[derive(Debug)]
pub struct Tracker {
    /// The current state.
    pub state: State,
    /// Commands in flight, oldest first.
    in_flight: VecDeque<InFlight>,
    /// An IDLE is in progress (from the command until its tagged completion).
    idle: bool,
    /// The IDLE has not been ended by a line yet: the server reads the client's next line raw.
    idle_open: bool,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            state: State::Authenticated,
            in_flight: VecDeque::new(),
            idle: false,
            idle_open: false,
        }
    }
}

impl Tracker {
    /// Records a command as in flight (relayed, or to be answered locally).
    pub fn start(&mut self, cmd: InFlight) {
        if !cmd.is_local() {
            if cmd.name == CommandName::Idle {
                self.idle = true;
                self.idle_open = true;
            }
            if cmd.name == CommandName::Logout {
                self.state = State::Logout;
            }
        }
        // Bounded by the relay, which stops reading the client at its pipelining limit.
        self.in_flight.push_back(cmd);
    }

    /// The most recent command (whose literal a `+` may release, whose mailbox literal may be
    /// captured).
    pub fn newest(&mut self) -> Option<&mut InFlight> {
        self.in_flight.back_mut()
    }

    /// The tag of the most recent command in flight.
    pub fn newest_tag(&self) -> Option<&[u8]> {
        self.in_flight.back().map(|c| &*c.tag)
    }

    /// A `+` arrived: if an IDLE is waiting for one, it is the IDLE's (returns true).
    pub fn take_idle_continuation(&mut self) -> bool {
        match self.in_flight.iter_mut().find(|c| c.wants_plus) {
            Some(c) => {
                c.wants_plus = false;
                true
            }
            None => false,
        }
    }

    /// An untagged `* OK [UIDVALIDITY n]`: belongs to the SELECT/EXAMINE in flight, if any.
    pub fn on_uidvalidity(&mut self, value: u32) {
        if let Some(c) = self
            .in_flight
            .iter_mut()
            .rev()
            .find(|c| matches!(c.name, CommandName::Select | CommandName::Examine))
        {
            if let Some(Detail::Select { uidvalidity, .. }) = c.detail.as_deref_mut() {
                *uidvalidity = Some(value);
            }
        }
    }

    /// Records a tagged completion from the server, updating the session's identity (selected
    /// mailbox, enabled extensions); returns the completed command, if known. `read_only` is
    /// whether the tagged line carried `[READ-ONLY]`.
    pub fn on_tagged(
        &mut self,
        tag: &[u8],
        status: Status,
        read_only: bool,
        info: &mut SessionInfo,
    ) -> Option<InFlight> {
        let answers = |c: &InFlight| &*c.tag == tag && !c.is_local();
        // Servers answer in order nearly always: the oldest command first, without a search.
        let done = if self.in_flight.front().is_some_and(answers) {
            self.in_flight.pop_front()?
        } else {
            let at = self.in_flight.iter().position(answers)?;
            self.in_flight.remove(at)?
        };
        if done.name == CommandName::Idle {
            self.idle = false;
            self.idle_open = false;
        }
        if status == Status::Ok {
            info.enabled.insert(done.enables);
        }
        match (done.name, status) {
            (CommandName::Select | CommandName::Examine, Status::Ok) => {
                self.state = State::Selected;
                let (name, uidvalidity) = match done.detail.as_deref() {
                    Some(Detail::Select {
                        mailbox,
                        uidvalidity,
                    }) => (mailbox.clone(), *uidvalidity),
                    _ => (Vec::new(), None),
                };
                info.selected = Some(Selected {
                    name,
                    uidvalidity,
                    read_only: read_only || done.name == CommandName::Examine,
                });
            }
            // A failed SELECT leaves no mailbox selected (RFC 9051 §6.3.2).
            (CommandName::Select | CommandName::Examine, _) if self.state != State::Logout => {
                self.state = State::Authenticated;
                info.selected = None;
            }
            (CommandName::Close | CommandName::Unselect, Status::Ok) => {
                self.state = State::Authenticated;
                info.selected = None;
            }
            _ => {}
        }
        Some(done)
    }

    /// Local answers whose turn has come: those at the head of the queue (every command before
    /// them has completed).
    pub fn ready_local(&mut self) -> Option<InFlight> {
        if self.in_flight.front().is_some_and(InFlight::is_local) {
            return self.in_flight.pop_front();
        }
        None
    }

    /// The server said BYE.
    pub fn on_bye(&mut self) {
        self.state = State::Logout;
    }

    /// Everything still in flight, at the end of the session.
    pub fn drain(&mut self) -> std::collections::vec_deque::Drain<'_, InFlight> {
        self.in_flight.drain(..)
    }

    /// Gives back the memory of a deep pipeline once it has drained.
    pub fn compact(&mut self) {
        if self.in_flight.is_empty() && self.in_flight.capacity() > 16 {
            self.in_flight = VecDeque::new();
        }
    }

    /// Commands in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether the client is in IDLE.
    pub fn idling(&self) -> bool {
        self.idle
    }

    /// Whether the server reads the client's next line as the end of an IDLE (`DONE` or not).
    pub fn idle_open(&self) -> bool {
        self.idle_open
    }

    /// A line ended the IDLE (the server now waits for its tagged completion).
    pub fn idle_ended(&mut self) {
        self.idle_open = false;
    }

    /// True when nothing but an IDLE waits for the server: a good moment to end the session.
    pub fn quiescent(&self) -> bool {
        self.in_flight.iter().all(|c| c.name == CommandName::Idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_keep_their_bytes_in_place_or_boxed() {
        for len in [0, 1, 21, 22, 23, 255, 256] {
            let tag: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let kept = Tag::new(&tag);
            assert_eq!(&*kept, tag.as_slice());
            assert_eq!(matches!(kept, Tag::Inline { .. }), len <= INLINE_TAG);
        }
        assert_eq!(std::mem::size_of::<Tag>(), 24);
    }

    fn info() -> SessionInfo {
        SessionInfo::new(
            1,
            "127.0.0.1:1".parse().unwrap(),
            crate::session::ListenerKind::Plain,
        )
    }

    fn cmd(t: &mut Tracker, tag: &[u8], name: CommandName) {
        t.start(InFlight::new(tag, name, false, Instant::now()));
    }

    #[test]
    fn follows_select_close_and_pipelining() {
        let mut t = Tracker::default();
        let mut i = info();
        cmd(&mut t, b"a", CommandName::Select);
        t.newest().unwrap().set_mailbox(b"INBOX".to_vec());
        cmd(&mut t, b"b", CommandName::Fetch);
        assert_eq!(t.in_flight(), 2);
        t.on_uidvalidity(42);
        assert_eq!(
            t.on_tagged(b"a", Status::Ok, false, &mut i).unwrap().name,
            CommandName::Select
        );
        assert_eq!(t.state, State::Selected);
        assert_eq!(
            i.selected,
            Some(Selected {
                name: b"INBOX".to_vec(),
                uidvalidity: Some(42),
                read_only: false
            })
        );
        assert!(t.on_tagged(b"zz", Status::Ok, false, &mut i).is_none());
        cmd(&mut t, b"c", CommandName::Examine);
        t.on_tagged(b"c", Status::No, false, &mut i);
        assert_eq!(t.state, State::Authenticated);
        assert_eq!(i.selected, None);
        t.on_tagged(b"b", Status::Ok, false, &mut i);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn idle_takes_the_first_continuation_and_local_answers_wait_their_turn() {
        let mut t = Tracker::default();
        let mut i = info();
        cmd(&mut t, b"a", CommandName::Fetch);
        let mut local = InFlight::new(b"z", CommandName::Compress, false, Instant::now());
        local.set_local(b"z BAD no\r\n".to_vec(), Outcome::Bad);
        t.start(local);
        assert!(t.ready_local().is_none(), "a is still in flight");
        t.on_tagged(b"a", Status::Ok, false, &mut i);
        assert_eq!(t.ready_local().unwrap().tag.as_ref(), b"z");
        cmd(&mut t, b"i", CommandName::Idle);
        assert!(t.idling() && t.quiescent());
        assert!(t.take_idle_continuation());
        assert!(!t.take_idle_continuation(), "one + per IDLE");
        t.on_tagged(b"i", Status::Ok, false, &mut i);
        assert!(!t.idling());
        assert_eq!(t.in_flight(), 0);
    }
}
