//! The core's upstream side: server messages framed, matched to what waits for them (a `+` to
//! an IDLE or a literal, a tagged answer to its command), assembled whole for stages that
//! subscribed to their kind, and forwarded.

use super::{Assembly, Core};
use crate::error::{SessionError, Side};
use crate::phases::{Enabled, Event, Kinds, Outcome, ResponseDecision, ResponseMessage};
use crate::proto::command::trim_eol;
use crate::proto::framer::{Frame, RunStep};
use crate::proto::message::{self, Cond, Kind, RespCode};
use crate::proto::message::{AssembleLimits, Assembler};
use crate::proto::response::{self, Status, filter_capability_line};
use crate::session::pipe::Pipe;

/// Every kind a line `* number ...` can be ([`message::kind`]: a number is never a condition or a
/// named response).
const NUMBERED: Kinds = Kinds::EXISTS
    .union(Kinds::EXPUNGE)
    .union(Kinds::FETCH)
    .union(Kinds::OTHER);

impl Core {
    /// Frames upstream bytes and relays them, following the state. Returns how many bytes were
    /// used.
    pub fn upstream_bytes(
        &mut self,
        data: &[u8],
        to_client: &mut Pipe,
    ) -> Result<usize, SessionError> {
        let mut pos = 0;
        loop {
            if self.passes_runs() {
                // Messages no stage wants whole go on as one run, not frame by frame.
                let (ran, tagged) = self.message_run(&data[pos..]);
                if ran > 0 {
                    to_client.forward(data, pos, ran);
                    pos += ran;
                    self.caps_line = false;
                }
                if let Some(answer) = tagged {
                    // The run ended with it, passed on: now the command completes.
                    self.tagged_answer(answer);
                    self.push_local(to_client, data);
                    continue;
                }
            }
            let step =
                self.upstream
                    .next(&data[pos..])
                    .map_err(|source| SessionError::Framing {
                        side: Side::Upstream,
                        source,
                    })?;
            let Some((frame, used)) = step else { break };
            match frame {
                Frame::Line(ref line) => {
                    if line.first && line.start {
                        self.drop_response_line = !self.response_start(line.bytes);
                    }
                    let forward = !self.drop_response_line;
                    if line.complete {
                        // The parts of a long line that was dropped are dropped with it.
                        self.drop_response_line = false;
                    }
                    if let Some(assembly) = self.assembly.as_mut() {
                        assembly.take(&frame, data, pos, used, to_client);
                    } else if forward {
                        let rewritten =
                            if line.first && line.start && line.complete && self.caps_line {
                                self.capability_line(line.bytes)
                            } else {
                                None
                            };
                        match rewritten {
                            Some(r) => to_client.push(data, &r),
                            None => to_client.forward(data, pos, used),
                        }
                    }
                }
                Frame::Literal { .. } => match self.assembly.as_mut() {
                    Some(assembly) => assembly.take(&frame, data, pos, used, to_client),
                    None => to_client.forward(data, pos, used),
                },
                Frame::Overlong { .. } | Frame::Skipped | Frame::Discarded => {}
                Frame::LiteralTooLarge { .. } => {
                    return Err(SessionError::TooBig(Side::Upstream));
                }
            }
            pos += used;
            if self.assembly.is_some() && self.upstream.at_message_boundary() {
                self.finish_assembly(data, to_client);
            }
            self.push_local(to_client, data);
        }
        Ok(pos)
    }

    /// Whether messages may pass as a run ([`Core::message_run`]): nothing is held or waits to
    /// be put in at the next message boundary.
    fn passes_runs(&self) -> bool {
        self.assembly.is_none() && self.local.is_empty() && !self.drop_response_line
    }

