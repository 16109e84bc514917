//! The session core driven by byte slices: stages, parking, continuation matching, identity.

use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};

use super::*;
use crate::phases::{
    Command, CommandDecision, Completion, Kinds, Phases, ResponseDecision, ResponseMessage,
    Selected, SessionInfo, Stages, Verdict,
};
use crate::proto::command::CommandName;
use crate::proto::framer::{Direction, Framer, Limits};
use crate::session::ListenerKind;
use crate::session::pipe::Pipe;

/// Feeds a core from both sides and collects what it sends each way.
pub(crate) struct Harness {
    pub core: Core,
    pub up: Pipe,
    pub down: Pipe,
    client_pending: Vec<u8>,
    upstream_pending: Vec<u8>,
}

impl Harness {
    pub fn new(stages: Vec<Arc<dyn Phases>>) -> Harness {
        let info = SessionInfo::new(1, "127.0.0.1:1".parse().unwrap(), ListenerKind::Tls);
        let core = Core::new(
            Framer::new(Direction::ClientToServer, Limits::default()),
            Framer::new(Direction::ServerToClient, Limits::default()),
            info,
            Stages::new(stages),
            64 * 1024,
            true,
        );
        Harness {
            core,
            up: Pipe::new(Vec::new()),
            down: Pipe::new(Vec::new()),
            client_pending: Vec::new(),
            upstream_pending: Vec::new(),
        }
    }

    pub fn client(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.client_pending.extend_from_slice(bytes);
        self.run_client()
    }

    fn run_client(&mut self) -> Result<(), SessionError> {
        if !self.core.takes_client_bytes() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.client_pending);
        let used = self.core.client_bytes(&pending, &mut self.up)?;
        self.client_pending = pending[used..].to_vec();
        self.core.push_local(&mut self.down, &[]);
        Ok(())
    }

    pub fn server(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.upstream_pending.extend_from_slice(bytes);
        let pending = std::mem::take(&mut self.upstream_pending);
        let used = self.core.upstream_bytes(&pending, &mut self.down)?;
        self.upstream_pending = pending[used..].to_vec();
        self.core.push_local(&mut self.down, &[]);
        // A `+` may have released client bytes that were waiting.
        self.run_client()
    }

    /// Polls a parked decision once; frames what waited behind it.
    pub fn poll(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let ready = self.core.poll_parked(&mut cx, &mut self.up).is_ready();
        if ready {
            self.core.push_local(&mut self.down, &[]);
            self.run_client().unwrap();
            self.core.push_local(&mut self.down, &[]);
        }
        ready
    }

    pub fn sent_up(&self) -> String {
        String::from_utf8_lossy(self.up.output()).into_owned()
    }

    pub fn sent_down(&self) -> String {
        String::from_utf8_lossy(self.down.output()).into_owned()
    }
}

/// A stage that records what it saw and refuses `DELETE`.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<String>>,
}

impl Phases for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn on_command(&self, _: &SessionInfo, cmd: &Command<'_>) -> Verdict<CommandDecision> {
        self.seen
            .lock()
            .unwrap()
            .push(format!("command {}", cmd.name.label()));
        if cmd
            .line
            .windows(6)
            .any(|w| w.eq_ignore_ascii_case(b"DELETE"))
        {
            return Verdict::Now(CommandDecision::Refuse {
                status: Status::No,
                code: Some("NOPERM".into()),
                text: "Read-only.".into(),
            });
        }
        Verdict::Now(CommandDecision::Forward)
    }
    fn on_tagged(&self, _: &SessionInfo, done: &Completion<'_>) {
        self.seen.lock().unwrap().push(format!(
            "tagged {} {} {}{}",
            String::from_utf8_lossy(done.tag),
            done.name.label(),
            done.outcome.label(),
            if done.local { " local" } else { "" }
        ));
    }
}

