//! Unit tests of the audit stage: its phase methods called directly, the file read back.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::phases::{LoginResult, Selected};
use crate::proto::command::parse_command_line;
use crate::session::ListenerKind;

/// A stage writing to a file in a fresh directory.
fn stage() -> (Audit, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let config = AuditConfig {
        file: Some(path.clone()),
        ..AuditConfig::default()
    };
    let audit = Audit::start(&config)
        .unwrap()
        .expect("a file is configured");
    (audit, dir, path)
}

/// The records written so far.
fn records(audit: &Audit, path: &Path) -> Vec<serde_json::Value> {
    assert!(audit.flush(Duration::from_secs(5)));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn session() -> SessionInfo {
    let mut s = SessionInfo::new(42, "198.51.100.4:6000".parse().unwrap(), ListenerKind::Tls);
    s.user = Some(Arc::from(&b"alice"[..]));
    s.upstream = Some(Arc::from("default"));
    s.selected = Some(Selected {
        name: b"INBOX".to_vec(),
        uidvalidity: Some(1),
        read_only: false,
    });
    s
}

fn command<'a>(line: &'a [u8], message: Option<&'a [u8]>) -> Command<'a> {
    let head = parse_command_line(line).expect("a command line");
    Command {
        tag: head.tag,
        name: head.name,
        uid: head.uid,
        line,
        message,
    }
}

fn done(cmd: &Command<'_>, outcome: Outcome, local: bool) -> Completion<'static> {
    Completion {
        // Tags in these tests are static strings.
        tag: Box::leak(cmd.tag.to_vec().into_boxed_slice()),
        name: cmd.name,
        uid: cmd.uid,
        outcome,
        code: None,
        started: std::time::Instant::now(),
        at: std::time::Instant::now() + Duration::from_millis(7),
        local,
    }
}

/// Runs `line` through on_command and on_tagged; asserts it was forwarded.
fn run(audit: &Audit, s: &SessionInfo, line: &[u8], outcome: Outcome) {
    let cmd = command(line, None);
    let Verdict::Now(CommandDecision::Forward) = audit.on_command(s, &cmd) else {
        panic!("the audit stage must forward at once");
    };
    audit.on_tagged(s, &done(&cmd, outcome, false));
}

#[test]
fn records_mutating_commands_with_their_results() {
    let (audit, _dir, path) = stage();
    let s = session();
    run(&audit, &s, b"a1 FETCH 1:* (FLAGS)\r\n", Outcome::Ok);
    run(
        &audit,
        &s,
        b"a2 APPEND \"Sent Items\" (\\Seen) {12}\r\n",
        Outcome::Ok,
    );
    run(
        &audit,
        &s,
        b"a3 UID STORE 5:7 +FLAGS.SILENT (\\Deleted)\r\n",
        Outcome::Ok,
    );
    run(&audit, &s, b"a4 COPY 2,4 Archive\r\n", Outcome::No);
    run(&audit, &s, b"a5 UID MOVE 9 {7}\r\n", Outcome::Ok);
    run(&audit, &s, b"a6 EXPUNGE\r\n", Outcome::Ok);
    run(&audit, &s, b"a7 UID EXPUNGE 5:7\r\n", Outcome::Ok);
    run(&audit, &s, b"a8 RENAME Old \"New\"\r\n", Outcome::Bad);
    run(&audit, &s, b"a9 SELECT INBOX\r\n", Outcome::Ok);
    let r = records(&audit, &path);
    let summary: Vec<String> = r
        .iter()
        .map(|v| {
            format!(
                "{} uid={} mailbox={} destination={} set={} result={}",
                v["command"], v["uid"], v["mailbox"], v["destination"], v["set"], v["result"]
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            r#""append" uid=false mailbox="Sent Items" destination=null set=null result="ok""#,
            r#""store" uid=true mailbox="INBOX" destination=null set="5:7" result="ok""#,
            r#""copy" uid=false mailbox="INBOX" destination="Archive" set="2,4" result="no""#,
            r#""move" uid=true mailbox="INBOX" destination=null set="9" result="ok""#,
            r#""expunge" uid=false mailbox="INBOX" destination=null set=null result="ok""#,
            r#""expunge" uid=true mailbox="INBOX" destination=null set="5:7" result="ok""#,
            r#""rename" uid=false mailbox="Old" destination="New" set=null result="bad""#,
        ]
    );
    // An unseen literal destination is recorded as unknown (null), not left out.
    assert!(r[3].as_object().unwrap().contains_key("destination"));
    assert!(!r[0].as_object().unwrap().contains_key("destination"));
    for v in &r {
        assert_eq!(v["audit"], "command");
        assert_eq!(v["session"], 42);
        assert_eq!(v["client_ip"], "198.51.100.4");
        assert_eq!(v["client_port"], 6000);
        assert_eq!(v["user"], "alice");
        assert_eq!(v["upstream"], "default");
        assert_eq!(v["ms"], 7);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("Deleted") && !text.contains("Seen"),
        "{text}"
    );
}

#[test]
fn whole_commands_are_read_with_their_literals() {
    let (audit, _dir, path) = stage();
    let s = session();
    let line = b"b1 RENAME {3+}\r\n";
    let cmd = command(line, Some(b"b1 RENAME {3+}\r\nOld {4+}\r\nNew\xff\r\n"));
    audit.on_command(&s, &cmd);
    audit.on_tagged(&s, &done(&cmd, Outcome::Ok, true));
    let r = records(&audit, &path);
    assert_eq!(r[0]["mailbox"], "Old");
    assert_eq!(r[0]["destination"]["hex"], "4e6577ff");
    assert_eq!(r[0]["local"], true);
}

#[test]
fn pipelined_tags_match_and_the_end_flushes_what_is_in_flight() {
    let (audit, _dir, path) = stage();
    let mut s = session();
    let (c1, c2, c3) = (
        command(b"t CREATE One\r\n", None),
        command(b"t CREATE Two\r\n", None),
        command(b"u DELETE Three\r\n", None),
    );
    for c in [&c1, &c2, &c3] {
        audit.on_command(&s, c);
    }
    audit.on_tagged(&s, &done(&c1, Outcome::Ok, false));
    // A completion nobody noted (a command another stage refused first) writes nothing.
    audit.on_tagged(
        &s,
        &done(&command(b"zz DELETE X\r\n", None), Outcome::No, true),
    );
    s.selected = None;
    audit.on_close(&Summary {
        info: &s,
        duration: Duration::from_secs(1),
        commands: 3,
        client_in: 0,
        client_out: 0,
        upstream_in: 0,
        upstream_out: 0,
        ending: "client closed",
        error_side: None,
        idling: false,
        logged_in: true,
    });
    let r = records(&audit, &path);
    let got: Vec<_> = r
        .iter()
        .map(|v| {
            (
                v["mailbox"].as_str().unwrap().to_string(),
                v["result"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("One".to_string(), "ok".into()),
            ("Two".to_string(), "none".into()),
            ("Three".to_string(), "none".into()),
        ]
    );
    assert!(audit.pending.is_empty());
}

#[test]
fn the_mailbox_acted_on_follows_selects_and_survives_close() {
    let (audit, _dir, path) = stage();
    let mut s = session();
    let select = command(b"s SELECT Work\r\n", None);
    let store = command(b"t STORE 1 +FLAGS (\\Seen)\r\n", None);
    let close = command(b"u CLOSE\r\n", None);
    // Pipelined: SELECT Work, then STORE and CLOSE while INBOX is still selected.
    for c in [&select, &store, &close] {
        audit.on_command(&s, c);
    }
    s.selected.as_mut().unwrap().name = b"Work".to_vec();
    audit.on_tagged(&s, &done(&select, Outcome::Ok, false));
    audit.on_tagged(&s, &done(&store, Outcome::Ok, false));
    // By CLOSE's completion the session has nothing selected any more.
    s.selected = None;
    audit.on_tagged(&s, &done(&close, Outcome::Ok, false));
    let r = records(&audit, &path);
    let got: Vec<_> = r
        .iter()
        .map(|v| (v["command"].clone(), v["mailbox"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (serde_json::json!("store"), serde_json::json!("Work")),
            (serde_json::json!("close"), serde_json::json!("Work")),
        ]
    );
}

#[test]
fn logins_are_recorded_without_secrets() {
    let (audit, _dir, path) = stage();
    let mut s = SessionInfo::new(9, "[::1]:7000".parse().unwrap(), ListenerKind::Plain);
    s.tls = false;
    audit.observe(&Event::Login {
        info: &s,
        user: Some(b"bob\n"),
        upstream: Some("eu"),
        mechanism: "PLAIN",
        result: LoginResult::Refused,
    });
    audit.observe(&Event::LimitRejected { kind: "line" });
    let r = records(&audit, &path);
    assert_eq!(r.len(), 1);
    let v = &r[0];
    assert_eq!(v["audit"], "login");
    assert_eq!(v["session"], 9);
    assert_eq!(v["client_ip"], "::1");
    assert_eq!(v["listener"], "plain");
    assert_eq!(v["tls"], false);
    assert_eq!(v["user"], "bob\n");
    assert_eq!(v["upstream"], "eu");
    assert_eq!(v["mechanism"], "PLAIN");
    assert_eq!(v["result"], "refused");
    for key in ["password", "token", "secret", "message", "sasl"] {
        assert!(v.get(key).is_none(), "{key} in {v}");
    }
}

#[test]
fn no_file_no_stage_and_counters_register() {
    assert!(Audit::start(&AuditConfig::default()).unwrap().is_none());
    let (audit, _dir, _path) = stage();
    let registry = prometheus::Registry::new();
    audit.register(&registry).unwrap();
    let names: Vec<_> = registry
        .gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "imapgate_audit_records_dropped_total",
            "imapgate_audit_write_errors_total"
        ]
    );
    assert_eq!(audit.dropped(), 0);
}
