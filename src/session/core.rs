//! The session core after login, with no I/O: it is fed the bytes read from either side and
//! says what goes to the other (appended to a [`Pipe`], in place where bytes pass unchanged).
//! It owns the two framers, the state [`Tracker`], the session's identity ([`SessionInfo`]) and
//! the ordered [`Stages`]; the driver (`relay.rs`) only moves bytes between sockets and buffers.
//!
//! Per client command (the first line of a message, as the framer delimits it):
//! 1. a line that is not a command is answered `BAD` by the proxy (or, during IDLE, `DONE` ends
//!    the IDLE) and never forwarded;
//! 2. the proxy's own rules: `COMPRESS`, `STARTTLS`, `LOGIN`, `AUTHENTICATE` get a local `BAD`;
//! 3. `on_command` on the stages: forward, refuse, answer locally, rewrite, or wait — a waiting
//!    command parks here with its line, and nothing behind it is read until it is decided. A
//!    command a stage wants whole is first collected with its literals (`core_held.rs`).
//!
//! Per server message: a `+` is matched to what waits for it (an IDLE first, then the client's
//! synchronizing literal; a stray one is dropped); tagged answers complete commands
//! (`on_tagged`, then any local answers whose turn has come); untagged messages of a kind a stage
//! subscribed to are assembled whole (bounded; a large FETCH literal streams on and the stage
//! observes its extent) and shown to `on_response`; everything else is forwarded as it arrives. The proxy's own answers join the client's stream only at a message
//! boundary, in the order of the commands they answer.

use std::time::Instant;

use crate::error::{SessionError, Side};
use crate::phases::{
    Command, CommandDecision, Completion, Enabled, Event, Kinds, Listening, Outcome, Pending,
    SessionInfo, Stages, Verdict,
};
use crate::proto::args::astring;
use crate::proto::command::{CommandLine, CommandName, leading_tag, parse_command_line, trim_eol};
use crate::proto::framer::{Frame, Framer, MAX_TAG};
use crate::proto::literal::announced_literal;
use crate::proto::message::Assembler;
use crate::proto::response::Status;
use crate::session::pipe::Pipe;
use crate::session::state::{InFlight, Tracker};

/// Longest mailbox name kept for the session's identity (names are far shorter in practice).
const MAX_MAILBOX_NAME: usize = 4096;

/// A command waiting for a stage's decision.
struct Parked {
    /// The decision to come.
    decision: Pending<CommandDecision>,
    /// The command's first line (or, when held whole, the whole command), held back until then.
    line: Vec<u8>,
    /// Where its arguments start in `line`, when it is a whole command.
    args_at: Option<usize>,
    /// Its entry for the tracker once decided.
    entry: InFlight,
}

/// An untagged message being assembled for the stages subscribed to its kind.
struct Assembly {
    /// Its kind.
    kind: Kinds,
    /// The stages that want it (bit per stage, [`Stages::response_start`]).
    stages: u64,
    /// Lines and literals as received (the message itself while every literal is kept), and
    /// the parse view stages get.
    assembler: Assembler,
    /// A FETCH literal too large to hold is streaming to the client: what came before it was
    /// passed on, and the stages only observe the message when it ends.
    streamed: bool,
    /// It could not be assembled within the limit: a message other than FETCH is dropped, never
    /// passed on unseen.
    overflow: bool,
}

/// The I/O-free part of a logged-in session.
pub struct Core {
    /// Frames the client's bytes.
    pub client: Framer,
    /// Frames the upstream's bytes.
    pub upstream: Framer,
    /// Protocol state.
    pub tracker: Tracker,
    /// Who and where the session is (what stages decide on).
    pub info: SessionInfo,
    /// The stages, in call order.
    pub stages: Stages,
    /// Which untagged kinds each stage wants shown now (asked again after the chain and the
    /// completion of the commands a narrowing stage names).
    listening: Listening,
    /// The proxy's own responses waiting for a message boundary towards the client.
    local: Vec<u8>,
    /// The rest of the current client message is dropped (its command was answered locally).
    dropping: bool,
    /// The literal that follows belongs to a SELECT/EXAMINE's mailbox name: keep it.
    capture: bool,
    /// Tag of a command whose over-long line is being discarded.
    overlong_tag: Option<Box<[u8]>>,
    /// The server line being framed (in parts, when long) is not passed on.
    drop_response_line: bool,
    /// The server line being framed may carry a capability list (`* CAPABILITY`, a
    /// `[CAPABILITY ...]` code): only such lines are checked for what the proxy filters.
    caps_line: bool,
    /// Stop taking new commands, finish the ones in flight.
    pub draining: bool,
    /// A BYE was seen from the upstream.
    pub bye_seen: bool,
    /// A command waiting for a stage (boxed: absent nearly always, and idle sessions stay small).
    parked: Option<Box<Parked>>,
    /// The stages already saw the start of the next server message, in a run that stopped
    /// before it because some of them want it whole: its kind and which stages.
    started: Option<(Kinds, u64)>,
    /// An untagged message being assembled (boxed for the same reason).
    assembly: Option<Box<Assembly>>,
    /// A command being collected whole for the stages (boxed for the same reason).
    held: Option<Box<Held>>,
    /// The upstream takes non-synchronizing literals (`LITERAL+`), so a command can be
    /// collected whole and relayed in one piece.
    literal_plus: bool,
    /// Largest message assembled.
    max_assembled: usize,
    /// Commands the client sent.
    pub commands: u64,
    /// When the bytes being processed arrived, as the relay read the clock ([`Core::set_now`]):
    /// once per wake-up, not per read or command; commands that arrived together started
    /// together.
    now: Instant,
}