#[test]
fn forwards_and_completes_commands() {
    let rec = Arc::new(Recorder::default());
    let mut h = Harness::new(vec![rec.clone()]);
    h.client(b"a NOOP\r\nb SELECT INBOX\r\n").unwrap();
    assert_eq!(h.sent_up(), "a NOOP\r\nb SELECT INBOX\r\n");
    h.server(b"a OK done\r\nb NO [NONEXISTENT] no\r\n").unwrap();
    assert_eq!(h.sent_down(), "a OK done\r\nb NO [NONEXISTENT] no\r\n");
    let seen = rec.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "command noop",
            "command select",
            "tagged a noop ok",
            "tagged b select no"
        ]
    );
}

#[test]
fn refusals_wait_for_earlier_answers_and_skip_literals() {
    let rec = Arc::new(Recorder::default());
    let mut h = Harness::new(vec![rec.clone()]);
    h.client(b"a FETCH 1 FLAGS\r\nb DELETE {3+}\r\nabc\r\nc NOOP\r\n")
        .unwrap();
    // b is refused: neither its line nor its literal goes upstream; c does.
    assert_eq!(h.sent_up(), "a FETCH 1 FLAGS\r\nc NOOP\r\n");
    assert_eq!(h.sent_down(), "", "b's answer waits for a's");
    h.server(b"* 1 FETCH (FLAGS ())\r\na OK done\r\nc OK done\r\n")
        .unwrap();
    assert_eq!(
        h.sent_down(),
        "* 1 FETCH (FLAGS ())\r\na OK done\r\nb NO [NOPERM] Read-only.\r\nc OK done\r\n"
    );
    assert!(
        rec.seen
            .lock()
            .unwrap()
            .contains(&"tagged b other no local".to_string())
            || rec
                .seen
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.starts_with("tagged b") && s.ends_with("no local"))
    );
    // A refused synchronizing literal: the client never sends it; the next line is a command.
    h.client(b"d DELETE {3}\r\ne NOOP\r\n").unwrap();
    assert!(
        h.sent_up().ends_with("c NOOP\r\ne NOOP\r\n"),
        "{}",
        h.sent_up()
    );
}

#[test]
fn the_proxys_own_rules_and_invalid_lines() {
    let mut h = Harness::new(Vec::new());
    h.client(b"z COMPRESS DEFLATE\r\n(garbage\r\nDONE\r\n")
        .unwrap();
    assert_eq!(h.sent_up(), "");
    assert_eq!(
        h.sent_down(),
        "z BAD COMPRESS is not available through this proxy.\r\n* BAD Invalid command line.\r\n* BAD Invalid command line.\r\n"
    );
}

/// A stage whose decision arrives through a channel.
struct Slow {
    rx: Mutex<Option<tokio::sync::oneshot::Receiver<CommandDecision>>>,
}

impl Phases for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn on_command(&self, _: &SessionInfo, cmd: &Command<'_>) -> Verdict<CommandDecision> {
        if cmd.name != CommandName::Select {
            return Verdict::Now(CommandDecision::Forward);
        }
        let rx = self.rx.lock().unwrap().take().unwrap();
        Verdict::Wait(Box::pin(async move { rx.await.unwrap_or_default() }))
    }
}

#[test]
fn a_waiting_command_parks_and_holds_back_the_rest() {
    for decision in [
        CommandDecision::Forward,
        CommandDecision::Refuse {
            status: Status::No,
            code: Some("NONEXISTENT".into()),
            text: "Hidden.".into(),
        },
    ] {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let slow = Arc::new(Slow {
            rx: Mutex::new(Some(rx)),
        });
        let rec = Arc::new(Recorder::default());
        let mut h = Harness::new(vec![slow, rec.clone()]);
        h.client(b"a NOOP\r\nb SELECT Secret\r\nc NOOP\r\n")
            .unwrap();
        assert_eq!(h.sent_up(), "a NOOP\r\n");
        assert!(h.core.parked());
        assert!(!h.poll());
        // The other direction keeps moving.
        h.server(b"* 3 EXISTS\r\na OK done\r\n").unwrap();
        assert_eq!(h.sent_down(), "* 3 EXISTS\r\na OK done\r\n");
        let forwarded = decision == CommandDecision::Forward;
        tx.send(decision).unwrap();
        assert!(h.poll());
        assert!(!h.core.parked());
        if forwarded {
            assert_eq!(h.sent_up(), "a NOOP\r\nb SELECT Secret\r\nc NOOP\r\n");
            // The later stage was asked after the wait.
            assert!(rec.seen.lock().unwrap().contains(&"command select".into()));
        } else {
            assert_eq!(h.sent_up(), "a NOOP\r\nc NOOP\r\n");
            assert!(h.sent_down().ends_with("b NO [NONEXISTENT] Hidden.\r\n"));
        }
    }
}

