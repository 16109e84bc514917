//! The audit log end to end: `imapgate serve --audit-log FILE` (and `-`, and `[audit] file`
//! through the environment) in front of a real Dovecot, driven by a raw client over TLS. Checks
//! every record's fields for logins (refused, ok; LOGIN and AUTHENTICATE PLAIN) and for the
//! mail-changing commands, and that no password, SASL payload, flag or message body is written.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::raw::{quote, status_of};
use common::*;
use serde_json::{Value, json};

/// The audit records in `text` (JSON lines with an `audit` key; log lines are skipped).
fn records_in(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with("{\"time\":"))
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v.get("audit").is_some())
        .collect()
}

/// Reads `text()` until it holds at least `n` audit records; panics after 10 s.
fn wait_records(proxy: &Proxy, n: usize, text: impl Fn() -> String) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = text();
        let r = records_in(&t);
        if r.len() >= n {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} audit records after 10 s:\n{t}\n---- proxy log ----\n{}",
            r.len(),
            tail(&proxy.stderr(), 40)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn read_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Checks an RFC 3339 UTC time with milliseconds, `2025-06-01T09:14:07.123Z`.
fn assert_time(v: &Value) {
    let t = v["time"]
        .as_str()
        .unwrap_or_else(|| panic!("no time in {v}"));
    let b = t.as_bytes();
    assert!(
        b.len() == 24
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'.'
            && b[23] == b'Z'
            && t.starts_with("20"),
        "time {t:?}"
    );
}