    /// Passes on the messages at the start of `data` that no stage wants whole and the core
    /// need not act on before they go: untagged data (`* n FETCH`, `* LIST`, `* FLAGS`...) and
    /// status responses without a response code, and a tagged answer (unless it carries a
    /// capability list to filter), which ends the run and is returned for the core to
    /// complete its command. Returns how many bytes.
    ///
    /// The stages that subscribed to a message's kind see its first line, as they would frame
    /// by frame; a message some stage wants whole ends the run, its start already seen:
    /// `started` carries that to [`Core::response_start`]. With no stage listening to their
    /// kinds now, `* n ...` messages ([`message::is_numbered`]) pass unasked and unclassified.
    fn message_run<'a>(&mut self, data: &'a [u8]) -> (usize, Option<TaggedAnswer<'a>>) {
        let listened = self.listening.any().intersects(NUMBERED);
        let (stages, info, started) = (&self.stages, &self.info, &mut self.started);
        let listening = &self.listening;
        let mut tagged = None;
        let judge = |line| {
            let kinds = if message::is_numbered(line) {
                // (Asked about only when some stage listens to them.)
                message::numbered_kinds(line)
            } else {
                match message::kind(line) {
                    Kind::Tagged { tag, cond, code } if !capability_code(code) => {
                        tagged = Some(TaggedAnswer {
                            line,
                            tag,
                            cond,
                            code,
                        });
                        return RunStep::Last;
                    }
                    kind if acted_on(&kind) => return RunStep::Stop,
                    kind => kind.kinds(),
                }
            };
            let wanted = stages.response_start(info, listening, kinds, line);
            if wanted != 0 {
                *started = Some((kinds, wanted));
            }
            (wanted == 0).into()
        };
        let ran = self.upstream.pass_run(data, !listened, judge);
        (ran.len, tagged.filter(|_| ran.last))
    }

    /// A command's tagged answer, passed on: the command completes (the stages are told), and
    /// answers the proxy gave itself to commands after it may now follow.
    fn tagged_answer(&mut self, answer: TaggedAnswer<'_>) {
        let TaggedAnswer {
            line,
            tag,
            cond,
            code,
        } = answer;
        if self.client.awaiting_continuation() && self.tracker.newest_tag() == Some(tag) {
            self.client.literal_refused();
        }
        let status = match cond {
            Cond::Ok => Status::Ok,
            Cond::No => Status::No,
            _ => Status::Bad,
        };
        let read_only = code.is_some_and(|c| c.eq_ignore_ascii_case(b"READ-ONLY"));
        let done = self
            .tracker
            .on_tagged(tag, status, read_only, &mut self.info);
        if let Some(done) = done {
            // The classifier found no response code: none to take out of the line.
            let code = code.and_then(|_| response_code(line));
            self.completed(&done, Outcome::from_status(status), code, false);
        }
        self.release_local();
    }

    /// Follows the state from the first line of a server response; starts assembling it when a
    /// stage subscribed to its kind. Returns false when the line is not to be forwarded. The
    /// kinds it acts on beyond that are [`acted_on`]'s (runs leave them here).
    fn response_start(&mut self, line: &[u8]) -> bool {
        if let Some((kinds, wanted)) = self.started.take() {
            // Seen by the stages in the run that stopped before it.
            self.caps_line = false;
            self.assemble(kinds, wanted);
            return true;
        }
        // `* n EXISTS|EXPUNGE|FETCH|RECENT ...` outside a run (something was held): the core
        // itself never looks at these, so unless a stage subscribed to their kinds they pass on
        // a two-byte test, without being classified.
        if message::is_numbered(line) && !self.listening.any().intersects(NUMBERED) {
            self.caps_line = false;
            return true;
        }
        let kind = message::kind(line);
        // Only these carry a capability list the proxy may have to filter.
        self.caps_line = match kind {
            Kind::Capability => true,
            Kind::Tagged { code, .. } | Kind::Condition { code, .. } => capability_code(code),
            _ => false,
        };
        match kind {
            Kind::Continuation => {
                if self.tracker.take_idle_continuation() {
                    return true;
                }
                if self.client.awaiting_continuation() {
                    self.client.literal_accepted();
                    return true;
                }
                // Nothing waits for it: passing it on could make a client send bytes the
                // proxy would not expect.
                crate::telemetry::in_session(|| {
                    tracing::warn!("upstream sent a continuation request nothing waits for");
                });
                false
            }
            Kind::Tagged { tag, cond, code } => {
                self.tagged_answer(TaggedAnswer {
                    line,
                    tag,
                    cond,
                    code,
                });
                true
            }
            _ => {
                match kind {
                    Kind::Condition {
                        cond: Cond::Bye, ..
                    } => {
                        self.bye_seen = true;
                        self.tracker.on_bye();
                    }
                    Kind::Condition {
                        cond: Cond::Ok,
                        code: Some(_),
                    } => {
                        if let Some(RespCode::UidValidity(v)) = message::resp_code(line) {
                            self.tracker.on_uidvalidity(v);
                        }
                    }
                    Kind::Enabled => self.info.enabled.insert(enabled_list(line)),
                    _ => {}
                }
                let kinds = kind.kinds();
                let wanted = self
                    .stages
                    .response_start(&self.info, &self.listening, kinds, line);
                if wanted != 0 {
                    self.assemble(kinds, wanted);
                }
                true
            }
        }
    }

    /// Starts assembling a message of `kinds` for the `wanted` stages.
    fn assemble(&mut self, kinds: Kinds, wanted: u64) {
        // FETCH literals are message content: large ones stream, the rest of a message is held
        // until the stages have seen it.
        let keep = self.stages.keeps_fetch_bodies();
        let (keep_literal, max_bytes) = if kinds != Kinds::FETCH {
            (u64::MAX, self.max_assembled)
        } else if keep > 0 {
            // Kept within what a stage asked for, streamed all the same.
            (u64::MAX, self.max_assembled.max(keep))
        } else {
            (STREAM_LITERAL, self.max_assembled)
        };
        self.assembly = Some(Box::new(Assembly {
            kind: kinds,
            stages: wanted,
            assembler: Assembler::new(AssembleLimits {
                max_bytes,
                keep_literal,
            }),
            streamed: false,
            overflow: false,
        }));
    }

    /// A subscribed message is complete: the stages decide what the client gets.
    fn finish_assembly(&mut self, input: &[u8], to_client: &mut Pipe) {
        let Some(assembly) = self.assembly.take() else {
            return;
        };
        if assembly.overflow {
            if !assembly.streamed {
                let limit = self.max_assembled;
                crate::telemetry::in_session(|| {
                    tracing::warn!(
                        limit,
                        "dropped a server message too large to assemble for the stages"
                    );
                });
            }
            self.stages
                .observe(&Event::LimitRejected { kind: "assembled" });
            return;
        }
        let assembled = assembly.assembler.assembled();
        if assembly.streamed {
            // Already on its way to the client: the stages observe it.
            let msg = ResponseMessage {
                kind: assembly.kind,
                bytes: &[],
                streamed: true,
                assembled: assembled.as_ref(),
            };
            if self.stages.on_response(&self.info, &msg, assembly.stages)
                != ResponseDecision::Forward
            {
                crate::telemetry::in_session(|| {
                    tracing::warn!("a stage tried to change a streamed message; it was passed on");
                });
            }
            return;
        }
        let raw = assembly.assembler.bytes();
        let filtered = self.capability_line(raw);
        let msg = ResponseMessage {
            kind: assembly.kind,
            bytes: filtered.as_deref().unwrap_or(raw),
            streamed: false,
            assembled: assembled.as_ref().filter(|_| filtered.is_none()),
        };
        match self.stages.on_response(&self.info, &msg, assembly.stages) {
            ResponseDecision::Forward => to_client.push(input, msg.bytes),
            ResponseDecision::Drop => {}
            ResponseDecision::Rewrite(new) => to_client.push(input, &new),
        }
    }
}