#[test]
fn during_idle_lines_are_raw_and_the_idles_continuation_is_its_own() {
    let mut h = Harness::new(Vec::new());
    // The server reads any line during IDLE as "DONE or not": `{3}` announces nothing there, and
    // the next bytes are a new command for it, so for the proxy too.
    h.client(b"a IDLE\r\nb APPEND x {3}\r\nc NOOP\r\n").unwrap();
    assert_eq!(h.sent_up(), "a IDLE\r\nDONE\r\nc NOOP\r\n");
    h.server(b"+ idling\r\n").unwrap();
    assert_eq!(h.sent_down(), "+ idling\r\n");
    assert!(h.core.takes_client_bytes());
    h.server(b"a OK Idle completed\r\nc OK done\r\n").unwrap();
    h.client(b"d APPEND x {3}\r\n").unwrap();
    assert!(!h.core.takes_client_bytes(), "d waits for its +");
    h.client(b"xyz\r\n").unwrap();
    assert!(!h.sent_up().contains("xyz"));
    h.server(b"+ go\r\n").unwrap();
    assert!(
        h.sent_up().ends_with("d APPEND x {3}\r\nxyz\r\n"),
        "{}",
        h.sent_up()
    );
}

#[test]
fn a_stray_continuation_is_dropped_and_a_literal_gets_its_own() {
    let mut h = Harness::new(Vec::new());
    h.server(b"+ surprise\r\n").unwrap();
    assert_eq!(h.sent_down(), "");
    h.client(b"a LOGOUT\r\n").unwrap();
    h.client(b"b APPEND x {3}\r\nabc\r\n").unwrap();
    assert_eq!(h.sent_up(), "a LOGOUT\r\nb APPEND x {3}\r\n");
    h.server(b"+ go\r\n").unwrap();
    assert_eq!(h.sent_up(), "a LOGOUT\r\nb APPEND x {3}\r\nabc\r\n");
    assert_eq!(h.sent_down(), "+ go\r\n");
}

#[test]
fn identity_follows_select_uidvalidity_read_only_and_enable() {
    let mut h = Harness::new(Vec::new());
    h.client(b"a SELECT {5}\r\n").unwrap();
    h.server(b"+ ok\r\n").unwrap();
    h.client(b"Inbox\r\n").unwrap();
    h.server(
        b"* 2 EXISTS\r\n* OK [UIDVALIDITY 1700000000] UIDs valid\r\na OK [READ-ONLY] Selected\r\n",
    )
    .unwrap();
    assert_eq!(
        h.core.info.selected,
        Some(Selected {
            name: b"Inbox".to_vec(),
            uidvalidity: Some(1_700_000_000),
            read_only: true
        })
    );
    assert_eq!(h.core.info.enabled, Enabled::NONE);
    h.client(b"x FETCH 1 (FLAGS MODSEQ)\r\n").unwrap();
    h.server(b"* 1 FETCH (FLAGS () MODSEQ (4))\r\nx OK done\r\n")
        .unwrap();
    assert!(h.core.info.enabled.contains(Enabled::CONDSTORE));
    h.client(b"b ENABLE UTF8=ACCEPT QRESYNC\r\nc EXAMINE \"Sent \\\"x\\\"\"\r\n")
        .unwrap();
    h.server(b"* ENABLED UTF8=ACCEPT QRESYNC\r\nb OK done\r\n* OK [UIDVALIDITY 9] x\r\nc OK [READ-ONLY] done\r\n")
        .unwrap();
    assert!(
        h.core
            .info
            .enabled
            .contains(Enabled::UTF8_ACCEPT | Enabled::QRESYNC)
    );
    let sel = h.core.info.selected.clone().unwrap();
    assert_eq!(
        (sel.name.as_slice(), sel.uidvalidity, sel.read_only),
        (&b"Sent \"x\""[..], Some(9), true)
    );
    h.client(b"d CLOSE\r\n").unwrap();
    h.server(b"d OK closed\r\n").unwrap();
    assert_eq!(h.core.info.selected, None);
}

