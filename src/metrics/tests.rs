//! Unit tests of the metrics stage: its phase methods called directly, the rendered text read
//! back.

use std::net::SocketAddr;
use std::time::Duration;

use super::handles::{COMMANDS, command_idx};
use super::*;
use crate::phases::{LoginResult, Outcome, UpstreamFailure};

fn metrics() -> Metrics {
    Metrics::new(["default", "archive"]).expect("registry")
}

fn info(id: u64, listener: ListenerKind) -> SessionInfo {
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    SessionInfo::new(id, peer, listener)
}

/// The value of the sample `name{labels}` (labels as rendered, e.g. `a="b",c="d"`).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok())?
    })
}

fn value(m: &Metrics, series: &str) -> f64 {
    let text = m.render().unwrap();
    sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

fn summary<'a>(info: &'a SessionInfo, error_side: Option<Side>) -> Summary<'a> {
    Summary {
        info,
        duration: Duration::from_millis(1500),
        commands: 0,
        client_in: 0,
        client_out: 0,
        upstream_in: 0,
        upstream_out: 0,
        ending: "test",
        error_side,
        idling: false,
        logged_in: false,
    }
}

fn done(name: CommandName, outcome: Outcome, ms: u64) -> Completion<'static> {
    let t = std::time::Instant::now();
    Completion {
        tag: b"a1",
        name,
        uid: false,
        outcome,
        code: None,
        started: t,
        at: t + Duration::from_millis(ms),
        local: false,
    }
}

#[test]
fn command_names_index_their_own_slot() {
    for (i, c) in COMMANDS.iter().enumerate() {
        assert_eq!(command_idx(*c), i, "{c:?}");
    }
    assert_eq!(COMMANDS.len(), CommandName::Other as usize + 1);
}