impl Core {
    /// A core for a session that has just logged in.
    pub fn new(
        client: Framer,
        upstream: Framer,
        info: SessionInfo,
        stages: Stages,
        max_assembled: usize,
        literal_plus: bool,
    ) -> Core {
        Core {
            client,
            upstream,
            tracker: Tracker::default(),
            listening: stages.listening(&info),
            info,
            stages,
            local: Vec::new(),
            dropping: false,
            capture: false,
            overlong_tag: None,
            drop_response_line: false,
            caps_line: false,
            draining: false,
            bye_seen: false,
            parked: None,
            started: None,
            assembly: None,
            held: None,
            literal_plus,
            max_assembled,
            commands: 0,
            now: Instant::now(),
        }
    }

    /// Whether a command waits for a stage's decision.
    pub fn parked(&self) -> bool {
        self.parked.is_some()
    }

    /// Whether client bytes may be framed now (no synchronizing literal awaiting its `+`, no
    /// command parked).
    pub fn takes_client_bytes(&self) -> bool {
        !self.client.awaiting_continuation() && self.parked.is_none()
    }

    /// Whether the client is at a command boundary (no command half sent upstream).
    pub fn client_at_boundary(&self) -> bool {
        self.client.at_message_boundary() && self.parked.is_none()
    }

    /// Whether a message of the proxy's can be written to the client now.
    pub fn client_stream_at_boundary(&self) -> bool {
        self.upstream.at_message_boundary() && self.local.is_empty()
    }

    /// Bytes of the proxy's own waiting to go to the client.
    pub fn local_len(&self) -> usize {
        self.local.len()
    }

    /// Queues a line of the proxy's own for the client (sent at the next message boundary).
    pub fn say(&mut self, line: &[u8]) {
        self.local.extend_from_slice(line);
    }

    /// Moves the proxy's own responses into the client's output at a message boundary.
    pub fn push_local(&mut self, to_client: &mut Pipe, input: &[u8]) {
        if !self.local.is_empty() && self.upstream.at_message_boundary() && self.assembly.is_none()
        {
            to_client.push(input, &self.local);
            self.local.clear();
        }
    }

    /// Gives memory back while the session is quiet.
    pub fn release(&mut self) {
        if self.local.is_empty() && self.local.capacity() > 0 {
            self.local = Vec::new();
        }
        self.tracker.compact();
    }

    /// Every command relayed has been answered (an IDLE aside) and the answers are out.
    pub fn all_answered(&self) -> bool {
        self.tracker.quiescent()
            && self.local.is_empty()
            && self.parked.is_none()
            && self.upstream.at_message_boundary()
    }

    /// Polls a parked command's decision; once it is there, applies it (the driver then frames
    /// the client bytes that waited behind it).
    pub fn poll_parked(
        &mut self,
        cx: &mut std::task::Context<'_>,
        to_upstream: &mut Pipe,
    ) -> std::task::Poll<()> {
        let Some(parked) = self.parked.as_mut() else {
            return std::task::Poll::Ready(());
        };
        let decision = std::task::ready!(parked.decision.as_mut().poll(cx));
        if let Some(parked) = self.parked.take() {
            let Parked {
                line,
                entry,
                args_at,
                ..
            } = *parked;
            let args = args_at.and_then(|at| line.get(at..));
            self.decide(decision, entry, &line, args, None, to_upstream);
        }
        std::task::Poll::Ready(())
    }