/// Hides one mailbox from LIST.
struct Hide;

impl Phases for Hide {
    fn name(&self) -> &'static str {
        "hide"
    }
    fn subscriptions(&self) -> Kinds {
        Kinds::LIST
    }
    fn on_response(&self, _: &SessionInfo, msg: &ResponseMessage<'_>) -> ResponseDecision {
        let name = msg.with_assembled(|m| {
            crate::proto::message::parse_list(m).map(|l| l.mailbox.bytes.into_owned())
        });
        match name {
            Some(Ok(name)) if name == b"Secret" => ResponseDecision::Drop,
            Some(Ok(_)) => ResponseDecision::Forward,
            // Fail closed: what cannot be read is not shown.
            _ => ResponseDecision::Drop,
        }
    }
}

#[test]
fn subscribed_messages_are_seen_whole_however_they_arrive() {
    let script: &[u8] = b"* LIST () \"/\" INBOX\r\n* LIST () \"/\" NotSecret\r\n* LIST () \"/\" {6}\r\nSecret\r\n* 1 FETCH (BODY[] {6}\r\nSecret)\r\n* LIST (\\HasNoChildren) \"/\" \"Secret\"\r\na OK done\r\n";
    let expected = "* LIST () \"/\" INBOX\r\n* LIST () \"/\" NotSecret\r\n* 1 FETCH (BODY[] {6}\r\nSecret)\r\na OK done\r\n";
    for cut in 0..=script.len() {
        let mut h = Harness::new(vec![Arc::new(Hide)]);
        h.client(b"a LIST \"\" *\r\n").unwrap();
        h.server(&script[..cut]).unwrap();
        h.server(&script[cut..]).unwrap();
        assert_eq!(h.sent_down(), expected, "cut at {cut}");
    }
}

#[test]
fn commands_frame_the_same_split_at_every_byte() {
    let stream: &[u8] = b"a SELECT INBOX\r\nb UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM)])\r\nc APPEND x {3+}\r\nabc\r\nd COMPRESS DEFLATE\r\ne IDLE\r\nDONE\r\n";
    let mut whole = Harness::new(vec![Arc::new(Recorder::default())]);
    whole.client(stream).unwrap();
    for cut in 0..=stream.len() {
        let mut h = Harness::new(vec![Arc::new(Recorder::default())]);
        h.client(&stream[..cut]).unwrap();
        h.client(&stream[cut..]).unwrap();
        assert_eq!(h.sent_up(), whole.sent_up(), "cut at {cut}");
        assert_eq!(h.sent_down(), whole.sent_down(), "cut at {cut}");
    }
}

#[test]
fn every_tag_the_lexer_accepts_completes_when_the_server_echoes_it() {
    let rec = Arc::new(Recorder::default());
    let mut h = Harness::new(vec![rec.clone()]);
    h.client(b"a\x7f NOOP\r\nb] NOOP\r\n").unwrap();
    assert_eq!(
        h.sent_up(),
        "a\x7f NOOP\r\n",
        "`]` is not a tag byte for Dovecot"
    );
    h.server(b"a\x7f OK done\r\n").unwrap();
    assert_eq!(h.core.tracker.in_flight(), 0);
    assert!(
        rec.seen
            .lock()
            .unwrap()
            .contains(&"tagged a\x7f noop ok".to_string())
    );
}

