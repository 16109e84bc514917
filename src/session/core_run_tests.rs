//! Server messages passed as runs (`Framer::pass_run`) while stages subscribe to their kinds:
//! each stage sees every first line once and in order, the messages it wants come whole, and
//! the client gets the same bytes however the stream is cut.

use std::sync::{Arc, Mutex};

use super::Harness;
use crate::phases::{Kinds, Phases, ResponseDecision, ResponseMessage, SessionInfo};

/// Subscribes to the kinds it is made with, records every start it is shown, wants the
/// messages that mention `WANT` whole, and drops those that also mention `DROP`; records the
/// tags of the commands it is told completed.
struct Picky {
    /// What it subscribes to.
    kinds: Kinds,
    /// First lines shown to `on_response_start`, in order.
    starts: Mutex<Vec<String>>,
    /// Whole messages shown to `on_response`.
    whole: Mutex<Vec<String>>,
    /// Tags of completed commands, in order.
    done: Mutex<Vec<String>>,
}

impl Picky {
    fn new(kinds: Kinds) -> Arc<Picky> {
        Arc::new(Picky {
            kinds,
            starts: Mutex::default(),
            whole: Mutex::default(),
            done: Mutex::default(),
        })
    }
}

impl Phases for Picky {
    fn name(&self) -> &'static str {
        "picky"
    }
    fn subscriptions(&self) -> Kinds {
        self.kinds
    }
    fn on_response_start(&self, _: &SessionInfo, _: Kinds, first_line: &[u8]) -> bool {
        let line = String::from_utf8_lossy(first_line).into_owned();
        self.starts.lock().unwrap().push(line);
        first_line.windows(4).any(|w| w == b"WANT")
    }
    fn on_response(&self, _: &SessionInfo, msg: &ResponseMessage<'_>) -> ResponseDecision {
        let text = String::from_utf8_lossy(msg.bytes).into_owned();
        let drop = text.contains("DROP");
        self.whole.lock().unwrap().push(text);
        if drop {
            ResponseDecision::Drop
        } else {
            ResponseDecision::Forward
        }
    }
    fn on_tagged(&self, _: &SessionInfo, done: &crate::phases::Completion<'_>) {
        let tag = String::from_utf8_lossy(done.tag).into_owned();
        self.done.lock().unwrap().push(tag);
    }
}

#[test]
fn subscribed_stages_see_every_start_once_and_wanted_messages_whole() {
    let script: &[u8] = b"* 1 EXISTS\r\n* 2 FETCH (FLAGS ())\r\n\
* 3 FETCH (WANT BODY[] {3}\r\nabc)\r\n* 4 FETCH (BODY[] {2}\r\nxy FLAGS ())\r\n* 2 EXPUNGE\r\n\
* 5 FETCH (WANT DROP)\r\n* 6 FETCH (UID 6)\r\na OK done\r\n";
    let starts = [
        "* 2 FETCH (FLAGS ())\r\n",
        "* 3 FETCH (WANT BODY[] {3}\r\n",
        "* 4 FETCH (BODY[] {2}\r\n",
        "* 2 EXPUNGE\r\n",
        "* 5 FETCH (WANT DROP)\r\n",
        "* 6 FETCH (UID 6)\r\n",
    ];
    let whole = [
        "* 3 FETCH (WANT BODY[] {3}\r\nabc)\r\n",
        "* 5 FETCH (WANT DROP)\r\n",
    ];
    let down = String::from_utf8_lossy(script).replace("* 5 FETCH (WANT DROP)\r\n", "");
    for cut in 0..=script.len() {
        for second in [cut, (cut + 7).min(script.len())] {
            let picky = Picky::new(Kinds::FETCH | Kinds::EXPUNGE);
            let mut h = Harness::new(vec![picky.clone()]);
            h.client(b"a FETCH 1:* (FLAGS)\r\n").unwrap();
            h.server(&script[..cut]).unwrap();
            h.server(&script[cut..second]).unwrap();
            h.server(&script[second..]).unwrap();
            assert_eq!(h.sent_down(), down, "cuts at {cut}, {second}");
            assert_eq!(
                *picky.starts.lock().unwrap(),
                starts,
                "cuts at {cut}, {second}"
            );
            assert_eq!(
                *picky.whole.lock().unwrap(),
                whole,
                "cuts at {cut}, {second}"
            );
        }
    }
}

/// Subscribes to FETCH and EXPUNGE but listens only between a command `x LISTEN` and the
/// completion of a command `x QUIET`, recording every start it is shown.
#[derive(Default)]
struct Narrow {
    /// Whether it listens now.
    on: Mutex<bool>,
    /// First lines shown to `on_response_start`, in order.
    starts: Mutex<Vec<String>>,
}