    /// Frames client bytes and relays (or answers) them. Returns how many bytes were used.
    pub fn client_bytes(
        &mut self,
        data: &[u8],
        to_upstream: &mut Pipe,
    ) -> Result<usize, SessionError> {
        let mut pos = 0;
        // While draining, no new command starts: what follows stays unread. A parked command
        // holds back everything behind it.
        while !(self.draining && self.client.at_message_boundary()) && self.parked.is_none() {
            let step = self
                .client
                .next(&data[pos..])
                .map_err(|source| SessionError::Framing {
                    side: Side::Client,
                    source,
                })?;
            let Some((frame, used)) = step else { break };
            match frame {
                Frame::Line(line) if line.first => {
                    self.dropping = false;
                    self.capture = false;
                    let cmd = line.command.filter(|_| line.syntax.is_none());
                    self.command(line.bytes, cmd, data, pos, used, to_upstream);
                }
                Frame::Line(line) if self.held.is_some() => self.hold_line(&line),
                Frame::Literal { data: bytes, .. } if self.held.is_some() => self.hold_bytes(bytes),
                Frame::Line(line) => {
                    if line.syntax.is_some() && !self.dropping {
                        // Part of this command went upstream already: the stream cannot be
                        // brought back in step without forwarding what the proxy cannot read.
                        return Err(SessionError::Protocol {
                            side: Side::Client,
                            what: "invalid command continuation after a literal",
                        });
                    }
                    if self.dropping {
                        // The answer stands in for the server's: a synchronizing literal of
                        // this command will not be sent.
                        self.client.literal_refused();
                    } else {
                        to_upstream.forward(data, pos, used);
                    }
                }
                Frame::Literal { data: bytes, .. } => {
                    if !self.dropping {
                        if self.capture {
                            self.capture_mailbox(bytes);
                        }
                        to_upstream.forward(data, pos, used);
                    }
                }
                Frame::Overlong { head, first } => {
                    if !first && !self.dropping {
                        return Err(SessionError::Protocol {
                            side: Side::Client,
                            what: "line too long inside a command",
                        });
                    }
                    self.overlong_tag = leading_tag(head).map(Box::from);
                }
                Frame::Skipped => {}
                Frame::Discarded => {
                    let tag = self.overlong_tag.take();
                    self.stages.observe(&Event::LimitRejected { kind: "line" });
                    self.refuse_line(tag.as_deref(), "BAD Command line too long.");
                }
                Frame::LiteralTooLarge {
                    line,
                    first,
                    literal,
                } => {
                    self.stages
                        .observe(&Event::LimitRejected { kind: "literal" });
                    if !(first && literal.sync) {
                        return Err(SessionError::TooBig(Side::Client));
                    }
                    self.refuse_line(leading_tag(line), "BAD [TOOBIG] Literal too large.");
                }
            }
            pos += used;
            if self.held.is_some() && self.client.at_message_boundary() {
                self.decide_held(to_upstream);
            }
        }
        Ok(pos)
    }