#[test]
fn a_long_tag_cannot_make_a_status_line_look_like_a_literal() {
    let mut h = Harness::new(Vec::new());
    let tag = "t".repeat(200);
    h.client(format!("{tag} SELECT x{{5}}\r\n").as_bytes())
        .unwrap();
    assert!(
        h.core.takes_client_bytes(),
        "an invalid line announces nothing"
    );
    h.client(format!("{tag} SELECT \"x{{5}}\"\r\n").as_bytes())
        .unwrap();
    // The server echoes the mailbox name at the end of its NO: no literal follows.
    h.server(format!("{tag} NO Mailbox doesn't exist: x{{5}}\r\n* 1 EXISTS\r\n").as_bytes())
        .unwrap();
    assert_eq!(h.core.tracker.in_flight(), 0);
    assert!(h.sent_down().ends_with("* 1 EXISTS\r\n"));
    let long = "t".repeat(300);
    h.client(format!("{long} NOOP\r\n").as_bytes()).unwrap();
    assert!(h.sent_down().ends_with("* BAD Tag too long.\r\n"));
    assert!(!h.sent_up().contains(&long));
}

/// Records the FETCH items it observes; drops small FETCH responses of message 9.
#[derive(Default)]
struct FetchWatcher {
    seen: Mutex<Vec<(bool, String)>>,
}

impl Phases for FetchWatcher {
    fn name(&self) -> &'static str {
        "fetch-watcher"
    }
    fn subscriptions(&self) -> Kinds {
        Kinds::FETCH
    }
    fn on_response(&self, _: &SessionInfo, msg: &ResponseMessage<'_>) -> ResponseDecision {
        let items = msg
            .with_assembled(|m| {
                crate::proto::message::parse_fetch(m).map(|f| {
                    let labels: Vec<String> = f.items.iter().map(|i| i.label()).collect();
                    (f.seq, labels.join(" "))
                })
            })
            .and_then(Result::ok);
        let Some((seq, labels)) = items else {
            return ResponseDecision::Forward;
        };
        self.seen.lock().unwrap().push((msg.streamed, labels));
        if seq == 9 {
            ResponseDecision::Drop
        } else {
            ResponseDecision::Forward
        }
    }
}

#[test]
fn large_fetch_literals_stream_and_the_stage_still_sees_the_items() {
    let body = vec![b'x'; 200 * 1024];
    let mut script = b"* 1 FETCH (UID 7 BODY[] {204800}\r\n".to_vec();
    script.extend_from_slice(&body);
    script.extend_from_slice(
        b" FLAGS (\\Seen))\r\n* 9 FETCH (UID 8 BODY[HEADER] {4}\r\nab\r\n)\r\na OK done\r\n",
    );
    let expected = {
        let mut e = script.clone();
        let at = e.len() - b"* 9 FETCH (UID 8 BODY[HEADER] {4}\r\nab\r\n)\r\na OK done\r\n".len();
        e.truncate(at);
        e.extend_from_slice(b"a OK done\r\n");
        e
    };
    for cut in (0..script.len())
        .step_by(4099)
        .chain([30, 35, 36, script.len() - 20])
    {
        let watcher = Arc::new(FetchWatcher::default());
        let mut h = Harness::new(vec![watcher.clone()]);
        h.client(b"a FETCH 1,9 (UID BODY[] FLAGS)\r\n").unwrap();
        h.server(&script[..cut]).unwrap();
        h.server(&script[cut..]).unwrap();
        assert!(h.down.output() == expected.as_slice(), "cut at {cut}");
        let seen = watcher.seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                (true, "UID BODY[] FLAGS".to_string()),
                (false, "UID BODY[HEADER]".to_string())
            ],
            "cut at {cut}"
        );
    }
}

#[path = "core_held_tests.rs"]
mod held;

#[path = "core_run_tests.rs"]
mod run;

