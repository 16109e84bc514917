//! Drives the sans-I/O session core with two interleaved directions (client bytes and server
//! bytes in arbitrary alternation), with a stage that refuses some commands, collects some whole
//! and assembles LIST and STATUS responses. Must never panic, and what reaches the upstream must
//! not depend on how each direction's bytes were cut into reads (the order between the
//! directions is kept).
#![no_main]

use std::sync::Arc;

use imapgate::phases::{
    Command, CommandDecision, CommandSet, Kinds, Phases, ResponseDecision, ResponseMessage,
    SessionInfo, Stages, Verdict,
};
use imapgate::proto::command::CommandName;
use imapgate::proto::framer::{Direction, Framer, Limits};
use imapgate::proto::response::Status;
use imapgate::session::ListenerKind;
use imapgate::session::core::Core;
use imapgate::session::pipe::Pipe;
use libfuzzer_sys::fuzz_target;

struct Stage;

impl Phases for Stage {
    fn name(&self) -> &'static str {
        "fuzz"
    }
    fn on_command(&self, _: &SessionInfo, cmd: &Command<'_>) -> Verdict<CommandDecision> {
        if cmd.tag.first() == Some(&b'r') {
            return Verdict::Now(CommandDecision::Refuse {
                status: Status::No,
                code: None,
                text: "no".into(),
            });
        }
        Verdict::Now(CommandDecision::Forward)
    }
    fn whole_commands(&self) -> CommandSet {
        CommandSet::of(&[
            CommandName::Select,
            CommandName::Delete,
            CommandName::Status,
        ])
    }
    fn subscriptions(&self) -> Kinds {
        Kinds::LIST | Kinds::STATUS
    }
    fn on_response(&self, _: &SessionInfo, msg: &ResponseMessage<'_>) -> ResponseDecision {
        if msg.bytes.len() % 3 == 0 {
            ResponseDecision::Drop
        } else {
            ResponseDecision::Forward
        }
    }
}

/// Runs the ops; `fine` cuts every client chunk into single bytes. Returns what went to the upstream
/// and to the client, and whether the core reported an error (the session would end there).
fn run(ops: &[(bool, &[u8])], fine: bool) -> (Vec<u8>, Vec<u8>, bool) {
    let limits = Limits {
        max_line: 200,
        max_literal: 500,
    };
    let info = SessionInfo::new(1, "127.0.0.1:1".parse().unwrap(), ListenerKind::Tls);
    let mut core = Core::new(
        Framer::new(Direction::ClientToServer, limits),
        Framer::new(Direction::ServerToClient, limits),
        info,
        Stages::new(vec![Arc::new(Stage)]),
        1000,
        true,
    );
    let (mut up, mut down) = (Pipe::new(Vec::new()), Pipe::new(Vec::new()));
    let (mut cpend, mut spend) = (Vec::new(), Vec::new());
    for &(from_client, chunk) in ops {
        // Server chunks stay whole: a `+` releases what the client sent at the same point.
        let pieces: Vec<&[u8]> = if fine && from_client {
            chunk.chunks(1).collect()
        } else {
            vec![chunk]
        };
        for piece in pieces {
            let pend = if from_client { &mut cpend } else { &mut spend };
            pend.extend_from_slice(piece);
            let result = if from_client {
                core.client_bytes(&cpend, &mut up)
            } else {
                core.upstream_bytes(&spend, &mut down)
            };
            let Ok(used) = result else {
                return (up.output().to_vec(), down.output().to_vec(), true);
            };
            let pend = if from_client { &mut cpend } else { &mut spend };
            pend.drain(..used);
            core.push_local(&mut down, &[]);
            // A `+` may have released client bytes.
            if !from_client && !cpend.is_empty() && core.takes_client_bytes() {
                match core.client_bytes(&cpend, &mut up) {
                    Ok(used) => {
                        cpend.drain(..used);
                    }
                    Err(_) => return (up.output().to_vec(), down.output().to_vec(), true),
                }
                core.push_local(&mut down, &[]);
            }
        }
    }
    core.end(false);
    // A long server line is streamed in parts whose size depends on the reads; what is still
    // unframed is compared with the output.
    let mut to_up = up.output().to_vec();
    to_up.extend_from_slice(&cpend);
    (to_up, down.output().to_vec(), false)
}

fuzz_target!(|data: &[u8]| {
    // Ops: a header byte (bit 7: direction, low bits: length) then that many bytes.
    let mut ops = Vec::new();
    let mut rest = data;
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head & 0x3f).min(tail.len());
        ops.push((head & 0x80 == 0, &tail[..len]));
        rest = &tail[len..];
    }
    let coarse = run(&ops, false);
    let fine = run(&ops, true);
    // An error may surface at a different byte; compare only runs that completed.
    if !coarse.2 && !fine.2 {
        // What reaches the upstream is what matters for classification; the client side may
        // legitimately differ in where the proxy's own answers fall between server lines.
        assert_eq!(coarse.0, fine.0);
    }
});
