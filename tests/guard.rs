//! Brute-force protection and per-client limits, end to end against a real Dovecot. Clients
//! connect from different loopback source addresses (127.0.0.2, 127.0.0.3, ...) so one can be
//! penalised while another is not.
//!
//! Test bed: Dovecot's own auth penalty is off (scripts/dovecot.py: anvil-auth-penalty mode 0,
//! `auth_failure_delay = 0`) and the proxy does not forward client addresses, so every delay and
//! refusal seen here is the proxy's.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use common::raw::contains;
use common::*;
use tokio::net::TcpStream;

/// Small delays so the test runs fast; thresholds low enough to reach.
fn penalised() -> ProxyOpts {
    ProxyOpts::default()
        .env("IMAPGATE_AUTH_PENALTY__BASE_DELAY_MS", 50)
        .env("IMAPGATE_AUTH_PENALTY__MAX_DELAY_SECS", 1)
        .env("IMAPGATE_AUTH_PENALTY__MAX_FAILURES_PER_IP", 4)
        .env("IMAPGATE_AUTH_PENALTY__MAX_FAILURES_PER_USER", 3)
        .env("IMAPGATE_AUTH__MAX_FAILURES", 100)
        .env("RUST_LOG", "info")
}

/// A cleartext client from `src`, greeting read.
async fn client_from(proxy: &Proxy, src: &str) -> Raw<TcpStream> {
    let mut c = Raw::new(tcp_from(src, proxy.plain()).await);
    let g = c.line().await;
    assert!(g.starts_with(b"* OK"), "greeting: {}", show(&g));
    c
}

/// Log lines of the proxy that mention `client=SRC:`.
fn lines_of(proxy: &Proxy, src: &str, what: &str) -> Vec<String> {
    let needle = format!("client={src}:");
    proxy
        .stderr()
        .lines()
        .filter(|l| l.contains(&needle) && l.contains(what))
        .map(str::to_string)
        .collect()
}

