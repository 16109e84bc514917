//! The metrics stage and the admin listener against a real Dovecot: `/metrics` after real client
//! sessions (checked with `promtool check metrics`), `/healthz`, `/readyz` (up, upstream
//! unreachable, draining), and the Grafana dashboard's queries against the exported names.
//!
//! The per-command, byte and IDLE series come from the relay's `on_command` / `on_tagged` /
//! `observe(Traffic)` calls: `commands_bytes_and_idle_are_counted_from_the_relay` needs them.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP answer: status, headers (lower-cased names), body.
struct Http {
    status: u16,
    headers: String,
    body: String,
}

/// `GET path` over a fresh connection (HTTP/1.1, `Connection: close`).
async fn get(addr: SocketAddr, path: &str) -> Http {
    let fetch = async {
        let mut tcp = TcpStream::connect(addr).await.expect("connecting to admin");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .expect("admin answer within 10 s");
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    Http {
        status,
        headers: headers.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// The `/metrics` text.
async fn scrape(proxy: &Proxy) -> String {
    let r = get(proxy.admin(), "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.headers
    );
    r.body
}

/// The value of `series` (exactly as rendered, labels sorted by name) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok())?
    })
}

/// Like [`sample`], panicking with the text when the series is absent.
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Sum of every sample of family `name` (any labels).
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(s, _)| *s == name || s.starts_with(&format!("{name}{{")))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// Scrapes until `ok(text)` holds; panics with the last text after 10 s.
async fn scrape_until(proxy: &Proxy, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(proxy).await;
        if ok(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {what}:\n{text}\n---- proxy log ----\n{}",
            tail(&proxy.stderr(), 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/readyz` until its status is `status`; returns the body.
async fn readyz_until(proxy: &Proxy, status: u16, body_has: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(proxy.admin(), "/readyz").await;
        if r.status == status && r.body.contains(body_has) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {} {:?}, wanted {status} with {body_has:?}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `promtool check metrics` on `text`. Without promtool the check is skipped loudly, unless
/// `TEST_IMAPGATE_REQUIRE_PROMTOOL` is set (scripts/test.sh sets it after installing it).
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("TEST_IMAPGATE_REQUIRE_PROMTOOL").is_none(),
                "promtool is required (TEST_IMAPGATE_REQUIRE_PROMTOOL) but not on PATH"
            );
            eprintln!(
                "\n!!!!!!!! SKIPPED: promtool not on PATH, /metrics NOT linted \
                 (bash scripts/install-deps.sh installs it) !!!!!!!!\n"
            );
            return;
        }
        Err(e) => panic!("running promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_logins_and_upstream_connects_are_counted_and_promtool_accepts_them() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default().admin());
    let (user, pw) = dovecot.take_user();

    let mut good = proxy.login_tls(&user, &pw).await;
    let mut bad = proxy.raw_tls().await;
    let r = bad
        .cmd(
            "b1",
            &format!("LOGIN {} \"not-the-password\"", raw::quote(&user)),
        )
        .await;
    assert_eq!(raw::status_of(r.last().unwrap()), "NO", "{}", bad.tail());

    // A login is counted once its session has handled the upstream's answer, which may be just
    // after the client has read it (the session runs on another thread than the admin listener).
    let text = scrape_until(&proxy, "both logins counted", |t| {
        total(t, "imapgate_logins_total") == 2.0
    })
    .await;
    let tls_active = r#"imapgate_connections_active{listener="tls",tls="true"}"#;
    assert_eq!(value(&text, tls_active), 2.0);
    assert_eq!(
        value(
            &text,
            r#"imapgate_connections_accepted_total{listener="tls",tls="true"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"imapgate_logins_total{mechanism="LOGIN",result="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"imapgate_logins_total{mechanism="LOGIN",result="refused"}"#
        ),
        1.0
    );
    assert_eq!(total(&text, "imapgate_logins_total"), 2.0);
    // The start-up probe, the readiness check and the two logins all connected upstream.
    assert!(
        value(
            &text,
            r#"imapgate_upstream_connect_duration_seconds_count{upstream="default"}"#
        ) >= 2.0,
        "{text}"
    );
    assert_eq!(
        total(&text, "imapgate_upstream_connect_failures_total"),
        0.0
    );
    assert_eq!(
        value(
            &text,
            &format!(
                r#"imapgate_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );

    good.ok("g9", "LOGOUT").await;
    good.read_to_close().await;
    bad.ok("b9", "LOGOUT").await;
    bad.read_to_close().await;
    let text = scrape_until(&proxy, "both sessions closed", |t| {
        total(t, "imapgate_sessions_closed_total") == 2.0
    })
    .await;
    assert_eq!(total(&text, "imapgate_connections_active"), 0.0);
    assert_eq!(value(&text, tls_active), 0.0);
    assert_eq!(
        value(&text, r#"imapgate_sessions_closed_total{ending="ok"}"#),
        2.0
    );
    assert_eq!(value(&text, "imapgate_session_duration_seconds_count"), 2.0);
    promtool_check(&text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_bytes_and_idle_are_counted_from_the_relay() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default().admin());
    let (user, pw) = dovecot.take_user();

    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("s1", "SELECT INBOX").await;
    c.ok("f1", "UID FETCH 1:* (FLAGS)").await;
    let r = c.cmd("s2", "SELECT no-such-mailbox-here").await;
    assert_eq!(raw::status_of(r.last().unwrap()), "NO", "{}", c.tail());
    let r = c.cmd("x1", "FROBNICATE now").await;
    assert_eq!(raw::status_of(r.last().unwrap()), "BAD", "{}", c.tail());
    c.send("i1 IDLE\r\n").await;
    c.continuation().await;
    scrape_until(&proxy, "one session in IDLE", |t| {
        sample(t, "imapgate_idle_sessions") == Some(1.0)
    })
    .await;
    c.send("DONE\r\n").await;
    let r = c.tagged("i1").await;
    assert_eq!(raw::status_of(r.last().unwrap()), "OK");
    c.ok("l1", "LOGOUT").await;
    c.read_to_close().await;

    let text = scrape_until(&proxy, "the session closed", |t| {
        total(t, "imapgate_sessions_closed_total") == 1.0
    })
    .await;
    let commands = |command: &str, result: &str| {
        sample(
            &text,
            &format!(r#"imapgate_commands_total{{command="{command}",result="{result}"}}"#),
        )
    };
    assert_eq!(commands("select", "ok"), Some(1.0), "{text}");
    assert_eq!(commands("select", "no"), Some(1.0));
    assert_eq!(commands("fetch", "ok"), Some(1.0));
    assert_eq!(commands("other", "bad"), Some(1.0));
    assert_eq!(commands("idle", "ok"), Some(1.0));
    assert_eq!(commands("logout", "ok"), Some(1.0));
    assert_eq!(total(&text, "imapgate_commands_total"), 6.0);
    assert_eq!(
        value(
            &text,
            r#"imapgate_command_duration_seconds_count{command="select"}"#
        ),
        2.0
    );
    assert_eq!(value(&text, "imapgate_idle_sessions"), 0.0);
    for direction in ["received", "sent"] {
        for side in ["downstream", "upstream"] {
            let s = format!(r#"imapgate_bytes_total{{direction="{direction}",side="{side}"}}"#);
            assert!(value(&text, &s) > 0.0, "{s} in:\n{text}");
        }
    }
    promtool_check(&text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tls_handshake_is_counted_and_leaves_active_connections_alone() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default().admin());
    let mut tcp = TcpStream::connect(proxy.tls()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink)).await;

    let text = scrape_until(&proxy, "the TLS failure", |t| {
        sample(
            t,
            r#"imapgate_tls_handshake_failures_total{listener="tls"}"#,
        ) == Some(1.0)
    })
    .await;
    assert_eq!(total(&text, "imapgate_connections_active"), 0.0);
    assert_eq!(total(&text, "imapgate_connections_accepted_total"), 0.0);
    assert_eq!(total(&text, "imapgate_sessions_closed_total"), 0.0);

    // A good session afterwards counts 1, then 0: the failed one never went negative.
    let mut c = proxy.raw_tls().await;
    let text = scrape(&proxy).await;
    assert_eq!(
        value(
            &text,
            r#"imapgate_connections_active{listener="tls",tls="true"}"#
        ),
        1.0
    );
    c.ok("a", "LOGOUT").await;
    c.read_to_close().await;
    scrape_until(&proxy, "no active connection", |t| {
        total(t, "imapgate_sessions_closed_total") == 1.0
            && total(t, "imapgate_connections_active") == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_answer_200_when_dovecot_is_up() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default().admin());
    let h = get(proxy.admin(), "/healthz").await;
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));
    let body = readyz_until(&proxy, 200, "ready").await;
    assert_eq!(body, "ready\n");
    assert_eq!(get(proxy.admin(), "/nothing-here").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_when_the_default_upstream_is_unreachable() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().unreachable_upstream().admin(),
    );
    let body = readyz_until(&proxy, 503, "unreachable").await;
    assert_eq!(body.lines().count(), 1, "{body:?}");
    assert_eq!(get(proxy.admin(), "/healthz").await.status, 200);
    let text = scrape(&proxy).await;
    assert!(
        value(
            &text,
            r#"imapgate_upstream_connect_failures_total{cause="connect",upstream="default"}"#
        ) >= 1.0,
        "{text}"
    );
    // A client's login fails the same way (`* BYE [UNAVAILABLE]`) and counts as an error.
    let mut c = proxy.raw_tls().await;
    c.send("a LOGIN someone secret\r\n").await;
    let got = c.read_to_close().await;
    assert!(
        raw::contains(&got, b"* BYE [UNAVAILABLE]"),
        "{}",
        show(&got)
    );
    let text = scrape_until(&proxy, "the failed login", |t| {
        sample(
            t,
            r#"imapgate_logins_total{mechanism="LOGIN",result="error"}"#,
        ) == Some(1.0)
    })
    .await;
    promtool_check(&text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_draining_and_a_session_is_still_open() {
    let dovecot = Dovecot::shared();
    let mut proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default()
            .admin()
            .env("IMAPGATE_TIMEOUTS__SHUTDOWN_GRACE_SECS", 30),
    );
    let (user, pw) = dovecot.take_user();
    readyz_until(&proxy, 200, "ready").await;

    // One idle session, told at once; one in the middle of an APPEND, which may finish.
    let mut quiet = proxy.login_tls(&user, &pw).await;
    let mut appender = proxy.login_tls(&user, &pw).await;
    let msg = make_message("append-while-draining", 4096);
    appender
        .send(format!("a APPEND INBOX {{{}}}\r\n", msg.len()))
        .await;
    appender.continuation().await;
    appender.send(&msg[..1000]).await;

    proxy.sigterm();
    let got = quiet.read_to_close().await;
    assert!(raw::contains(&got, b"* BYE"), "{}", show(&got));
    // The quiet session heard of the shutdown, so the signal has fired: not ready any more,
    // while the process still runs and answers.
    let r = get(proxy.admin(), "/readyz").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("draining"), "{:?}", r.body);
    assert_eq!(get(proxy.admin(), "/healthz").await.status, 200);
    assert!(proxy.running());

    appender.send(&msg[1000..]).await;
    appender.send("\r\n").await;
    let r = appender.tagged("a").await;
    assert_starts(r.last().unwrap(), "a OK");
    let rest = appender.read_to_close().await;
    assert_starts(&rest, "* BYE");
    let status = proxy.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

/// Metric names used in a PromQL expression (`imapgate_...` identifiers).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("imapgate_") {
        let start = i + at;
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_' || b[end] == b':')
        {
            end += 1;
        }
        if boundary {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// Every `expr` string anywhere in the dashboard.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_the_proxy_exports() {
    let path = root().join("deploy/grafana/imapgate.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let mut all = Vec::new();
    exprs(&json, &mut all);
    assert!(all.len() >= 15, "only {} queries", all.len());
    let mut exported: BTreeSet<String> = imapgate::metrics::Metrics::new(["default"])
        .unwrap()
        .family_names()
        .into_iter()
        .collect();
    // The FETCH cache's families (on by default).
    let registry = prometheus::Registry::new();
    imapgate::cache::Cache::new(&imapgate::cache::CacheConfig::default())
        .register(&registry)
        .unwrap();
    exported.extend(registry.gather().iter().map(|f| f.name().to_string()));
    let mut used = BTreeSet::new();
    for expr in &all {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no imapgate metric in {expr:?}");
        for name in names {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|base| exported.contains(*base))
                        .map(str::to_string)
                })
                .unwrap_or(name.clone());
            assert!(
                exported.contains(&family),
                "{name} (in {expr:?}) is not exported; exported: {exported:?}"
            );
            used.insert(family);
        }
    }
    // Every family the proxy exports has a panel.
    let unused: Vec<_> = exported.difference(&used).collect();
    assert!(unused.is_empty(), "no panel for {unused:?}");
}
