//! Hostile and broken clients: over-long lines, over-large literals, garbage, silence, abrupt
//! disconnects at every point of a session, TLS garbage, an unreachable upstream. The proxy must
//! answer as documented, keep other sessions unaffected, keep accepting, and never panic.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::raw::{contains, quote, status_of};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const MAX_LINE: usize = 4096;
const MAX_LITERAL: usize = 100_000;
const PREAUTH_LINE: usize = 2048;

fn limited() -> ProxyOpts {
    ProxyOpts::default()
        .env("IMAPGATE_LIMITS__MAX_LINE", MAX_LINE)
        .env("IMAPGATE_LIMITS__MAX_LITERAL", MAX_LITERAL)
        .env("IMAPGATE_LIMITS__MAX_PREAUTH_LINE", PREAUTH_LINE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_line_gets_bye_before_login_and_bad_after() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, limited());
    let (user, pw) = dovecot.take_user();
    let long = "x".repeat(MAX_LINE + 100);
    let huge = "y".repeat(1024 * 1024);

    // Before login (the proxy's own dialogue), a line over the pre-login limit ends the
    // connection with `* BYE`, as Dovecot's login process does, whether or not it is terminated.
    let mut c = proxy.raw_tls().await;
    c.ok("a0", "NOOP").await;
    c.send(format!("a1 NOOP {}\r\n", "x".repeat(PREAUTH_LINE + 10)))
        .await;
    let rest = c.read_to_close().await;
    assert!(
        rest.starts_with(b"* BYE Input buffer full"),
        "{}",
        show(&rest)
    );
    // 2 MiB with no line end: the answer comes while the client is still sending.
    let mut c = proxy.raw_plain().await;
    let _ = c
        .try_send(format!("a1 CAPABILITY {}", "y".repeat(2 * 1024 * 1024)))
        .await;
    let rest = c.read_to_close().await;
    assert!(
        rest.starts_with(b"* BYE Input buffer full"),
        "{}",
        show(&rest)
    );
    // Just under the pre-login limit is an ordinary (invalid) command.
    let mut c = proxy.raw_tls().await;
    let fits = "z".repeat(PREAUTH_LINE - 100);
    let r = c.cmd("a2", &format!("NOOP {fits}")).await;
    assert_starts(&r[0], "a2 BAD");
    c.ok("a3", "NOOP").await;

    // After login (the relay).
    c.login(&user, &pw).await;
    let r = c.cmd("b1", &format!("NOOP {long}")).await;
    assert_eq!(r.len(), 1, "{}", show(&r.concat()));
    assert_starts(&r[0], "b1 BAD");
    c.ok("b2", "SELECT INBOX").await;
    let r = c.cmd("b3", &format!("FETCH 1 {huge}")).await;
    assert_starts(&r[0], "b3 BAD");
    c.send(format!("b4 NOOP {long}\r\nb5 NOOP\r\n")).await;
    let r = c.tagged("b5").await;
    assert!(
        r.iter().any(|m| m.starts_with(b"b4 BAD")),
        "{}",
        show(&r.concat())
    );
    assert_starts(r.last().unwrap(), "b5 OK");
    // A line just under the limit is relayed (Dovecot answers it: BAD for the junk arguments).
    let fits = "z".repeat(MAX_LINE - 100);
    let r = c.cmd("b6", &format!("NOOP {fits}")).await;
    assert!(
        r.last().unwrap().starts_with(b"b6 "),
        "{}",
        show(&r.concat())
    );
    c.ok("b7", "FETCH 1 FLAGS").await;
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_literal_over_the_limit_gets_bad_without_continuation() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, limited());
    let (user, pw) = dovecot.take_user();

    // Before login the limit is 64 KiB whatever max_literal says.
    let mut c = proxy.raw_tls().await;
    c.send("a1 LOGIN {70000}\r\n").await;
    let r = c.message().await;
    assert_starts(&r, "a1 BAD");
    c.ok("a2", "NOOP").await;

    c.login(&user, &pw).await;
    c.send(format!("b1 APPEND INBOX {{{}}}\r\n", MAX_LITERAL + 1))
        .await;
    let r = c.message().await;
    assert_starts(&r, "b1 BAD");
    assert!(contains(&r, b"[TOOBIG]"), "{}", show(&r));
    c.ok("b2", "NOOP").await;
    // At the limit it is fine.
    let m = make_message("at-the-limit", MAX_LITERAL);
    c.send(format!("b3 APPEND INBOX {{{}}}\r\n", m.len())).await;
    c.continuation().await;
    c.send(&m).await;
    c.send("\r\n").await;
    assert_starts(c.tagged("b3").await.last().unwrap(), "b3 OK");
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_sync_literal_over_the_limit_after_login_gets_bye_and_close() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, limited());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("s", "SELECT INBOX").await;
    let mut cmd = format!("b1 APPEND INBOX {{{}+}}\r\n", MAX_LITERAL + 1).into_bytes();
    cmd.extend_from_slice(&vec![b'a'; 1000]);
    // The proxy may close while we are still writing: ignore write errors.
    let _ = c.try_send(&cmd).await;
    let rest = c.read_to_close().await;
    assert!(rest.starts_with(b"* BYE"), "{}", show(&rest));
    // Others are fine.
    let mut d = proxy.login_tls(&user, &pw).await;
    d.ok("n", "SELECT INBOX").await;
    proxy.assert_no_panic();
}

