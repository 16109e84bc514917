//! The phase seam end to end, in process: the proxy's server with test stages in front of a real
//! Dovecot, driven by a raw client. Covers routing to a named upstream at `on_login`, a command
//! that waits for its stage without blocking other sessions (pipelined commands behind it wait
//! their turn), refusals, the session identity stages see (user, upstream, mailbox, UIDVALIDITY,
//! read-only, enabled extensions), and the `on_close` summary.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::raw::{contains, find};
use common::{Dovecot, Raw, closed_port, show};
use imapgate::config::{Config, PlaintextAuth, UpstreamConfig, UpstreamTls};
use imapgate::phases::{
    Command, CommandDecision, CommandSet, Enabled, LoginDecision, LoginRequest, Phases,
    SessionInfo, Stages, Summary, Verdict,
};
use imapgate::proto::command::CommandName;
use imapgate::proto::response::Status;
use imapgate::session::Context;
use imapgate::upstreams::Upstreams;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// What `on_close` reported: user, upstream, commands, client bytes in, ending.
type Closed = (String, String, u64, u64, String);

/// Routes every login to the upstream named `real`, parks `SELECT Slow` until released,
/// refuses `DELETE`, and records what it sees.
#[derive(Default)]
struct TestStage {
    /// Released to let a parked SELECT go on.
    release: Arc<Notify>,
    /// Facts seen, in order.
    seen: Mutex<Vec<String>>,
    /// SessionInfo at each command.
    infos: Mutex<Vec<SessionInfo>>,
    /// Summaries at close: (user, upstream, commands, client bytes in, ending).
    closed: Mutex<Vec<Closed>>,
}

impl Phases for TestStage {
    fn name(&self) -> &'static str {
        "test"
    }

    fn on_login(&self, _: &SessionInfo, login: &LoginRequest<'_>) -> Verdict<LoginDecision> {
        self.seen.lock().unwrap().push(format!(
            "login {} {} via {}",
            String::from_utf8_lossy(login.user.unwrap_or_default()),
            login.mechanism,
            login.upstream
        ));
        Verdict::Now(LoginDecision::Rewrite {
            upstream: Some("real".into()),
            credentials: None,
        })
    }

    fn whole_commands(&self) -> CommandSet {
        CommandSet::of(&[CommandName::Select])
    }

    fn on_command(&self, session: &SessionInfo, cmd: &Command<'_>) -> Verdict<CommandDecision> {
        self.infos.lock().unwrap().push(session.clone());
        if cmd.name == CommandName::Select && contains(cmd.line, b"Slow") {
            let release = self.release.clone();
            return Verdict::Wait(Box::pin(async move {
                release.notified().await;
                CommandDecision::Refuse {
                    status: Status::No,
                    code: Some("NONEXISTENT".into()),
                    text: "No such mailbox.".into(),
                }
            }));
        }
        if cmd.name == CommandName::Select && cmd.message.is_some_and(|m| contains(m, b"Hidden")) {
            return Verdict::Now(CommandDecision::Refuse {
                status: Status::No,
                code: Some("NONEXISTENT".into()),
                text: "No such mailbox.".into(),
            });
        }
        if cmd.name == CommandName::Delete {
            return Verdict::Now(CommandDecision::Refuse {
                status: Status::No,
                code: Some("NOPERM".into()),
                text: "Not allowed.".into(),
            });
        }
        Verdict::Now(CommandDecision::Forward)
    }

    fn on_close(&self, s: &Summary<'_>) {
        let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
        self.closed.lock().unwrap().push((
            text(s.info.user.as_deref()),
            s.info.upstream.as_deref().unwrap_or_default().to_string(),
            s.commands,
            s.client_in,
            s.ending.to_string(),
        ));
    }
}

/// A proxy server in this process; returns its cleartext listener's address.
async fn serve(dovecot: &Dovecot, stage: Arc<TestStage>) -> std::net::SocketAddr {
    // The default upstream is unreachable: only routing can make a login work.
    let mut config = Config {
        upstream: UpstreamConfig {
            address: format!("127.0.0.1:{}", closed_port()),
            tls: UpstreamTls::None,
            ..UpstreamConfig::default()
        },
        ..Config::default()
    };
    config.upstreams = BTreeMap::from([(
        "real".to_string(),
        UpstreamConfig {
            address: dovecot.imap_addr(),
            tls: UpstreamTls::None,
            ..UpstreamConfig::default()
        },
    )]);
    config.listen.tls = Vec::new();
    config.listen.plain = vec!["127.0.0.1:0".parse().unwrap()];
    config.auth.plaintext = PlaintextAuth::Loopback;
    config.validate().unwrap();
    let server_tls = imapgate::tls::server_config(&config.tls).unwrap();
    let upstreams = Upstreams::new(&config).unwrap();
    let stages = Stages::new(vec![stage]);
    let ctx = Arc::new(Context::new(config, server_tls.config, upstreams, stages));
    let listeners = imapgate::server::bind(&ctx).await.unwrap();
    let addr = listeners[0].local_addr().unwrap();
    tokio::spawn(imapgate::server::run(
        tokio::sync::watch::channel(ctx).1,
        listeners,
        std::future::pending(),
    ));
    addr
}