impl Core {
    /// The session ends: a server message held for the stages, none of it passed on yet, is
    /// dropped, so the client's stream is at a message boundary (a BYE can still be said).
    pub fn drop_held_message(&mut self) {
        if self.assembly.as_ref().is_some_and(|a| !a.streamed) {
            self.assembly = None;
            self.upstream.reset();
        }
    }

    /// A line carrying a capability list as the client gets it: without what the proxy cannot
    /// relay, then as the stages that edit capability lists leave it; `None` when unchanged.
    fn capability_line(&self, line: &[u8]) -> Option<Vec<u8>> {
        let filtered = filter_capability_line(line);
        let current = filtered.as_deref().unwrap_or(line);
        match self.stages.capability_line(&self.info, current) {
            Some(edited) => Some(edited),
            None => filtered,
        }
    }
}

impl Assembly {
    /// Takes the next frame of the message (`input[pos..pos + used]`).
    fn take(
        &mut self,
        frame: &Frame<'_>,
        input: &[u8],
        pos: usize,
        used: usize,
        to_client: &mut Pipe,
    ) {
        if self.streamed {
            // In place where it can be: streaming bodies are not copied.
            to_client.forward(input, pos, used);
        }
        if self.overflow {
            return;
        }
        if self.assembler.push(frame).is_err() {
            self.overflow = true;
            if self.kind == Kinds::FETCH && !self.streamed {
                // Message content is never lost to the limit: pass on what was held, stream on.
                to_client.push(input, self.assembler.bytes());
                to_client.forward(input, pos, used);
                self.streamed = true;
            }
            return;
        }
        if !self.streamed
            && self.kind == Kinds::FETCH
            && self
                .assembler
                .literal_len()
                .is_some_and(|len| len > STREAM_LITERAL)
        {
            // A large body streams to the client as it arrives, kept or not.
            to_client.push(input, self.assembler.bytes());
            self.streamed = true;
        } else if !self.streamed && self.assembler.keeps_literal() == Some(false) {
            if self.kind == Kinds::FETCH {
                to_client.push(input, self.assembler.bytes());
                self.streamed = true;
            } else {
                // A literal too large to hold in a message a stage must see whole.
                self.overflow = true;
            }
        }
    }
}