impl Phases for Narrow {
    fn name(&self) -> &'static str {
        "narrow"
    }
    fn subscriptions(&self) -> Kinds {
        Kinds::FETCH | Kinds::EXPUNGE
    }
    fn narrows_listening(&self) -> bool {
        true
    }
    fn listening(&self, _: &SessionInfo) -> Kinds {
        if *self.on.lock().unwrap() {
            // More than it subscribed to: the rest is ignored.
            Kinds::ALL
        } else {
            Kinds::NONE
        }
    }
    fn on_command(
        &self,
        _: &SessionInfo,
        cmd: &crate::phases::Command<'_>,
    ) -> crate::phases::Verdict<crate::phases::CommandDecision> {
        if cmd.line.starts_with(b"x LISTEN") {
            *self.on.lock().unwrap() = true;
        }
        crate::phases::Verdict::Now(crate::phases::CommandDecision::Forward)
    }
    fn on_tagged(&self, _: &SessionInfo, done: &crate::phases::Completion<'_>) {
        if done.tag == b"q" {
            *self.on.lock().unwrap() = false;
        }
    }
    fn on_response_start(&self, _: &SessionInfo, _: Kinds, first_line: &[u8]) -> bool {
        let line = String::from_utf8_lossy(first_line).into_owned();
        self.starts.lock().unwrap().push(line);
        false
    }
}

#[test]
fn a_narrowing_stage_is_shown_only_what_it_listens_to_between_commands_and_completions() {
    let script: &[u8] = b"* 1 FETCH (FLAGS ())\r\n* 1 EXPUNGE\r\na OK done\r\n";
    let narrow = Arc::new(Narrow::default());
    let mut h = Harness::new(vec![narrow.clone()]);
    // Not listening from the start: passes unseen.
    h.client(b"a NOOP\r\n").unwrap();
    h.server(script).unwrap();
    assert!(narrow.starts.lock().unwrap().is_empty());
    // Listening from the command on, through the QUIET command's answers, until its completion.
    h.client(b"x LISTEN\r\n").unwrap();
    h.server(b"* 2 FETCH (FLAGS ())\r\n").unwrap();
    h.client(b"q NOOP\r\n").unwrap();
    h.server(b"* 3 EXPUNGE\r\n* 4 EXISTS\r\nx OK done\r\n* 5 FETCH (UID 5)\r\nq OK done\r\n")
        .unwrap();
    h.server(b"* 6 FETCH (FLAGS ())\r\n").unwrap();
    assert_eq!(
        *narrow.starts.lock().unwrap(),
        [
            "* 2 FETCH (FLAGS ())\r\n",
            "* 3 EXPUNGE\r\n",
            "* 5 FETCH (UID 5)\r\n"
        ]
    );
    let sent = h.sent_down();
    assert!(sent.ends_with("* 5 FETCH (UID 5)\r\nq OK done\r\n* 6 FETCH (FLAGS ())\r\n"));
}

/// Narrows, and says only SELECT changes what it listens to; counts how often it is asked.
#[derive(Default)]
struct Counted {
    /// `listening` calls.
    asked: Mutex<usize>,
}

impl Phases for Counted {
    fn name(&self) -> &'static str {
        "counted"
    }
    fn subscriptions(&self) -> Kinds {
        Kinds::FETCH
    }
    fn narrows_listening(&self) -> bool {
        true
    }
    fn listening_changes_with(&self) -> crate::phases::CommandSet {
        crate::phases::CommandSet::of(&[crate::proto::command::CommandName::Select])
    }
    fn listening(&self, _: &SessionInfo) -> Kinds {
        *self.asked.lock().unwrap() += 1;
        Kinds::FETCH
    }
}

#[test]
fn a_narrowing_stage_is_asked_again_only_after_the_commands_it_names() {
    let counted = Arc::new(Counted::default());
    let mut h = Harness::new(vec![counted.clone()]);
    assert_eq!(*counted.asked.lock().unwrap(), 1, "when the relay starts");
    h.client(b"a NOOP\r\nb FETCH 1 (FLAGS)\r\n").unwrap();
    h.server(b"a OK done\r\nb OK done\r\n").unwrap();
    assert_eq!(*counted.asked.lock().unwrap(), 1);
    h.client(b"c SELECT INBOX\r\n").unwrap();
    assert_eq!(*counted.asked.lock().unwrap(), 2, "after its chain");
    h.server(b"* 1 EXISTS\r\nc OK done\r\n").unwrap();
    assert_eq!(*counted.asked.lock().unwrap(), 3, "after its completion");
}