/// A micro-benchmark of the core's cost per pipelined command, without stages and with the
/// metrics stage (`cargo test --release --lib core_cost -- --ignored --nocapture`); prints,
/// asserts nothing.
/// Makes every SELECT an EXAMINE (the whole message when it was held), rewrites one command
/// with another tag, and removes `IDLE` from capability lists.
struct Examiner;

impl Phases for Examiner {
    fn name(&self) -> &'static str {
        "examiner"
    }
    fn whole_commands(&self) -> crate::phases::CommandSet {
        crate::phases::CommandSet::of(&[CommandName::Select])
    }
    fn on_command(&self, _: &SessionInfo, cmd: &Command<'_>) -> Verdict<CommandDecision> {
        let whole = cmd.message.unwrap_or(cmd.line);
        if cmd.name == CommandName::Select {
            let text = String::from_utf8_lossy(whole).replacen("SELECT", "EXAMINE", 1);
            return Verdict::Now(CommandDecision::Rewrite(text.into_bytes()));
        }
        if cmd.tag == b"t" {
            return Verdict::Now(CommandDecision::Rewrite(b"other NOOP\r\n".to_vec()));
        }
        Verdict::Now(CommandDecision::Forward)
    }
    fn edits_capabilities(&self) -> bool {
        true
    }
    fn on_capabilities(&self, _: &SessionInfo, caps: &mut Vec<Vec<u8>>) {
        caps.retain(|c| !c.eq_ignore_ascii_case(b"IDLE"));
        caps.push(b"X-POLICY".to_vec());
    }
}

#[test]
fn a_rewrite_is_followed_as_sent_and_keeps_its_tag() {
    let mut h = Harness::new(vec![Arc::new(Examiner)]);
    h.client(b"a SELECT INBOX\r\n").unwrap();
    assert_eq!(h.sent_up(), "a EXAMINE INBOX\r\n");
    h.server(b"* OK [UIDVALIDITY 7] x\r\na OK [READ-WRITE] done\r\n")
        .unwrap();
    let selected = h.core.info.selected.clone().unwrap();
    assert_eq!(selected.name, b"INBOX");
    assert!(selected.read_only, "followed as EXAMINE");
    // Held whole: the literal name is inline, the rewrite replaces the whole message.
    h.client(b"b SELECT {4}\r\n").unwrap();
    assert!(h.sent_down().ends_with("+ Ready for literal data\r\n"));
    h.client(b"Junk\r\n").unwrap();
    assert!(
        h.sent_up().ends_with("b EXAMINE {4+}\r\nJunk\r\n"),
        "{}",
        h.sent_up()
    );
    h.server(b"b OK done\r\n").unwrap();
    assert_eq!(h.core.info.selected.clone().unwrap().name, b"Junk");
    // A rewrite that changes the tag is refused, never relayed.
    h.client(b"t NOOP\r\n").unwrap();
    assert!(!h.sent_up().contains("other"), "{}", h.sent_up());
    assert!(h.sent_down().ends_with("t BAD Internal error.\r\n"));
}

#[test]
fn capability_lists_pass_through_the_stages_that_edit_them() {
    let mut h = Harness::new(vec![Arc::new(Examiner)]);
    h.client(b"a CAPABILITY\r\nb NOOP\r\n").unwrap();
    h.server(b"* CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE MOVE\r\na OK done\r\n")
        .unwrap();
    h.server(b"b OK [CAPABILITY IMAP4rev1 IDLE] done\r\n")
        .unwrap();
    assert_eq!(
        h.sent_down(),
        "* CAPABILITY IMAP4rev1 MOVE X-POLICY\r\na OK done\r\nb OK [CAPABILITY IMAP4rev1 X-POLICY] done\r\n"
    );
    // Without such a stage the proxy's own filter alone applies.
    let mut h = Harness::new(vec![]);
    h.client(b"a CAPABILITY\r\n").unwrap();
    h.server(b"* CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE\r\na OK done\r\n")
        .unwrap();
    assert_eq!(
        h.sent_down(),
        "* CAPABILITY IMAP4rev1 IDLE\r\na OK done\r\n"
    );
}