/// A tagged answer to a command, as classified ([`message::kind`]).
struct TaggedAnswer<'a> {
    /// The whole line, with its ending.
    line: &'a [u8],
    /// The command's tag.
    tag: &'a [u8],
    /// OK, NO or BAD.
    cond: Cond,
    /// The response code's name, if there is one.
    code: Option<&'a [u8]>,
}

/// Whether [`Core::response_start`] does more with a message of this kind than show it to the
/// stages and pass it on (a tagged answer aside, which a run hands back): a continuation
/// request is matched to what waits for it, a capability list may be filtered, BYE ends the
/// session, a response code may carry UIDVALIDITY, ENABLED changes the session. A run leaves
/// these to it. Keep in step with `response_start`.
fn acted_on(kind: &Kind<'_>) -> bool {
    matches!(
        kind,
        Kind::Tagged { .. }
            | Kind::Continuation
            | Kind::Capability
            | Kind::Enabled
            | Kind::Condition { code: Some(_), .. }
            | Kind::Condition {
                cond: Cond::Bye,
                ..
            }
    )
}

/// Whether a status line's response code is `CAPABILITY` (its list may need filtering).
#[inline]
fn capability_code(code: Option<&[u8]>) -> bool {
    code.is_some_and(|c| c.eq_ignore_ascii_case(b"CAPABILITY"))
}

/// FETCH literals up to this size are held with their message for the stages; larger ones
/// stream to the client as they arrive (the stages see their extent, not their bytes).
const STREAM_LITERAL: u64 = 64 * 1024;

/// The response code of a status line (`tag OK [CODE args] text`): what is inside the brackets.
pub(crate) fn response_code(line: &[u8]) -> Option<&[u8]> {
    let text = response::after_tag(line);
    let text = text.get(text.iter().position(|&c| c == b' ')? + 1..)?;
    let inner = text.strip_prefix(b"[")?;
    let end = inner.iter().position(|&c| c == b']')?;
    Some(&inner[..end])
}

/// The extensions named in `* ENABLED ...`.
fn enabled_list(line: &[u8]) -> Enabled {
    let body = trim_eol(line);
    let mut enabled = Enabled::NONE;
    for cap in body.split(|&c| c == b' ').skip(2) {
        let is = |name: &[u8]| cap.eq_ignore_ascii_case(name);
        if is(b"CONDSTORE") {
            enabled.insert(Enabled::CONDSTORE);
        } else if is(b"QRESYNC") {
            enabled.insert(Enabled::QRESYNC | Enabled::CONDSTORE);
        } else if is(b"UTF8=ACCEPT") {
            enabled.insert(Enabled::UTF8_ACCEPT);
        } else if is(b"IMAP4rev2") {
            enabled.insert(Enabled::IMAP4REV2);
        }
    }
    enabled
}