/// The `wait_ms` values of the "login delayed" lines of `src`, in order.
fn waits_of(proxy: &Proxy, src: &str) -> Vec<u64> {
    lines_of(proxy, src, "login delayed")
        .iter()
        .filter_map(|l| {
            let at = l.find("wait_ms=")? + "wait_ms=".len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_across_reconnects_delay_then_refuse_one_address_only() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, penalised());
    let (user, pw) = dovecot.take_user();
    let attacker = "127.0.0.2";
    // Each attempt on a fresh connection: reconnecting does not reset anything.
    for i in 0..7 {
        let mut c = client_from(&proxy, attacker).await;
        let r = c.cmd("a", &format!("LOGIN {user}-x{i} wrong")).await;
        assert_starts(&r[0], "a NO [AUTHENTICATIONFAILED]");
    }
    // Four failures reached the upstream; then the address was over its threshold and its
    // attempts were answered without contacting the upstream (same answer, after the delay).
    assert_eq!(
        lines_of(&proxy, attacker, "upstream refused login").len(),
        4
    );
    assert_eq!(
        lines_of(&proxy, attacker, "too many failures on record").len(),
        3
    );
    // The delay doubled from 50 ms with each failure, capped at 1 s.
    assert_eq!(waits_of(&proxy, attacker), [50, 100, 200, 400, 800, 1000]);
    // Even the right password is refused from that address now.
    let mut c = client_from(&proxy, attacker).await;
    let r = c.cmd("a", &format!("LOGIN {user} {pw}")).await;
    assert_starts(&r[0], "a NO [AUTHENTICATIONFAILED]");

    // Another address is not affected: no delay, and the login works.
    let mut c = client_from(&proxy, "127.0.0.3").await;
    c.login(&user, &pw).await;
    c.ok("b", "NOOP").await;
    assert!(waits_of(&proxy, "127.0.0.3").is_empty());
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_attacked_from_many_addresses_is_locked_and_success_clears_it() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(
        &dovecot,
        penalised().env("IMAPGATE_AUTH_PENALTY__REFUSE_WITH", "unavailable"),
    );
    let (victim, victim_pw) = dovecot.take_user();
    let (other, other_pw) = dovecot.take_user();
    // Two failures, then a success: the user's count is cleared ...
    for src in ["127.0.0.11", "127.0.0.12"] {
        let mut c = client_from(&proxy, src).await;
        let r = c.cmd("a", &format!("LOGIN {victim} wrong")).await;
        assert_starts(&r[0], "a NO");
    }
    let mut c = client_from(&proxy, "127.0.0.13").await;
    c.login(&victim, &victim_pw).await;
    drop(c);
    // ... so two more failures do not reach the threshold of three.
    for src in ["127.0.0.14", "127.0.0.15"] {
        let mut c = client_from(&proxy, src).await;
        let r = c.cmd("a", &format!("LOGIN {victim} wrong")).await;
        assert_starts(&r[0], "a NO [AUTHENTICATIONFAILED]");
    }
    let mut c = client_from(&proxy, "127.0.0.16").await;
    let r = c.cmd("a", &format!("LOGIN {victim} wrong")).await;
    assert_starts(&r[0], "a NO [AUTHENTICATIONFAILED]");
    // Three failures from three addresses: refused from a fresh address, case folded, with the
    // configured answer, and the upstream never sees it.
    let refused_before = proxy.stderr().matches("upstream refused login").count();
    let mut c = client_from(&proxy, "127.0.0.17").await;
    let r = c
        .cmd("a", &format!("LOGIN {} {victim_pw}", victim.to_uppercase()))
        .await;
    assert_starts(&r[0], "a NO [UNAVAILABLE]");
    assert_eq!(
        proxy.stderr().matches("upstream refused login").count(),
        refused_before
    );
    // Another user from the same address is fine.
    c.login(&other, &other_pw).await;
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_connection_limits() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default()
            .env("IMAPGATE_LIMITS__MAX_CONNECTIONS_PER_IP", 3)
            .env("IMAPGATE_LIMITS__MAX_PREAUTH_PER_IP", 2),
    );
    let (user, pw) = dovecot.take_user();
    let src = "127.0.0.21";
    let mut a = client_from(&proxy, src).await;
    let _b = client_from(&proxy, src).await;
    // Two waiting for login: a third is refused ...
    let mut c = Raw::new(tcp_from(src, proxy.plain()).await);
    let got = c.read_to_close().await;
    assert!(
        got.starts_with(b"* BYE [UNAVAILABLE] Too many connections from your address"),
        "{}",
        show(&got)
    );
    // ... until one logs in; then the total (3) is the limit.
    a.login(&user, &pw).await;
    let _c = client_from(&proxy, src).await;
    let mut d = Raw::new(tcp_from(src, proxy.plain()).await);
    assert!(d.read_to_close().await.starts_with(b"* BYE [UNAVAILABLE]"));
    // Another address is not affected.
    let mut e = client_from(&proxy, "127.0.0.22").await;
    e.login(&user, &pw).await;
    a.ok("n", "NOOP").await;
    assert!(proxy.stderr().contains("preauth_per_ip"));
    assert!(proxy.stderr().contains("connections_per_ip"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_rate_per_address() {
    let dovecot = Dovecot::shared();
    // One new connection a minute after a burst of three: the fourth is refused at once.
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default()
            .env("IMAPGATE_LIMITS__ACCEPT_RATE_PER_IP", 1)
            .env("IMAPGATE_LIMITS__ACCEPT_BURST_PER_IP", 3),
    );
    let src = "127.0.0.31";
    let mut kept = Vec::new();
    for _ in 0..3 {
        let mut c = client_from(&proxy, src).await;
        c.ok("n", "NOOP").await;
        kept.push(c);
    }
    let mut c = Raw::new(tcp_from(src, proxy.plain()).await);
    let got = c.read_to_close().await;
    assert!(
        contains(&got, b"Too many connections from your address"),
        "{}",
        show(&got)
    );
    let mut other = client_from(&proxy, "127.0.0.32").await;
    other.ok("n", "NOOP").await;
    assert!(
        proxy.stderr().contains("limit=\"accept_rate\"")
            || proxy.stderr().contains("limit=accept_rate")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_during_its_delay_frees_its_slot() {
    let dovecot = Dovecot::shared();
    // A 10 s delay after the first failure, and one pre-login connection per address.
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default()
            .env("IMAPGATE_AUTH_PENALTY__BASE_DELAY_MS", 10_000)
            .env("IMAPGATE_AUTH_PENALTY__MAX_DELAY_SECS", 10)
            .env("IMAPGATE_LIMITS__MAX_PREAUTH_PER_IP", 1),
    );
    let (user, _) = dovecot.take_user();
    let src = "127.0.0.41";
    let mut c = client_from(&proxy, src).await;
    let r = c.cmd("a", &format!("LOGIN {user} wrong")).await;
    assert_starts(&r[0], "a NO");
    c.send(format!("b LOGIN {user} wrong\r\n")).await;
    proxy.wait_log("login delayed", 1).await;
    drop(c);
    // The proxy notices the hang-up during the delay: the address's one pre-login slot is free
    // again long before the 10 s are over.
    let started = std::time::Instant::now();
    loop {
        let mut again = Raw::new(tcp_from(src, proxy.plain()).await);
        let g = again.line().await;
        if g.starts_with(b"* OK") {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "slot still held: {}",
            show(&g)
        );
        tokio::task::yield_now().await;
    }
    proxy.assert_no_panic();
}
