//! Commands collected whole for the stages that asked for them ([`Phases::whole_commands`]):
//! the proxy answers the client's synchronizing literals with its own `+`, keeps the command
//! (bounded), asks `on_command` with every argument in hand, and relays the command in one
//! piece with non-synchronizing literals (`LITERAL+`, which the upstream offered). Nothing of the
//! command reaches the upstream before the stages have decided.
//!
//! [`Phases::whole_commands`]: crate::phases::Phases::whole_commands

use super::{Core, Parked};
use crate::phases::{Command, Event, Verdict};
use crate::proto::framer::Line;
use crate::proto::response::Status;
use crate::session::pipe::Pipe;
use crate::session::state::InFlight;

/// Largest command collected whole (first line, literals and continuation lines).
const MAX_HELD: usize = 64 * 1024;

/// The proxy's continuation request for a literal of a command it collects.
const GO_AHEAD: &[u8] = b"+ Ready for literal data\r\n";

/// A command being collected.
pub(super) struct Held {
    /// Its entry for the tracker.
    entry: InFlight,
    /// The command so far, literals inline, synchronizing announcements made non-synchronizing.
    bytes: Vec<u8>,
    /// Where its first line ends in `bytes`.
    first_line: usize,
    /// Where its arguments start in `bytes`.
    args_at: usize,
    /// It grew past [`MAX_HELD`] or a line did not tokenise: it is refused when it ends.
    refused: Option<&'static str>,
}

impl Core {
    /// Starts collecting a command whose first line announced a literal.
    pub(super) fn hold(&mut self, entry: InFlight, line: &[u8], args_at: usize) {
        let mut held = Box::new(Held {
            entry,
            bytes: Vec::with_capacity(line.len() + 64),
            first_line: 0,
            args_at,
            refused: None,
        });
        push_line(&mut held.bytes, line, self.client.awaiting_continuation());
        held.first_line = held.bytes.len();
        self.held = Some(held);
        self.go_ahead();
    }

    /// A continuation line of the command being collected.
    pub(super) fn hold_line(&mut self, line: &Line<'_>) {
        let sync = self.client.awaiting_continuation();
        let Some(held) = self.held.as_mut() else {
            return;
        };
        if line.syntax.is_some() {
            // Nothing went upstream yet, so the command can simply be refused; the framer
            // ends the message at this line, as the server would.
            held.refused = Some("Invalid arguments.");
        } else if held.bytes.len() + line.bytes.len() > MAX_HELD {
            held.refused = Some("[TOOBIG] Command too long.");
        } else if held.refused.is_none() {
            push_line(&mut held.bytes, line.bytes, sync);
        }
        self.go_ahead();
    }

    /// Literal bytes of the command being collected.
    pub(super) fn hold_bytes(&mut self, bytes: &[u8]) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        if held.bytes.len() + bytes.len() > MAX_HELD {
            held.refused = Some("[TOOBIG] Command too long.");
        } else if held.refused.is_none() {
            held.bytes.extend_from_slice(bytes);
        }
    }

    /// The client waits for a `+` for the literal just announced: the proxy gives it.
    fn go_ahead(&mut self) {
        if self.client.awaiting_continuation() {
            self.client.literal_accepted();
            self.say(GO_AHEAD);
        }
    }

    /// The command is complete: the stages decide, or it parks until they have.
    pub(super) fn decide_held(&mut self, up: &mut Pipe) {
        let Some(held) = self.held.take() else {
            return;
        };
        let Held {
            entry,
            bytes,
            first_line,
            args_at,
            refused,
        } = *held;
        if let Some(text) = refused {
            if text.starts_with("[TOOBIG]") {
                self.stages.observe(&Event::LimitRejected { kind: "held" });
            }
            self.refuse(entry, Status::Bad, None, text);
            return;
        }
        let view = Command {
            tag: &entry.tag,
            name: entry.name,
            uid: entry.uid,
            line: bytes.get(..first_line).unwrap_or_default(),
            message: Some(&bytes),
        };
        self.info.in_flight = self.tracker.in_flight();
        match self.stages.on_command(&self.info, &view) {
            Verdict::Now(decision) => {
                let args = bytes.get(args_at..);
                self.decide(decision, entry, &bytes, args, None, up);
            }
            Verdict::Wait(decision) => {
                self.parked = Some(Box::new(Parked {
                    decision,
                    line: bytes,
                    args_at: Some(args_at),
                    entry,
                }));
            }
        }
    }
}

/// Appends a line of the command; a synchronizing literal announcement at its end becomes
/// non-synchronizing (`{n}` → `{n+}`), since the proxy relays the literal without waiting.
fn push_line(out: &mut Vec<u8>, line: &[u8], sync: bool) {
    let close = line.iter().rposition(|&c| c == b'}');
    match close {
        Some(at) if sync => {
            out.extend_from_slice(&line[..at]);
            out.extend_from_slice(b"+");
            out.extend_from_slice(&line[at..]);
        }
        _ => out.extend_from_slice(line),
    }
}