async fn connect(addr: std::net::SocketAddr) -> Raw<TcpStream> {
    let mut c = Raw::new(TcpStream::connect(addr).await.unwrap());
    let greeting = c.line().await;
    assert!(greeting.starts_with(b"* OK"), "{}", show(&greeting));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_parking_refusals_identity_and_summary() {
    let dovecot = Dovecot::shared();
    let (user, pw) = dovecot.take_user();
    let stage = Arc::new(TestStage::default());
    let addr = serve(&dovecot, stage.clone()).await;

    let mut a = connect(addr).await;
    a.login(&user, &pw).await;
    assert_eq!(
        stage.seen.lock().unwrap()[0],
        format!("login {user} LOGIN via default")
    );
    let status = a.ok("s1", "STATUS INBOX (UIDVALIDITY)").await;
    let status = String::from_utf8_lossy(&status[0]).to_string();
    let uidvalidity: u32 = status
        .split("UIDVALIDITY ")
        .nth(1)
        .and_then(|v| {
            v.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{status}"));

    // A parked SELECT holds back the NOOP pipelined behind it; the other session goes on.
    a.send("p1 SELECT Slow\r\np2 NOOP\r\n").await;
    let mut b = connect(addr).await;
    b.login(&user, &pw).await;
    b.ok("b1", "NOOP").await;
    b.ok("b2", "LOGOUT").await;
    stage.release.notify_one();
    let answers = a.tagged("p2").await;
    let all = answers.concat();
    let p1 = find(&all, b"p1 NO [NONEXISTENT]").expect("p1 refused");
    let p2 = find(&all, b"p2 OK").expect("p2 answered");
    assert!(p1 < p2, "answers in order: {}", show(&all));

    // A refused command never reaches Dovecot; identity follows the exchange.
    a.ok("e1", "ENABLE CONDSTORE").await;
    let r = a.cmd("d1", "DELETE INBOX").await;
    assert!(contains(r.last().unwrap(), b"d1 NO [NOPERM]"));
    // A mailbox name sent as a literal: the proxy gives the +, the stage reads the whole
    // command, and an allowed one reaches Dovecot in one piece.
    a.send("h1 SELECT {6}\r\n").await;
    a.continuation().await;
    a.send("Hidden\r\n").await;
    let r = a.tagged("h1").await;
    assert!(
        contains(r.last().unwrap(), b"h1 NO [NONEXISTENT]"),
        "{}",
        show(&r.concat())
    );
    a.send("h2 SELECT {5}\r\n").await;
    a.continuation().await;
    a.send("INBOX\r\n").await;
    let r = a.tagged("h2").await;
    assert!(
        contains(r.last().unwrap(), b"h2 OK"),
        "{}",
        show(&r.concat())
    );
    a.ok("x1", "EXAMINE INBOX").await;
    a.ok("n1", "NOOP").await;
    let info = stage.infos.lock().unwrap().last().unwrap().clone();
    assert_eq!(info.user.as_deref(), Some(user.as_bytes()));
    assert_eq!(info.upstream.as_deref(), Some("real"));
    let selected = info.selected.expect("selected");
    assert_eq!(selected.name, b"INBOX");
    assert_eq!(selected.uidvalidity, Some(uidvalidity));
    assert!(selected.read_only);
    assert!(info.enabled.contains(Enabled::CONDSTORE));
    a.ok("z", "LOGOUT").await;
    drop(a);

    // on_close: both sessions, with their user, upstream and counts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stage.closed.lock().unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sessions not closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed = stage.closed.lock().unwrap().clone();
    let a_summary = closed.iter().find(|c| c.2 > 3).expect("session a");
    assert_eq!(
        (a_summary.0.as_str(), a_summary.1.as_str()),
        (user.as_str(), "real")
    );
    assert_eq!(a_summary.2, 10, "{closed:?}");
    assert!(a_summary.3 > 50);
    // LOGOUT's OK reached the client; whether the client or the upstream closed first is a race.
    assert!(
        ["logout", "client closed"].contains(&a_summary.4.as_str()),
        "{closed:?}"
    );
}