    /// The first line of a client message (`data[pos..pos + used]` is `line`).
    fn command(
        &mut self,
        line: &[u8],
        cmd: Option<CommandLine<'_>>,
        data: &[u8],
        pos: usize,
        used: usize,
        up: &mut Pipe,
    ) {
        if self.tracker.idle_open() {
            self.tracker.idle_ended();
            // During IDLE the server reads whole lines, whatever they hold: `DONE` ends the
            // IDLE; anything else ends it too (with an error), but only `DONE` itself is sent,
            // and what follows the line is a new command for the server, so for the framer too.
            if trim_eol(line).eq_ignore_ascii_case(b"DONE") {
                up.forward(data, pos, used);
            } else {
                up.push(data, b"DONE\r\n");
                self.client.reset();
            }
            return;
        }
        let Some(cmd) = cmd else {
            self.dropping = true;
            self.client.literal_refused();
            self.refuse_line(leading_tag(line), "BAD Invalid command line.");
            return;
        };
        if cmd.tag.len() > MAX_TAG {
            // Its echo could not be recognised as a status response in every server line.
            self.dropping = true;
            self.client.literal_refused();
            self.refuse_line(None, "BAD Tag too long.");
            return;
        }
        self.commands += 1;
        self.info.commands = self.commands;
        let entry = InFlight::new(cmd.tag, cmd.name, cmd.uid, self.now);
        let own = match cmd.name {
            CommandName::Compress => Some("COMPRESS is not available through this proxy."),
            CommandName::Starttls => Some("STARTTLS is only valid before login."),
            CommandName::Login | CommandName::Authenticate => Some("Already logged in."),
            _ => None,
        };
        if let Some(text) = own {
            self.refuse(entry, Status::Bad, None, text);
            return;
        }
        if !self.stages.shows(cmd.name) {
            // No stage is shown it: relayed as with no stages (what they listen to may still
            // change with it).
            self.stages
                .relisten(&self.info, cmd.name, &mut self.listening);
            self.relay(entry, cmd.args, line, Some((data, pos, used)), up);
            return;
        }
        if !self.client.at_message_boundary()
            && self.literal_plus
            && cmd.name != CommandName::Append
            && self.stages.whole_commands().contains(cmd.name)
        {
            // `args` is a slice of `line`.
            let args_at = (cmd.args.as_ptr() as usize).saturating_sub(line.as_ptr() as usize);
            self.hold(entry, line, args_at);
            return;
        }
        let view = Command {
            tag: cmd.tag,
            name: cmd.name,
            uid: cmd.uid,
            line,
            message: None,
        };
        self.info.in_flight = self.tracker.in_flight();
        match self.stages.on_command(&self.info, &view) {
            Verdict::Now(decision) => {
                let src = Some((data, pos, used));
                self.decide(decision, entry, line, Some(cmd.args), src, up)
            }
            Verdict::Wait(decision) => {
                self.parked = Some(Box::new(Parked {
                    decision,
                    line: line.to_vec(),
                    args_at: None,
                    entry,
                }));
            }
        }
    }

    /// Carries out a stage's decision on a command. `args` are its arguments when already
    /// parsed; `src` is where the line sits in the input (to forward it in place), `None` when
    /// it was held back.
    fn decide(
        &mut self,
        decision: CommandDecision,
        entry: InFlight,
        line: &[u8],
        args: Option<&[u8]>,
        src: Option<(&[u8], usize, usize)>,
        up: &mut Pipe,
    ) {
        // The chain is over: the stages that narrow what they are shown may have changed it.
        self.stages
            .relisten(&self.info, entry.name, &mut self.listening);
        match decision {
            CommandDecision::Forward => {
                let args = args
                    .or_else(|| parse_command_line(line).map(|c| c.args))
                    .unwrap_or_default();
                self.relay(entry, args, line, src, up);
            }
            CommandDecision::Refuse { status, code, text } => {
                let status = if status == Status::Ok {
                    Status::No
                } else {
                    status
                };
                self.refuse(entry, status, code.as_deref(), &text);
            }
            CommandDecision::Answer { untagged, text } => {
                let mut answer = untagged;
                push_status(&mut answer, &entry.tag, Status::Ok, None, &text);
                self.answer(entry, answer, Outcome::Ok);
            }
            CommandDecision::Rewrite(new) => {
                let same_literal = announced_literal(&new).ok().flatten()
                    == announced_literal(line).ok().flatten();
                match parse_command_line(&new) {
                    Some(cmd) if same_literal && new.ends_with(b"\n") && *cmd.tag == *entry.tag => {
                        // The command as sent is what the tracker follows (SELECT made EXAMINE).
                        let mut entry = entry;
                        entry.name = cmd.name;
                        entry.uid = cmd.uid;
                        let args = cmd.args;
                        self.relay(entry, args, &new, None, up);
                    }
                    _ => {
                        crate::telemetry::in_session(|| {
                            tracing::error!("a stage rewrote a command into an invalid one");
                        });
                        self.refuse(entry, Status::Bad, None, "Internal error.");
                    }
                }
            }
        }
    }

    /// Sends a command upstream and records it as in flight.
    fn relay(
        &mut self,
        mut entry: InFlight,
        args: &[u8],
        line: &[u8],
        src: Option<(&[u8], usize, usize)>,
        up: &mut Pipe,
    ) {
        let upper = |needle: &[u8]| crate::proto::keyword::mentions(args, needle);
        match entry.name {
            CommandName::Select | CommandName::Examine => {
                let body = trim_eol(args);
                if body.ends_with(b"}") && (body.starts_with(b"{") || body.starts_with(b"~{")) {
                    entry.set_mailbox(Vec::new());
                    self.capture = true;
                } else if let Ok((_, name)) = astring(body) {
                    entry.set_mailbox(name);
                }
                if upper(b"QRESYNC") {
                    entry.enables = Enabled::CONDSTORE | Enabled::QRESYNC;
                } else if upper(b"CONDSTORE") {
                    entry.enables = Enabled::CONDSTORE;
                }
            }
            // RFC 7162 §3.1: these enable CONDSTORE implicitly.
            CommandName::Fetch | CommandName::Store | CommandName::Search
                if upper(b"MODSEQ") || upper(b"CHANGEDSINCE") =>
            {
                entry.enables = Enabled::CONDSTORE;
            }
            _ => {}
        }
        self.tracker.start(entry);
        match src {
            Some((data, pos, used)) if line.len() == used => up.forward(data, pos, used),
            Some((data, ..)) => up.push(data, line),
            None => up.push(&[], line),
        }
    }