/// The same before login: the documented answer is `* BYE`, then close. Also for a login
/// message whose literals add up to more than the pre-login limit (64 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_sync_literal_over_the_limit_before_login_gets_bye_and_close() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, limited());
    let mut c = proxy.raw_tls().await;
    let mut cmd = b"a1 LOGIN {70000+}\r\n".to_vec();
    cmd.extend_from_slice(&vec![b'a'; 1000]);
    let _ = c.try_send(&cmd).await;
    let rest = c.read_to_close().await;
    assert!(
        rest.starts_with(b"* BYE"),
        "closed without * BYE, got {:?}",
        show(&rest)
    );

    let mut c = proxy.raw_plain().await;
    let mut cmd = b"a2 LOGIN {40000+}\r\n".to_vec();
    cmd.extend_from_slice(&vec![b'u'; 40000]);
    cmd.extend_from_slice(b" {40000+}\r\n");
    cmd.extend_from_slice(&vec![b'p'; 40000]);
    cmd.extend_from_slice(b"\r\n");
    let _ = c.try_send(&cmd).await;
    let rest = c.read_to_close().await;
    assert!(
        rest.starts_with(b"* BYE"),
        "closed without * BYE, got {:?}",
        show(&rest)
    );
    let mut c = proxy.raw_tls().await;
    c.ok("n", "NOOP").await;
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_login_gets_bad_answers_then_bye() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let max_bad = 10;

    // Garbage lines: each is a bad command.
    let mut rng = Rng::new(0x5eed);
    let mut c = proxy.raw_tls().await;
    let mut garbage = Vec::new();
    for _ in 0..(max_bad + 5) {
        let n = 1 + rng.below(200);
        let line: Vec<u8> = rng
            .bytes(n)
            .into_iter()
            .map(|b| {
                if b == b'\r' || b == b'\n' || b == b'{' {
                    b'#'
                } else {
                    b
                }
            })
            .collect();
        garbage.extend_from_slice(&line);
        garbage.extend_from_slice(b"\r\n");
    }
    let _ = c.try_send(&garbage).await;
    let all = c.read_to_close().await;
    let lines: Vec<&[u8]> = all.split_inclusive(|&b| b == b'\n').collect();
    let bads = lines.iter().filter(|l| status_of(l) == "BAD").count();
    assert_eq!(bads, max_bad, "{}", show(&all));
    assert!(
        lines.last().unwrap().starts_with(b"* BYE"),
        "{}",
        show(&all)
    );
    for l in &lines {
        assert!(
            status_of(l) == "BAD" || l.starts_with(b"* BYE"),
            "unexpected: {}",
            show(l)
        );
    }

    // Completely random bytes (any value, any length), many connections: each ends closed, the
    // proxy keeps serving.
    for seed in 1..=24u64 {
        let mut rng = Rng::new(seed * 7919);
        let mut c = if seed % 2 == 0 {
            let s = Raw::new(proxy.connect_tls().await);
            Box::new(s) as Box<dyn Closer>
        } else {
            Box::new(Raw::new(TcpStream::connect(proxy.plain()).await.unwrap()))
        };
        let bytes = rng.bytes(20_000);
        c.blast_and_close(bytes).await;
    }
    let mut c = proxy.raw_tls().await;
    c.ok("z", "NOOP").await;
    proxy.assert_no_panic();
}