#[test]
fn untagged_lines_and_tagged_answers_in_runs_are_seen_as_frame_by_frame() {
    // Untagged data of a subscribed kind (LIST) and not (FLAGS, a status line without a
    // code), a status line with a code, tagged answers between them, a literal in a LIST.
    let script: &[u8] = b"* LIST () \"/\" INBOX\r\n* LIST () \"/\" WANT\r\n* FLAGS (\\Seen)\r\n\
* OK still here\r\na OK listed\r\n* OK [UIDNEXT 7] next\r\n* LIST () \"/\" {4}\r\nWANT\r\n\
* 1 FETCH (FLAGS ())\r\nb OK [READ-WRITE] selected\r\n* 2 FETCH (WANT)\r\nc NO nope\r\n";
    let starts = [
        "* LIST () \"/\" INBOX\r\n",
        "* LIST () \"/\" WANT\r\n",
        "* LIST () \"/\" {4}\r\n",
        "* 1 FETCH (FLAGS ())\r\n",
        "* 2 FETCH (WANT)\r\n",
    ];
    let whole = ["* LIST () \"/\" WANT\r\n", "* 2 FETCH (WANT)\r\n"];
    for cut in 0..=script.len() {
        for second in [cut, (cut + 11).min(script.len())] {
            let lister = Picky::new(Kinds::LIST | Kinds::FETCH);
            let mut h = Harness::new(vec![lister.clone()]);
            h.client(b"a LIST \"\" *\r\nb SELECT INBOX\r\nc FETCH 1:* (FLAGS)\r\n")
                .unwrap();
            h.server(&script[..cut]).unwrap();
            h.server(&script[cut..second]).unwrap();
            h.server(&script[second..]).unwrap();
            let at = format!("cuts at {cut}, {second}");
            assert_eq!(h.sent_down(), String::from_utf8_lossy(script), "{at}");
            assert_eq!(*lister.starts.lock().unwrap(), starts, "{at}");
            assert_eq!(*lister.whole.lock().unwrap(), whole, "{at}");
            assert_eq!(*lister.done.lock().unwrap(), ["a", "b", "c"], "{at}");
        }
    }
}

/// Shown SELECT and STORE only; records the commands it is shown start and complete, and the
/// session's command count at each start.
#[derive(Default)]
struct Selective {
    /// Tags and command counts shown to `on_command`, in order.
    started: Mutex<Vec<(String, u64)>>,
    /// Tags shown to `on_tagged`, in order.
    done: Mutex<Vec<String>>,
}

impl Phases for Selective {
    fn name(&self) -> &'static str {
        "selective"
    }
    fn commands(&self) -> crate::phases::CommandSet {
        use crate::proto::command::CommandName;
        crate::phases::CommandSet::of(&[CommandName::Select, CommandName::Store])
    }
    fn on_command(
        &self,
        info: &SessionInfo,
        cmd: &crate::phases::Command<'_>,
    ) -> crate::phases::Verdict<crate::phases::CommandDecision> {
        let tag = String::from_utf8_lossy(cmd.tag).into_owned();
        self.started.lock().unwrap().push((tag, info.commands));
        crate::phases::Verdict::Now(crate::phases::CommandDecision::Forward)
    }
    fn on_tagged(&self, _: &SessionInfo, done: &crate::phases::Completion<'_>) {
        let tag = String::from_utf8_lossy(done.tag).into_owned();
        self.done.lock().unwrap().push(tag);
    }
}

/// Refuses NOOP (shown every command).
struct NoNoop;

impl Phases for NoNoop {
    fn name(&self) -> &'static str {
        "no-noop"
    }
    fn on_command(
        &self,
        _: &SessionInfo,
        cmd: &crate::phases::Command<'_>,
    ) -> crate::phases::Verdict<crate::phases::CommandDecision> {
        crate::phases::Verdict::Now(if cmd.name == crate::proto::command::CommandName::Noop {
            crate::phases::CommandDecision::Refuse {
                status: crate::proto::response::Status::No,
                code: None,
                text: "no NOOP".into(),
            }
        } else {
            crate::phases::CommandDecision::Forward
        })
    }
}

#[test]
fn a_stage_is_shown_only_the_commands_it_asks_for_and_the_chain_goes_on_past_it() {
    let selective = Arc::new(Selective::default());
    let mut h = Harness::new(vec![selective.clone(), Arc::new(NoNoop)]);
    // Not shown to the first stage: the chain goes on to the second, which refuses it.
    h.client(b"a NOOP\r\nb STORE 1 +FLAGS (x)\r\nc CHECK\r\n")
        .unwrap();
    h.server(b"b OK done\r\nc OK done\r\n").unwrap();
    h.client(b"d SELECT INBOX\r\n").unwrap();
    h.server(b"d OK done\r\n").unwrap();
    // The count says what it was not shown: `a` before `b`, `c` before `d`.
    assert_eq!(
        *selective.started.lock().unwrap(),
        [("b".to_owned(), 2), ("d".to_owned(), 4)]
    );
    assert_eq!(*selective.done.lock().unwrap(), ["b", "d"]);
    assert_eq!(
        h.sent_up(),
        "b STORE 1 +FLAGS (x)\r\nc CHECK\r\nd SELECT INBOX\r\n"
    );
    assert_eq!(
        h.sent_down(),
        "a NO no NOOP\r\nb OK done\r\nc OK done\r\nd OK done\r\n"
    );
}

#[test]
fn a_command_no_stage_is_shown_is_relayed_as_with_no_stages() {
    let selective = Arc::new(Selective::default());
    let mut h = Harness::new(vec![selective.clone()]);
    h.client(b"a NOOP\r\n").unwrap();
    h.server(b"* 1 EXISTS\r\na OK done\r\n").unwrap();
    assert!(selective.started.lock().unwrap().is_empty());
    assert!(selective.done.lock().unwrap().is_empty());
    assert_eq!(h.sent_up(), "a NOOP\r\n");
    assert_eq!(h.sent_down(), "* 1 EXISTS\r\na OK done\r\n");
}