#[test]
#[ignore]
fn core_cost_per_command() {
    let metrics: Arc<dyn Phases> = Arc::new(crate::metrics::Metrics::new(["default"]).unwrap());
    for (label, stages) in [
        ("none", vec![]),
        ("metrics", vec![metrics.clone()]),
        ("none", vec![]),
        ("metrics", vec![metrics]),
    ] {
        let mut h = Harness::new(stages);
        let mut cmds = Vec::new();
        let mut resp = Vec::new();
        for i in 0..32 {
            cmds.extend_from_slice(format!("a{i} UID FETCH {i} (FLAGS)\r\n").as_bytes());
            resp.extend_from_slice(format!("* {i} FETCH (UID {i} FLAGS (\\Seen))\r\na{i} OK Fetch completed (0.001 + 0.000 secs).\r\n").as_bytes());
        }
        let t = std::time::Instant::now();
        let n = 20_000;
        for _ in 0..n {
            h.client(&cmds).unwrap();
            h.server(&resp).unwrap();
            h.up.out.clear();
            h.up.written = 0;
            h.down.out.clear();
            h.down.written = 0;
        }
        let per = t.elapsed().as_nanos() as f64 / (n * 32) as f64;
        eprintln!("core cost, stages {label}: {per:.0} ns/command");
    }
}

/// The policy's cost per command, through the core (run with `--release -- --ignored
/// --nocapture`): no stage; a policy without `on_command` (only `on_login`); readonly.lua (an
/// `on_command` that allows a UID FETCH). Prints the mean and the median of per-command times
/// measured over batches of 32 pipelined commands.
#[test]
#[ignore]
fn policy_cost_per_command() {
    use crate::policy::Policy;
    use crate::policy::vm::{Budget, Script};
    let config = {
        let mut c = crate::config::Config::default();
        c.upstream.address = "127.0.0.1:143".into();
        c
    };
    let load = |src: &str| -> Arc<dyn Phases> {
        let budget = Budget {
            memory: 16 << 20,
            instructions: 1_000_000,
            time: std::time::Duration::from_millis(50),
        };
        let script = Script::from_source(
            std::path::Path::new("bench.lua"),
            src.as_bytes().to_vec(),
            budget,
        )
        .unwrap();
        Arc::new(Policy::from_script(script, &config, Arc::new(crate::policy::LogSink)).unwrap())
    };
    let readonly = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/policies/readonly.lua"
    ))
    .unwrap();
    for round in 0..2 {
        for (label, stages) in [
            ("no policy", vec![]),
            (
                "policy without on_command",
                vec![load("function on_login(ctx) end")],
            ),
            (
                "policy with on_command (readonly.lua)",
                vec![load(&readonly)],
            ),
        ] {
            let mut h = Harness::new(stages);
            let mut cmds = Vec::new();
            let mut resp = Vec::new();
            for i in 0..32 {
                cmds.extend_from_slice(format!("a{i} UID FETCH {i} (FLAGS)\r\n").as_bytes());
                resp.extend_from_slice(format!("* {i} FETCH (UID {i} FLAGS (\\Seen))\r\na{i} OK Fetch completed (0.001 + 0.000 secs).\r\n").as_bytes());
            }
            let n = 20_000;
            let mut per_batch = Vec::with_capacity(n);
            let t = std::time::Instant::now();
            for _ in 0..n {
                let b = std::time::Instant::now();
                h.client(&cmds).unwrap();
                h.server(&resp).unwrap();
                per_batch.push(b.elapsed().as_nanos() as f64 / 32.0);
                h.up.out.clear();
                h.up.written = 0;
                h.down.out.clear();
                h.down.written = 0;
            }
            let mean = t.elapsed().as_nanos() as f64 / (n * 32) as f64;
            per_batch.sort_by(f64::total_cmp);
            let median = per_batch[per_batch.len() / 2];
            if round == 1 {
                eprintln!("{label}: mean {mean:.0} ns/command, median {median:.0} ns/command");
            }
        }
    }
}
