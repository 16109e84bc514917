//! Commands collected whole for a stage: the proxy's own `+`, refusals before anything reaches
//! the server, LITERAL+ relaying, limits, split at every byte.

use std::sync::Arc;

use super::Harness;
use crate::phases::{Command, CommandDecision, Enabled, Phases, SessionInfo, Verdict};
use crate::proto::command::CommandName;
use crate::proto::response::Status;

/// Wants SELECT and DELETE whole; refuses the mailbox `Secret` however it is sent.
struct Guard;

impl Phases for Guard {
    fn name(&self) -> &'static str {
        "guard"
    }
    fn whole_commands(&self) -> crate::phases::CommandSet {
        crate::phases::CommandSet::of(&[CommandName::Select, CommandName::Delete])
    }
    fn on_command(&self, _: &SessionInfo, cmd: &Command<'_>) -> Verdict<CommandDecision> {
        if !matches!(cmd.name, CommandName::Select | CommandName::Delete) {
            return Verdict::Now(CommandDecision::Forward);
        }
        let whole = cmd.message.unwrap_or(cmd.line);
        let args = crate::proto::command::parse_command_line(cmd.line).map(|c| c.args);
        let at = args.map(|a| a.as_ptr() as usize - cmd.line.as_ptr() as usize);
        let name = at
            .and_then(|at| whole.get(at..))
            .and_then(|rest| crate::proto::args::astring(rest).ok())
            .map(|(_, name)| name);
        match name {
            Some(name) if name != b"Secret" => Verdict::Now(CommandDecision::Forward),
            // Unreadable or hidden: fail closed.
            _ => Verdict::Now(CommandDecision::Refuse {
                status: Status::No,
                code: Some("NONEXISTENT".into()),
                text: "No such mailbox.".into(),
            }),
        }
    }
}

#[test]
fn whole_commands_are_collected_before_the_stage_decides() {
    let mut h = Harness::new(vec![Arc::new(Guard)]);
    h.client(b"a SELECT {6}\r\n").unwrap();
    assert_eq!(
        h.sent_down(),
        "+ Ready for literal data\r\n",
        "the proxy's own +"
    );
    assert_eq!(h.sent_up(), "", "nothing before the stage has decided");
    h.client(b"Secret\r\n").unwrap();
    assert_eq!(h.sent_up(), "");
    assert!(
        h.sent_down()
            .ends_with("a NO [NONEXISTENT] No such mailbox.\r\n")
    );
    // Non-synchronizing: no + from anyone; refused all the same.
    h.client(b"b DELETE {6+}\r\nSecret\r\n").unwrap();
    assert_eq!(h.sent_up(), "");
    assert!(
        h.sent_down()
            .ends_with("b NO [NONEXISTENT] No such mailbox.\r\n")
    );
    // Allowed: relayed in one piece with a non-synchronizing literal.
    h.client(b"c SELECT {5}\r\n").unwrap();
    h.client(b"INBOX (CONDSTORE)\r\n").unwrap();
    assert_eq!(h.sent_up(), "c SELECT {5+}\r\nINBOX (CONDSTORE)\r\n");
    h.server(b"* OK [UIDVALIDITY 3] x\r\nc OK [READ-WRITE] done\r\n")
        .unwrap();
    let sel = h.core.info.selected.clone().unwrap();
    assert_eq!(
        (sel.name.as_slice(), sel.uidvalidity),
        (&b"INBOX"[..], Some(3))
    );
    assert!(h.core.info.enabled.contains(Enabled::CONDSTORE));
    // Commands the stage did not ask for stream as before.
    h.client(b"d FETCH 1 BODY[HEADER.FIELDS ({4}\r\n").unwrap();
    assert!(
        h.sent_up()
            .ends_with("d FETCH 1 BODY[HEADER.FIELDS ({4}\r\n")
    );
}

#[test]
fn whole_commands_split_at_every_byte() {
    let stream: &[u8] =
        b"a SELECT {6}\r\nSecret\r\nb SELECT \"x\" {3+}\r\nabc\r\nc DELETE {5}\r\nInbox\r\nd NOOP\r\n";
    let run = |chunks: &[&[u8]]| {
        let mut h = Harness::new(vec![Arc::new(Guard)]);
        for c in chunks {
            h.client(c).unwrap();
        }
        (h.sent_up(), h.sent_down())
    };
    let whole = run(&[stream]);
    assert_eq!(
        whole.0,
        "b SELECT \"x\" {3+}\r\nabc\r\nc DELETE {5+}\r\nInbox\r\nd NOOP\r\n"
    );
    for cut in 0..=stream.len() {
        assert_eq!(
            run(&[&stream[..cut], &stream[cut..]]),
            whole,
            "cut at {cut}"
        );
    }
}

#[test]
fn a_whole_command_that_is_too_long_or_invalid_is_refused_without_reaching_the_server() {
    let mut h = Harness::new(vec![Arc::new(Guard)]);
    let big = "x".repeat(70 * 1024);
    h.client(format!("a SELECT {{{}+}}\r\n{big}\r\nb NOOP\r\n", big.len()).as_bytes())
        .unwrap();
    assert_eq!(h.sent_up(), "b NOOP\r\n");
    assert!(
        h.sent_down()
            .contains("a BAD [TOOBIG] Command too long.\r\n")
    );
    h.server(b"b OK done\r\n").unwrap();
    h.client(b"c SELECT {1+}\r\nx \"unterminated\r\nd NOOP\r\n")
        .unwrap();
    assert!(h.sent_down().contains("c BAD Invalid arguments.\r\n"));
    assert_eq!(h.sent_up(), "b NOOP\r\nd NOOP\r\n");
}