/// A login record's fields.
fn assert_login(v: &Value, user: &str, mechanism: &str, result: &str) {
    assert_time(v);
    assert_eq!(v["audit"], "login", "{v}");
    assert_eq!(v["client_ip"], "127.0.0.1", "{v}");
    assert!(v["client_port"].as_u64().is_some_and(|p| p > 0), "{v}");
    assert_eq!(v["listener"], "tls", "{v}");
    assert_eq!(v["tls"], true, "{v}");
    assert_eq!(v["user"], user, "{v}");
    assert_eq!(v["mechanism"], mechanism, "{v}");
    assert_eq!(v["upstream"], "default", "{v}");
    assert_eq!(v["result"], result, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_file_records_logins_and_mail_changes() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().args(["--audit-log", "audit.jsonl"]),
    );
    // The proxy runs in its own directory.
    let path = proxy.dir().join("audit.jsonl");
    let (user, pw) = dovecot.take_user();
    let wrong = "Wr0ng-Audit-Pass-4711";
    let body = |n: u32| format!("Subject: audit {n}\r\n\r\nAUDIT-BODY-SECRET-{n}-7f3a\r\n");

    let mut c = proxy.raw_tls().await;
    let r = c
        .cmd("L0", &format!("LOGIN {} {}", quote(&user), quote(wrong)))
        .await;
    assert_eq!(status_of(r.last().unwrap()), "NO", "{}", show(&r.concat()));
    c.login(&user, &pw).await;
    c.ok("c1", "CREATE \"Audit Box\"").await;
    // A synchronizing literal, as most clients send it: the server's `+` comes through.
    let m1 = body(1);
    c.send(format!(
        "c2 APPEND \"Audit Box\" (\\Seen) {{{}}}\r\n",
        m1.len()
    ))
    .await;
    c.continuation().await;
    c.send(format!("{m1}\r\n")).await;
    let r = c.tagged("c2").await;
    assert_eq!(status_of(r.last().unwrap()), "OK", "{}", show(&r.concat()));
    for (tag, n) in [("c3", 2), ("c4", 3)] {
        let m = body(n);
        c.send(format!(
            "{tag} APPEND \"Audit Box\" {{{}+}}\r\n{m}\r\n",
            m.len()
        ))
        .await;
        let r = c.tagged(tag).await;
        assert_eq!(status_of(r.last().unwrap()), "OK", "{}", show(&r.concat()));
    }
    c.ok("s1", "SELECT \"Audit Box\"").await;
    c.ok("c5", "STORE 1 +FLAGS (\\Deleted)").await;
    c.ok("c6", "COPY 1 INBOX").await;
    c.ok("c7", "EXPUNGE").await;
    c.ok("c8", "UID STORE 2 +FLAGS.SILENT (\\Deleted)").await;
    c.ok("c9", "UID EXPUNGE 2").await;
    c.ok("c10", "UID MOVE 3 INBOX").await;
    c.ok("c11", "CLOSE").await;
    // A mailbox name sent as a literal: the stage sees only the first line.
    c.send("c12 CREATE {7+}\r\nLitName\r\n").await;
    let r = c.tagged("c12").await;
    assert_eq!(status_of(r.last().unwrap()), "OK", "{}", show(&r.concat()));
    c.ok("c13", "RENAME \"Audit Box\" \"Audit Renamed\"").await;
    c.ok("c14", "DELETE \"Audit Renamed\"").await;
    c.ok("c15", "DELETE LitName").await;
    let r = c.cmd("c16", "DELETE \"No Such Box\"").await;
    assert_eq!(status_of(r.last().unwrap()), "NO", "{}", show(&r.concat()));
    c.ok("z", "LOGOUT").await;

    // What each command record says; `mailbox`, `destination` and `set` are absent when not
    // listed (`null` = named by a literal the stage did not see).
    let in_box = |v: Value| {
        let mut v = v;
        v["mailbox"] = json!("Audit Box");
        v
    };
    let ok = "ok";
    let expected = [
        in_box(json!({"command": "create", "uid": false, "result": ok})),
        in_box(json!({"command": "append", "uid": false, "result": ok})),
        in_box(json!({"command": "append", "uid": false, "result": ok})),
        in_box(json!({"command": "append", "uid": false, "result": ok})),
        in_box(json!({"command": "store", "uid": false, "set": "1", "result": ok})),
        in_box(
            json!({"command": "copy", "uid": false, "set": "1", "destination": "INBOX", "result": ok}),
        ),
        in_box(json!({"command": "expunge", "uid": false, "result": ok})),
        in_box(json!({"command": "store", "uid": true, "set": "2", "result": ok})),
        in_box(json!({"command": "expunge", "uid": true, "set": "2", "result": ok})),
        in_box(
            json!({"command": "move", "uid": true, "set": "3", "destination": "INBOX", "result": ok}),
        ),
        in_box(json!({"command": "close", "uid": false, "result": ok})),
        json!({"command": "create", "uid": false, "mailbox": null, "result": ok}),
        in_box(
            json!({"command": "rename", "uid": false, "destination": "Audit Renamed", "result": ok}),
        ),
        json!({"command": "delete", "uid": false, "mailbox": "Audit Renamed", "result": ok}),
        json!({"command": "delete", "uid": false, "mailbox": "LitName", "result": ok}),
        json!({"command": "delete", "uid": false, "mailbox": "No Such Box", "result": "no"}),
    ];
    let records = wait_records(&proxy, 2 + expected.len(), || read_or_empty(&path));
    assert_eq!(records.len(), 2 + expected.len(), "{records:#?}");

    assert_login(&records[0], &user, "LOGIN", "refused");
    assert_login(&records[1], &user, "LOGIN", "ok");
    let session = records[0]["session"].clone();
    assert!(session.is_u64(), "{}", records[0]);
    assert_eq!(records[1]["session"], session);
    assert_eq!(records[0]["client_port"], records[1]["client_port"]);

    for (v, want) in records[2..].iter().zip(&expected) {
        assert_time(v);
        assert_eq!(v["audit"], "command", "{v}");
        assert_eq!(v["session"], session, "{v}");
        assert_eq!(v["client_ip"], "127.0.0.1", "{v}");
        assert_eq!(v["client_port"], records[0]["client_port"], "{v}");
        assert_eq!(v["user"], user.as_str(), "{v}");
        assert_eq!(v["upstream"], "default", "{v}");
        assert_eq!(v["local"], false, "{v}");
        assert!(v["ms"].is_u64(), "{v}");
        for key in ["command", "uid", "mailbox", "destination", "set", "result"] {
            assert_eq!(v.get(key), want.get(key), "{key}: got {v}, want {want}");
        }
    }

    // No secret and no content: passwords, message bodies, flags.
    let text = read_or_empty(&path);
    for needle in [
        pw.as_str(),
        wrong,
        "AUDIT-BODY-SECRET",
        "Subject:",
        "Deleted",
        "Seen",
    ] {
        assert!(
            !text.contains(needle),
            "{needle:?} in the audit log:\n{text}"
        );
    }
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_to_stderr_beside_the_logs() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default().args(["--audit-log", "-"]));
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("a", "CREATE Stderr-Box").await;
    c.ok("b", "DELETE Stderr-Box").await;
    c.ok("z", "LOGOUT").await;

    let records = wait_records(&proxy, 3, || proxy.stderr());
    assert_login(&records[0], &user, "LOGIN", "ok");
    let got: Vec<_> = records[1..]
        .iter()
        .map(|v| {
            (
                v["command"].clone(),
                v["mailbox"].clone(),
                v["result"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (json!("create"), json!("Stderr-Box"), json!("ok")),
            (json!("delete"), json!("Stderr-Box"), json!("ok")),
        ]
    );
    // The proxy's own log lines are still there, and no audit line was cut by one.
    let err = proxy.stderr();
    assert!(err.contains("logged in"), "{err}");
    assert!(!err.contains(&pw), "the password reached stderr:\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_file_from_the_configuration_and_sasl_logins() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().env("IMAPGATE_AUDIT__FILE", "configured.jsonl"),
    );
    let path = proxy.dir().join("configured.jsonl");
    let (user, pw) = dovecot.take_user();
    let ir = B64.encode(format!("\0{user}\0{pw}"));
    let mut c = proxy.raw_tls().await;
    c.ok("a", &format!("AUTHENTICATE PLAIN {ir}")).await;
    c.ok("z", "LOGOUT").await;
    let records = wait_records(&proxy, 1, || read_or_empty(&path));
    assert_login(&records[0], &user, "PLAIN", "ok");
    let text = read_or_empty(&path);
    assert!(!text.contains(&ir) && !text.contains(&pw), "{text}");
}