    /// Answers a command with `tag status [code] text` instead of relaying it.
    fn refuse(&mut self, entry: InFlight, status: Status, code: Option<&str>, text: &str) {
        let mut answer = Vec::new();
        push_status(&mut answer, &entry.tag, status, code, text);
        self.answer(entry, answer, Outcome::from_status(status));
    }

    /// Queues a local answer behind the commands sent before it; its literals are not read.
    fn answer(&mut self, mut entry: InFlight, answer: Vec<u8>, outcome: Outcome) {
        self.dropping = true;
        self.client.literal_refused();
        entry.set_local(answer, outcome);
        self.tracker.start(entry);
        self.release_local();
    }

    /// A line that is not a command (or was cut): `tag BAD ...`, or `* BAD ...` without a tag.
    fn refuse_line(&mut self, tag: Option<&[u8]>, text: &str) {
        match tag {
            Some(tag) => {
                let entry = InFlight::new(tag, CommandName::Other, false, self.now);
                let mut answer = tag.to_vec();
                answer.push(b' ');
                answer.extend_from_slice(text.as_bytes());
                answer.extend_from_slice(b"\r\n");
                self.answer(entry, answer, Outcome::Bad);
            }
            None => {
                self.local.extend_from_slice(b"* ");
                self.local.extend_from_slice(text.as_bytes());
                self.local.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Moves local answers whose turn has come into the outgoing queue.
    fn release_local(&mut self) {
        while let Some(done) = self.tracker.ready_local() {
            if let Some((answer, outcome)) = done.local() {
                self.local.extend_from_slice(answer);
                self.completed(&done, outcome, None, true);
            }
        }
    }

    /// Tells the stages a command completed.
    fn completed(&mut self, done: &InFlight, outcome: Outcome, code: Option<&[u8]>, local: bool) {
        if self.stages.shows(done.name) {
            self.stages.on_tagged(
                &self.info,
                &Completion {
                    tag: &done.tag,
                    name: done.name,
                    uid: done.uid,
                    outcome,
                    code,
                    started: done.started,
                    at: self.now,
                    local,
                },
            );
        }
        self.stages
            .relisten(&self.info, done.name, &mut self.listening);
    }

    /// Appends literal bytes to the newest command's mailbox name.
    fn capture_mailbox(&mut self, bytes: &[u8]) {
        if let Some(name) = self.tracker.newest().and_then(InFlight::mailbox_mut) {
            let room = MAX_MAILBOX_NAME.saturating_sub(name.len());
            name.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// When the bytes about to be processed arrived (the relay reads the clock once per
    /// wake-up, for all the reads it makes then).
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// When the bytes being processed arrived.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The session ends: commands still in flight complete with `bye` (the client was told
    /// `* BYE`, by the server or the proxy) or `none`.
    pub fn end(&mut self, said_bye: bool) {
        self.now = Instant::now();
        let outcome = if said_bye {
            Outcome::Bye
        } else {
            Outcome::None
        };
        let left: Vec<InFlight> = self.tracker.drain().collect();
        for done in &left {
            self.completed(done, outcome, None, done.is_local());
        }
    }
}

/// Appends `tag status [code] text CRLF`.
fn push_status(out: &mut Vec<u8>, tag: &[u8], status: Status, code: Option<&str>, text: &str) {
    out.extend_from_slice(tag);
    out.extend_from_slice(match status {
        Status::Ok => b" OK ",
        Status::No => b" NO ",
        Status::Bad => b" BAD ",
    });
    if let Some(code) = code {
        out.push(b'[');
        out.extend_from_slice(code.as_bytes());
        out.extend_from_slice(b"] ");
    }
    // Text from a stage must not break the line.
    out.extend(text.bytes().filter(|&c| c != b'\r' && c != b'\n'));
    out.extend_from_slice(b"\r\n");
}

#[path = "core_upstream.rs"]
mod upstream_side;

#[path = "core_held.rs"]
mod held;
use held::Held;

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