/// Object-safe helper over raw clients of either stream type.
trait Closer: Send {
    fn blast_and_close<'a>(
        &'a mut self,
        bytes: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
}

impl<S> Closer for Raw<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    fn blast_and_close<'a>(
        &'a mut self,
        bytes: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let _ = self.try_send(&bytes).await;
            // Random bytes may announce a literal and leave the proxy waiting: then the client
            // gives up, which must be just as harmless.
            let _ = tokio::time::timeout(Duration::from_secs(3), async {
                let _ = self.drain_for(Duration::from_secs(3)).await;
            })
            .await;
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_after_the_preauth_timeout() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default()
            .env("IMAPGATE_TIMEOUTS__PREAUTH_SECS", 1)
            .env("IMAPGATE_TLS__HANDSHAKE_TIMEOUT_SECS", 1),
    );
    let silent = async {
        let start = Instant::now();
        let mut c = proxy.raw_tls().await;
        let rest = c.read_to_close().await;
        let took = start.elapsed();
        assert!(rest.starts_with(b"* BYE"), "{}", show(&rest));
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{took:?}"
        );
    };
    let plain = async {
        let mut c = proxy.raw_plain().await;
        let rest = c.read_to_close().await;
        assert!(rest.starts_with(b"* BYE"), "{}", show(&rest));
    };
    // The deadline is for logging in, not for silence: a client that chats is closed too.
    let chatty = async {
        let start = Instant::now();
        let mut c = proxy.raw_tls().await;
        loop {
            if c.try_send("n NOOP\r\n").await.is_err() {
                break;
            }
            match c.try_message().await {
                Ok(m) if m.starts_with(b"n OK") => {}
                Ok(m) => {
                    assert!(m.starts_with(b"* BYE"), "{}", show(&m));
                    break;
                }
                Err(_) => break,
            }
            assert!(start.elapsed() < Duration::from_secs(4), "never closed");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(start.elapsed() < Duration::from_secs(4));
    };
    // A TCP connection to the TLS port that never starts the handshake.
    let no_handshake = async {
        let start = Instant::now();
        let mut c = Raw::new(TcpStream::connect(proxy.tls()).await.unwrap());
        let rest = c.read_to_close().await;
        assert!(rest.is_empty(), "{}", show(&rest));
        assert!(start.elapsed() < Duration::from_secs(4));
    };
    tokio::join!(silent, plain, chatty, no_handshake);
    proxy.assert_no_panic();
}

