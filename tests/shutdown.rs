//! Graceful shutdown on SIGTERM: commands in flight complete, every session then gets `* BYE`
//! and is closed, new connections are refused, and the process exits 0 in time.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::raw::contains;
use common::*;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_append_finish_then_says_bye_to_everyone_and_exits_0() {
    let grace = 4;
    let dovecot = Dovecot::shared();
    let mut proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().env("IMAPGATE_TIMEOUTS__SHUTDOWN_GRACE_SECS", grace),
    );
    let (user, pw) = dovecot.take_user();

    // One session idling.
    let mut idler = proxy.login_tls(&user, &pw).await;
    idler.ok("s", "SELECT INBOX").await;
    idler.send("i IDLE\r\n").await;
    assert_starts(&idler.line().await, "+ ");

    // One session not logged in yet.
    let mut prelogin = proxy.raw_plain().await;

    // One session in the middle of a slow APPEND.
    let mut appender = proxy.login_tls(&user, &pw).await;
    let msg = make_message("slow-append-at-shutdown", 3 * 1024 * 1024);
    appender
        .send(format!("a APPEND INBOX {{{}}}\r\n", msg.len()))
        .await;
    appender.continuation().await;
    let chunks: Vec<&[u8]> = msg.chunks(64 * 1024).collect();
    let pause = Duration::from_millis(25);
    let mut signalled = None;
    for (i, chunk) in chunks.iter().enumerate() {
        appender.send(chunk).await;
        if i == 8 {
            proxy.sigterm();
            signalled = Some(Instant::now());
            // The others hear at once; the APPEND goes on meanwhile.
            let got = prelogin.read_to_close().await;
            assert_starts(&got, "* BYE");
            let got = idler.read_to_close().await;
            assert!(
                got.starts_with(b"* BYE") || contains(&got, b"\r\n* BYE"),
                "{}",
                show(&got)
            );
            // New connections are refused from now on.
            tokio::time::sleep(Duration::from_millis(200)).await;
            for addr in [proxy.tls(), proxy.plain()] {
                match TcpStream::connect(addr).await {
                    Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
                    Ok(tcp) => {
                        let mut c = Raw::new(tcp);
                        c.timeout = Duration::from_secs(2);
                        let got = c.read_to_close().await;
                        assert!(
                            !got.starts_with(b"* OK"),
                            "accepted after SIGTERM: {}",
                            show(&got)
                        );
                    }
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
    appender.send("\r\n").await;
    let signalled = signalled.unwrap();
    let r = appender.tagged("a").await;
    assert_starts(r.last().unwrap(), "a OK");
    let rest = appender.read_to_close().await;
    assert_starts(&rest, "* BYE");
    assert!(
        signalled.elapsed() < Duration::from_secs(grace),
        "the APPEND only finished after the grace period: the test is too slow"
    );

    let status = proxy.wait_exit(Duration::from_secs(grace + 5));
    assert!(status.success(), "exit status {status}");
    assert!(signalled.elapsed() < Duration::from_secs(grace + 5));
    proxy.assert_no_panic();

    // The APPEND really happened.
    let direct = tokio::net::TcpStream::connect(dovecot.imap_addr())
        .await
        .unwrap();
    let mut d = Raw::new(direct);
    d.line().await;
    d.login(&user, &pw).await;
    let r = d.ok("s", "SELECT INBOX").await;
    assert!(
        r.iter().any(|m| m == b"* 12 EXISTS\r\n"),
        "{}",
        show(&r.concat())
    );
}

/// A command that does not finish within the grace period does not keep the proxy alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_command_is_cut_when_the_grace_period_ends() {
    let grace = 2;
    let dovecot = Dovecot::shared();
    let mut proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().env("IMAPGATE_TIMEOUTS__SHUTDOWN_GRACE_SECS", grace),
    );
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;
    c.send("a APPEND INBOX {100000}\r\n").await;
    c.continuation().await;
    c.send(vec![b'x'; 1000]).await;
    let start = Instant::now();
    proxy.sigterm();
    let got = c.read_to_close().await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(grace * 1000 - 200) && took < Duration::from_secs(grace + 3),
        "closed after {took:?}"
    );
    assert!(
        got.is_empty() || got.starts_with(b"* BYE"),
        "{}",
        show(&got)
    );
    let status = proxy.wait_exit(Duration::from_secs(grace + 5));
    eprintln!("closed after {took:?}, exited after {:?}", start.elapsed());
    assert!(status.success(), "exit status {status}");
    proxy.assert_no_panic();
}

/// With no sessions at all the proxy exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_no_sessions_exits_promptly() {
    let dovecot = Dovecot::shared();
    let mut proxy = Proxy::start(&dovecot, ProxyOpts::default());
    // One finished session first.
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;
    c.cmd("z", "LOGOUT").await;
    c.read_to_close().await;
    let start = Instant::now();
    proxy.sigterm();
    let status = proxy.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "exit status {status}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

/// SIGTERM while a big FETCH streams to a slow reader: the response arrives whole, then BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_big_fetch_to_a_slow_reader() {
    use tokio::io::AsyncReadExt;
    let grace = 6;
    let dovecot = Dovecot::shared();
    let mut proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().env("IMAPGATE_TIMEOUTS__SHUTDOWN_GRACE_SECS", grace),
    );
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("s", "EXAMINE INBOX").await;
    c.send("f FETCH 4 BODY.PEEK[]\r\n").await;
    // Read slowly, by hand.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let mut signalled = false;
    let start = Instant::now();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), c.get_mut().read(&mut buf))
            .await
            .expect("read timed out");
        let n = match n {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        got.extend_from_slice(&buf[..n]);
        if !signalled && got.len() > 500_000 {
            proxy.sigterm();
            signalled = true;
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
        assert!(start.elapsed() < Duration::from_secs(grace + 5), "too slow");
    }
    assert!(signalled);
    let text_end = &got[got.len().saturating_sub(200)..];
    assert!(
        got.starts_with(b"* 4 FETCH (BODY[] {7175020}\r\n"),
        "{}",
        show(&got)
    );
    assert!(
        contains(text_end, b")\r\nf OK") && contains(text_end, b"\r\n* BYE"),
        "{}",
        show(text_end)
    );
    let at = got.windows(7).position(|w| w == b"\r\nf OK ").unwrap();
    assert_eq!(
        at,
        29 + 7_175_020 + 1,
        "the literal was not delivered whole"
    );
    let status = proxy.wait_exit(Duration::from_secs(grace + 5));
    assert!(status.success());
}

/// Sessions in the middle of a pre-login exchange (an AUTHENTICATE waiting for the client's
/// response) are told about the shutdown too, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reaches_a_client_inside_authenticate() {
    let grace = 1;
    let dovecot = Dovecot::shared();
    let mut proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().env("IMAPGATE_TIMEOUTS__SHUTDOWN_GRACE_SECS", grace),
    );
    let mut c = proxy.raw_tls().await;
    c.send("a AUTHENTICATE PLAIN\r\n").await;
    assert!(c.line().await.starts_with(b"+"));
    let start = Instant::now();
    proxy.sigterm();
    c.timeout = Duration::from_secs(8);
    let got = c.read_to_close().await;
    let took = start.elapsed();
    let status = proxy.wait_exit(Duration::from_secs(grace + 5));
    assert!(status.success());
    assert!(
        got.starts_with(b"* BYE") && took < Duration::from_secs(2),
        "after {took:?}: {}",
        show(&got)
    );
}