#[test]
fn active_connections_are_exact_even_for_sessions_that_never_connected() {
    let m = metrics();
    let tls = info(1, ListenerKind::Tls);
    let mut plain = info(2, ListenerKind::Plain);
    assert!(matches!(
        m.on_connect(&tls),
        Verdict::Now(ConnectDecision::Allow)
    ));
    let _ = m.on_connect(&plain);
    assert_eq!(
        value(
            &m,
            r#"imapgate_connections_active{listener="tls",tls="true"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"imapgate_connections_active{listener="plain",tls="false"}"#
        ),
        1.0
    );
    // A session that failed its TLS handshake: on_close without on_connect.
    m.observe(&Event::TlsHandshakeFailed {
        listener: ListenerKind::Tls,
    });
    let failed = info(3, ListenerKind::Tls);
    m.on_close(&summary(&failed, Some(Side::Client)));
    assert_eq!(
        value(
            &m,
            r#"imapgate_connections_active{listener="tls",tls="true"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            r#"imapgate_tls_handshake_failures_total{listener="tls"}"#
        ),
        1.0
    );
    // STARTTLS upgraded the plain session: the gauge it was counted in goes down.
    plain.tls = true;
    m.on_close(&summary(&plain, None));
    m.on_close(&summary(&tls, Some(Side::Upstream)));
    // A second on_close of the same session changes nothing.
    m.on_close(&summary(&tls, Some(Side::Upstream)));
    let text = m.render().unwrap();
    for l in ["tls", "plain"] {
        for t in ["true", "false"] {
            let s = format!(r#"imapgate_connections_active{{listener="{l}",tls="{t}"}}"#);
            assert_eq!(sample(&text, &s), Some(0.0), "{s}");
        }
    }
    assert_eq!(
        sample(
            &text,
            r#"imapgate_connections_accepted_total{listener="plain",tls="false"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"imapgate_sessions_closed_total{ending="ok"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"imapgate_sessions_closed_total{ending="upstream"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"imapgate_sessions_closed_total{ending="downstream"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "imapgate_session_duration_seconds_count"),
        Some(2.0)
    );
}

#[test]
fn commands_count_by_name_and_result_with_latency() {
    let m = metrics();
    let s = info(1, ListenerKind::Tls);
    m.on_tagged(&s, &done(CommandName::Select, Outcome::Ok, 2));
    m.on_tagged(&s, &done(CommandName::Select, Outcome::No, 1));
    m.on_tagged(&s, &done(CommandName::Fetch, Outcome::Ok, 40));
    m.on_tagged(&s, &done(CommandName::Other, Outcome::Bad, 0));
    let text = m.render().unwrap();
    let get = |c: &str, r: &str| {
        sample(
            &text,
            &format!(r#"imapgate_commands_total{{command="{c}",result="{r}"}}"#),
        )
    };
    assert_eq!(get("select", "ok"), Some(1.0));
    assert_eq!(get("select", "no"), Some(1.0));
    assert_eq!(get("fetch", "ok"), Some(1.0));
    assert_eq!(get("other", "bad"), Some(1.0));
    assert_eq!(get("append", "bye"), Some(0.0));
    assert_eq!(
        sample(
            &text,
            r#"imapgate_command_duration_seconds_count{command="select"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"imapgate_command_duration_seconds_bucket{command="fetch",le="0.025"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"imapgate_command_duration_seconds_bucket{command="fetch",le="0.05"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn idle_gauge_follows_idle_commands_including_ones_cut_by_the_session_end() {
    let m = metrics();
    let s = info(1, ListenerKind::Tls);
    let idle = Command {
        tag: b"i",
        name: CommandName::Idle,
        uid: false,
        line: b"i IDLE\r\n",
        message: None,
    };
    let noop = Command {
        tag: b"n",
        name: CommandName::Noop,
        uid: false,
        line: b"n NOOP\r\n",
        message: None,
    };
    assert!(matches!(
        m.on_command(&s, &idle),
        Verdict::Now(CommandDecision::Forward)
    ));
    let _ = m.on_command(&s, &noop);
    let _ = m.on_command(&info(2, ListenerKind::Plain), &idle);
    assert_eq!(value(&m, "imapgate_idle_sessions"), 2.0);
    m.on_tagged(&s, &done(CommandName::Idle, Outcome::Ok, 60_000));
    m.on_tagged(&s, &done(CommandName::Noop, Outcome::Ok, 1));
    assert_eq!(value(&m, "imapgate_idle_sessions"), 1.0);
    m.on_tagged(&s, &done(CommandName::Idle, Outcome::Bye, 1_000));
    assert_eq!(value(&m, "imapgate_idle_sessions"), 0.0);
    assert_eq!(
        value(
            &m,
            r#"imapgate_commands_total{command="idle",result="bye"}"#
        ),
        1.0
    );
}

#[test]
fn events_count_logins_bytes_upstreams_and_limits() {
    let m = metrics();
    let s = info(1, ListenerKind::Tls);
    m.observe(&Event::Login {
        info: &s,
        user: Some(b"alice"),
        upstream: Some("default"),
        mechanism: "LOGIN",
        result: LoginResult::Ok,
    });
    m.observe(&Event::Login {
        info: &s,
        user: None,
        upstream: None,
        mechanism: "PLAIN",
        result: LoginResult::Refused,
    });
    m.observe(&Event::Login {
        info: &s,
        user: None,
        upstream: None,
        mechanism: "SCRAM-SHA-256",
        result: LoginResult::Invalid,
    });
    for (side, flow, n) in [
        (Side::Client, Flow::Received, 10),
        (Side::Client, Flow::Received, 5),
        (Side::Upstream, Flow::Sent, 15),
        (Side::Internal, Flow::Sent, 99),
    ] {
        m.observe(&Event::Traffic {
            side,
            flow,
            bytes: n,
        });
    }
    for (upstream, failure) in [
        ("default", None),
        ("default", Some(UpstreamFailure::Connect)),
        ("archive", Some(UpstreamFailure::Tls)),
        ("added-later", Some(UpstreamFailure::Timeout)),
    ] {
        m.observe(&Event::UpstreamConnect {
            upstream,
            elapsed: Duration::from_millis(3),
            failure,
        });
    }
    m.observe(&Event::LimitRejected { kind: "line" });
    m.observe(&Event::LimitRejected { kind: "new_kind" });
    let text = m.render().unwrap();
    let expect = [
        (
            r#"imapgate_logins_total{mechanism="LOGIN",result="ok"}"#,
            1.0,
        ),
        (
            r#"imapgate_logins_total{mechanism="PLAIN",result="refused"}"#,
            1.0,
        ),
        (
            r#"imapgate_logins_total{mechanism="other",result="invalid"}"#,
            1.0,
        ),
        (
            r#"imapgate_bytes_total{direction="received",side="downstream"}"#,
            15.0,
        ),
        (
            r#"imapgate_bytes_total{direction="sent",side="upstream"}"#,
            15.0,
        ),
        (
            r#"imapgate_bytes_total{direction="sent",side="downstream"}"#,
            0.0,
        ),
        (
            r#"imapgate_upstream_connect_duration_seconds_count{upstream="default"}"#,
            1.0,
        ),
        (
            r#"imapgate_upstream_connect_failures_total{cause="connect",upstream="default"}"#,
            1.0,
        ),
        (
            r#"imapgate_upstream_connect_failures_total{cause="tls",upstream="archive"}"#,
            1.0,
        ),
        (
            r#"imapgate_upstream_connect_failures_total{cause="timeout",upstream="added-later"}"#,
            1.0,
        ),
        (r#"imapgate_limit_rejections_total{kind="line"}"#, 1.0),
        (r#"imapgate_limit_rejections_total{kind="literal"}"#, 0.0),
        (r#"imapgate_limit_rejections_total{kind="new_kind"}"#, 1.0),
        (
            &format!(
                r#"imapgate_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        ),
    ];
    for (series, v) in expect {
        assert_eq!(sample(&text, series), Some(v), "{series} in:\n{text}");
    }
    assert!(
        !text.contains("side=\"internal\""),
        "no internal side series"
    );
}

#[test]
fn every_family_is_prefixed_and_listed() {
    let m = metrics();
    let names = m.family_names();
    assert!(names.len() >= 14, "{names:?}");
    assert!(
        names.iter().all(|n| n.starts_with("imapgate_")),
        "{names:?}"
    );
    assert!(names.contains(&"imapgate_command_duration_seconds".to_string()));
}