/// A scripted session, cut by the client after every prefix: a second session is never
/// disturbed and the proxy keeps accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_at_any_offset_never_affects_another_session() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();

    let mut keeper = proxy.login_tls(&user, &pw).await;
    keeper.ok("k0", "SELECT INBOX").await;

    let appended = make_message("cut-append", 300);
    let mut script = Vec::new();
    script.extend_from_slice(b"a CAPABILITY\r\nb ID (\"name\" \"cutter\")\r\n");
    script.extend_from_slice(
        format!(
            "c LOGIN {{{}}}\r\n{user} {{{}}}\r\n{pw}\r\n",
            user.len(),
            pw.len()
        )
        .as_bytes(),
    );
    let after_login = script.len();
    script.extend_from_slice(b"d SELECT INBOX\r\n");
    script.extend_from_slice(format!("e APPEND INBOX {{{}+}}\r\n", appended.len()).as_bytes());
    script.extend_from_slice(&appended);
    script.extend_from_slice(b"\r\nf FETCH 1:3 (FLAGS BODY.PEEK[HEADER])\r\ng NOOP\r\n");

    let mut offsets: Vec<usize> = (0..=after_login + 2).collect();
    offsets.extend((after_login + 3..=script.len()).step_by(9));
    let mut rng = Rng::new(42);
    for (i, &cut) in offsets.iter().enumerate() {
        let tcp = TcpStream::connect(if i % 3 == 0 {
            proxy.tls()
        } else {
            proxy.plain()
        })
        .await
        .unwrap();
        tcp.set_nodelay(true).unwrap();
        let linger_zero = rng.below(2) == 0;
        if linger_zero {
            // Close with a reset instead of a FIN.
            #[allow(deprecated)]
            tcp.set_linger(Some(Duration::ZERO)).unwrap();
        }
        if i % 3 == 0 {
            let mut c = Raw::new(tls_upgrade(tcp, &proxy.cert).await);
            let _ = c.try_send(&script[..cut]).await;
            if rng.below(2) == 0 {
                c.drain_for(Duration::from_millis(5)).await;
            }
            let _ = c.get_mut().shutdown().await;
        } else {
            let mut c = Raw::new(tcp);
            let _ = c.try_send(&script[..cut]).await;
            if rng.below(2) == 0 {
                c.drain_for(Duration::from_millis(5)).await;
            }
        }
        if i % 10 == 0 {
            keeper.ok(&format!("k{i}"), "NOOP").await;
        }
    }
    let r = keeper.ok("kf", "FETCH 1 (FLAGS)").await;
    assert!(r[0].starts_with(b"* 1 FETCH"), "{}", show(&r.concat()));

    // The proxy still accepts and logs in.
    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("x", "SELECT INBOX").await;
    let mut p = proxy.raw_plain().await;
    p.login(&user, &pw).await;
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_garbage_is_closed_and_the_proxy_goes_on() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut rng = Rng::new(7);
    let inputs: Vec<Vec<u8>> = vec![
        b"a1 LOGIN user pass\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        // A TLS record header announcing a handshake, then junk.
        [&[0x16, 0x03, 0x01, 0x02, 0x00][..], &rng.bytes(512)].concat(),
        rng.bytes(4096),
        vec![0u8; 10],
    ];
    for input in inputs {
        let mut c = Raw::new(TcpStream::connect(proxy.tls()).await.unwrap());
        let _ = c.try_send(&input).await;
        let got = c.read_to_close().await;
        assert!(
            !contains(&got, b"* OK"),
            "an IMAP greeting in cleartext: {}",
            show(&got)
        );
    }
    // STARTTLS, then garbage instead of a handshake.
    let mut c = Raw::new(TcpStream::connect(proxy.plain()).await.unwrap());
    c.line().await;
    c.ok("s", "STARTTLS").await;
    let _ = c.try_send(rng.bytes(300)).await;
    c.read_to_close().await;

    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("n", "NOOP").await;
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_gives_bye_unavailable_after_login() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default().unreachable_upstream());
    let mut c = proxy.raw_tls().await;
    c.send(format!("a LOGIN {} {}\r\n", quote("user1"), quote("pw")))
        .await;
    let rest = c.read_to_close().await;
    assert!(rest.starts_with(b"* BYE [UNAVAILABLE]"), "{}", show(&rest));

    let mut c = proxy.raw_plain().await;
    c.send("b AUTHENTICATE PLAIN AHVzZXIxAHB3\r\n").await;
    let rest = c.read_to_close().await;
    assert!(rest.starts_with(b"* BYE [UNAVAILABLE]"), "{}", show(&rest));

    // Pre-login commands still work meanwhile.
    let mut c = proxy.raw_tls().await;
    c.ok("n", "NOOP").await;
    proxy.assert_no_panic();
}

/// The pre-login timeout also covers a client that stops in the middle of an AUTHENTICATE
/// exchange (after the server's "+"), or the connection would be held for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_silent_inside_authenticate_is_closed_after_the_preauth_timeout() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().env("IMAPGATE_TIMEOUTS__PREAUTH_SECS", 1),
    );
    let stall = |first: &'static str, answers: &'static [&'static str]| {
        let proxy = &proxy;
        async move {
            let start = Instant::now();
            let mut c = proxy.raw_tls().await;
            c.timeout = Duration::from_secs(3);
            c.send(first).await;
            assert!(c.line().await.starts_with(b"+"));
            for a in answers {
                c.send(a).await;
                assert!(c.line().await.starts_with(b"+"));
            }
            let got = c.try_message().await;
            let took = start.elapsed();
            match got {
                Ok(m) => assert!(m.starts_with(b"* BYE"), "{first}: {}", show(&m)),
                Err(e) => panic!("{first}: no BYE after {took:?}: {e}"),
            }
            assert!(took < Duration::from_secs(4), "{first}: {took:?}");
        }
    };
    tokio::join!(
        stall("a AUTHENTICATE PLAIN\r\n", &[]),
        stall("b AUTHENTICATE LOGIN\r\n", &["dXNlcjE=\r\n"]),
    );
    proxy.assert_no_panic();
}

/// A client that resets its connection while a big response streams to it: the proxy drops the
/// session (and its upstream) and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reset_during_a_big_fetch() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut keeper = proxy.login_tls(&user, &pw).await;
    keeper.ok("k", "EXAMINE INBOX").await;
    for i in 0..6 {
        let tcp = TcpStream::connect(if i % 2 == 0 {
            proxy.tls()
        } else {
            proxy.plain()
        })
        .await
        .unwrap();
        #[allow(deprecated)]
        tcp.set_linger(Some(Duration::ZERO)).unwrap();
        if i % 2 == 0 {
            let mut c = Raw::new(tls_upgrade(tcp, &proxy.cert).await);
            c.line().await;
            c.login(&user, &pw).await;
            c.ok("s", "EXAMINE INBOX").await;
            c.send("f FETCH 4 BODY.PEEK[]\r\n").await;
            c.exact(20_000 * (i + 1)).await;
        } else {
            let mut c = Raw::new(tcp);
            c.line().await;
            c.login(&user, &pw).await;
            c.ok("s", "EXAMINE INBOX").await;
            c.send("f FETCH 4 BODY.PEEK[]\r\n").await;
            c.exact(20_000 * (i + 1)).await;
        }
        keeper.ok(&format!("k{i}"), "NOOP").await;
    }
    let r = keeper.ok("kf", "FETCH 4 RFC822.SIZE").await;
    assert!(contains(&r[0], b"RFC822.SIZE 7175020"));
    proxy.assert_no_panic();
}

/// A client that sends commands but never reads the answers cannot pin a pre-login session past
/// the pre-auth timeout either (the proxy blocks writing to it, and must still give up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_is_closed_after_the_preauth_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().env("IMAPGATE_TIMEOUTS__PREAUTH_SECS", 1),
    );
    let n = 200_000;
    // A small receive buffer keeps what the kernel can hold for us small (autotuning off).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let tcp = socket.connect(proxy.plain()).await.unwrap();
    let (mut r, mut w) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let cmds = b"a CAPABILITY\r\n".repeat(n);
        // The proxy stops reading when it cannot write: the write may never finish.
        let _ = tokio::time::timeout(Duration::from_secs(20), w.write_all(&cmds)).await;
        w
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Now read everything that comes, until the close.
    let mut total = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, r.read(&mut buf)).await {
            Err(_) => panic!("never closed; {} bytes so far", total.len()),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(k)) => total.extend_from_slice(&buf[..k]),
        }
    }
    let _ = writer.await;
    let answered = total.windows(6).filter(|w| w == b"\r\na OK").count();
    assert!(
        answered < n / 4,
        "the proxy answered {answered} of {n} commands long after the pre-auth timeout"
    );
    proxy.assert_no_panic();
}
