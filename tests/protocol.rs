//! Byte-level protocol tests through the proxy with the raw client: the proxy's own pre-login
//! dialogue, every login form, capability filtering, COMPRESS refusal, pipelining, literals,
//! IDLE, STARTTLS and LOGOUT.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::raw::{contains, first_literal, is_tagged, quote, status_of};
use common::*;
use tokio::net::TcpStream;

fn caps_of(line: &[u8]) -> String {
    String::from_utf8_lossy(line).to_string()
}

/// The proxy answers the pre-login commands itself: it works with no upstream at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_and_prelogin_commands_are_answered_by_the_proxy() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default().unreachable_upstream());
    let mut c = Raw::new(proxy.connect_tls().await);
    let greeting = c.line().await;
    assert_starts(&greeting, "* OK [CAPABILITY ");
    let g = caps_of(&greeting);
    for cap in ["IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "LITERAL+", "ID"] {
        assert!(g.split([' ', ']']).any(|w| w == cap), "{cap} missing: {g}");
    }
    assert!(!g.contains("STARTTLS"), "STARTTLS offered over TLS: {g}");
    assert!(!g.contains("LOGINDISABLED"), "{g}");
    assert!(g.ends_with("\r\n"));

    let r = c.cmd("a1", "CAPABILITY").await;
    assert_eq!(r.len(), 2, "{}", show(&r.concat()));
    assert_starts(&r[0], "* CAPABILITY IMAP4rev1");
    assert!(caps_of(&r[0]).contains("AUTH=PLAIN"));
    assert_starts(&r[1], "a1 OK");

    let r = c.cmd("a2", "NOOP").await;
    assert_eq!(r.len(), 1);
    assert_starts(&r[0], "a2 OK");

    let r = c
        .cmd("a3", "ID (\"name\" \"imapgate-tests\" \"version\" \"1\")")
        .await;
    assert_eq!(r.len(), 2, "{}", show(&r.concat()));
    assert_starts(&r[0], "* ID (");
    assert!(contains(&r[0], b"\"name\" \"imapgate\""), "{}", show(&r[0]));
    assert_starts(&r[1], "a3 OK");

    let r = c.cmd("a4", "ID NIL").await;
    assert_starts(r.last().unwrap(), "a4 OK");

    // Lower-case command names are commands too.
    let r = c.cmd("a5", "capability").await;
    assert_starts(r.last().unwrap(), "a5 OK");

    let r = c.cmd("a6", "LOGOUT").await;
    assert_starts(&r[0], "* BYE");
    assert_starts(&r[1], "a6 OK");
    assert_eq!(c.read_to_close().await, b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_quoted_strings() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    // carol's password has spaces; logging in changes nothing in her mailboxes.
    let pw = dovecot.info.users["carol"].clone();
    assert!(pw.contains(' '));
    let mut c = proxy.raw_tls().await;
    let r = c
        .cmd("a", &format!("LOGIN {} {}", quote("carol"), quote(&pw)))
        .await;
    assert_eq!(r.len(), 1, "{}", show(&r.concat()));
    assert_starts(&r[0], "a OK [CAPABILITY IMAP4rev1");
    let r = c.ok("b", "NOOP").await;
    assert_starts(r.last().unwrap(), "b OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_synchronizing_literals() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.raw_tls().await;
    c.send(format!("a LOGIN {{{}}}\r\n", user.len())).await;
    let plus = c.line().await;
    assert_starts(&plus, "+ ");
    c.send(format!("{user} {{{}}}\r\n", pw.len())).await;
    let plus = c.line().await;
    assert_starts(&plus, "+ ");
    c.send(format!("{pw}\r\n")).await;
    let r = c.tagged("a").await;
    assert_eq!(r.len(), 1, "{}", show(&r.concat()));
    assert_starts(&r[0], "a OK");
    c.ok("b", "SELECT INBOX").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_non_synchronizing_literals() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.raw_tls().await;
    c.send(format!(
        "a LOGIN {{{}+}}\r\n{user} {{{}+}}\r\n{pw}\r\n",
        user.len(),
        pw.len()
    ))
    .await;
    let r = c.tagged("a").await;
    assert_eq!(
        r.len(),
        1,
        "no continuation expected: {}",
        show(&r.concat())
    );
    assert_starts(&r[0], "a OK");
    c.ok("b", "NOOP").await;
}

fn plain_ir(user: &str, pw: &str) -> String {
    B64.encode(format!("\0{user}\0{pw}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticate_plain_with_initial_response() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.raw_tls().await;
    let r = c
        .cmd("a", &format!("AUTHENTICATE PLAIN {}", plain_ir(&user, &pw)))
        .await;
    assert_eq!(r.len(), 1, "{}", show(&r.concat()));
    assert_starts(&r[0], "a OK");
    c.ok("b", "SELECT INBOX").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticate_plain_with_continuation_and_cancel() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.raw_tls().await;

    // Cancelled with "*": tagged BAD, and the connection stays usable.
    c.send("a AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.line().await, b"+ \r\n");
    c.send("*\r\n").await;
    let r = c.tagged("a").await;
    assert_eq!(r.len(), 1);
    assert_eq!(status_of(&r[0]), "BAD", "{}", show(&r[0]));

    // Invalid base64: BAD.
    c.send("b AUTHENTICATE PLAIN\r\n").await;
    assert_starts(&c.line().await, "+");
    c.send("!!!not base64!!!\r\n").await;
    let r = c.tagged("b").await;
    assert_eq!(status_of(&r[0]), "BAD", "{}", show(&r[0]));

    // Unknown mechanism: NO.
    let r = c.cmd("c", "AUTHENTICATE X-UNKNOWN-MECH").await;
    assert_eq!(r.len(), 1);
    assert_eq!(status_of(&r[0]), "NO", "{}", show(&r[0]));

    // The real thing, with the response after the continuation.
    c.send("d AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.line().await, b"+ \r\n");
    c.send(format!("{}\r\n", plain_ir(&user, &pw))).await;
    let r = c.tagged("d").await;
    assert_starts(r.last().unwrap(), "d OK");
    c.ok("e", "NOOP").await;
}

/// A wrong password gets Dovecot's own tagged NO, byte for byte after the tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_authenticationfailed_as_dovecot_says_it() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, _) = dovecot.take_user();

    let mut direct = Raw::new(TcpStream::connect(dovecot.imap_addr()).await.unwrap());
    direct.line().await;
    let r = direct
        .cmd("x", &format!("LOGIN {} \"wrong\"", quote(&user)))
        .await;
    let dovecot_says = r.last().unwrap()[2..].to_vec();
    assert!(
        dovecot_says.starts_with(b"NO [AUTHENTICATIONFAILED]"),
        "{}",
        show(&dovecot_says)
    );

    let mut c = proxy.raw_tls().await;
    let r = c
        .cmd("x", &format!("LOGIN {} \"wrong\"", quote(&user)))
        .await;
    assert_eq!(r.len(), 1, "{}", show(&r.concat()));
    assert_eq!(show(&r[0][2..]), show(&dovecot_says));

    let r = c
        .cmd(
            "y",
            &format!("AUTHENTICATE PLAIN {}", plain_ir(&user, "wrong")),
        )
        .await;
    assert_starts(r.last().unwrap(), "y NO [AUTHENTICATIONFAILED]");
}

/// Dovecot offers COMPRESS=DEFLATE after login; the proxy never passes it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_login_capabilities_never_contain_compress() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();

    // The premise: Dovecot itself does offer it.
    let mut direct = Raw::new(TcpStream::connect(dovecot.imap_addr()).await.unwrap());
    direct.line().await;
    let ok = direct.login(&user, &pw).await;
    let r = direct.ok("c", "CAPABILITY").await;
    assert!(
        contains(&ok, b"COMPRESS=DEFLATE") || contains(&r[0], b"COMPRESS=DEFLATE"),
        "Dovecot does not offer COMPRESS: {}",
        show(&r[0])
    );

    let mut c = proxy.raw_tls().await;
    let ok = c.login(&user, &pw).await;
    assert!(contains(&ok, b"[CAPABILITY IMAP4rev1"), "{}", show(&ok));
    assert!(!contains(&ok, b"COMPRESS"), "{}", show(&ok));
    assert!(contains(&ok, b"IDLE"), "{}", show(&ok));
    let r = c.ok("c", "CAPABILITY").await;
    assert_starts(&r[0], "* CAPABILITY ");
    assert!(!contains(&r[0], b"COMPRESS"), "{}", show(&r[0]));
    assert!(contains(&r[0], b"MOVE"), "{}", show(&r[0]));

    // Also when the capability list rides on a tagged OK of another command: ENABLE and
    // friends do not, but a second CAPABILITY after SELECT must stay filtered.
    c.ok("d", "SELECT INBOX").await;
    let r = c.ok("e", "capability").await;
    assert!(!contains(&r.concat(), b"COMPRESS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compress_after_login_is_refused_and_the_session_goes_on() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;
    let r = c.cmd("z", "COMPRESS DEFLATE").await;
    assert_eq!(r.len(), 1, "{}", show(&r.concat()));
    assert_eq!(status_of(&r[0]), "BAD", "{}", show(&r[0]));
    // Still uncompressed and in step.
    c.ok("y", "NOOP").await;
    let r = c.ok("x", "SELECT INBOX").await;
    assert!(
        r.iter().any(|m| m == b"* 11 EXISTS\r\n"),
        "{}",
        show(&r.concat())
    );
    // Pipelined between other commands: every tag is answered once (the local BAD may come
    // before p1's completion: commands may complete in any order).
    c.send("p1 NOOP\r\np2 COMPRESS DEFLATE\r\np3 NOOP\r\n")
        .await;
    let mut tags = Vec::new();
    while tags.len() < 3 {
        let m = c.message().await;
        if !m.starts_with(b"* ") {
            tags.push(String::from_utf8_lossy(&m[..2]).to_string());
            let want = if m.starts_with(b"p2") { "BAD" } else { "OK" };
            assert_eq!(status_of(&m), want, "{}", show(&m));
        }
    }
    tags.sort();
    assert_eq!(tags, ["p1", "p2", "p3"]);
    c.ok("p4", "NOOP").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_all_answered_with_their_tags() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.raw_tls().await;
    // Commands pipelined right behind the LOGIN, in the same write.
    c.send(format!(
        "l LOGIN {} {}\r\np1 SELECT INBOX\r\np2 FETCH 1:3 (UID FLAGS)\r\np3 NOOP\r\n\
         p4 UID SEARCH ALL\r\np5 CAPABILITY\r\np6 FETCH 2 BODY.PEEK[HEADER.FIELDS (SUBJECT)]\r\n\
         p7 NOOP\r\n",
        quote(&user),
        quote(&pw)
    ))
    .await;
    // Dovecot runs independent pipelined commands concurrently, so completions may come in
    // any order (RFC 9051 5.5): read until all eight tags were answered, each once.
    let mut r = Vec::new();
    let mut tags: Vec<String> = Vec::new();
    while tags.len() < 8 {
        let m = c.message().await;
        if !m.starts_with(b"* ") {
            let t = &m[..m.iter().position(|&b| b == b' ').unwrap()];
            tags.push(String::from_utf8_lossy(t).into());
        }
        r.push(m);
    }
    assert_eq!(
        tags[0],
        "l",
        "the LOGIN completes first: {}",
        show(&r.concat())
    );
    let tagged: Vec<&Vec<u8>> = r.iter().filter(|m| !m.starts_with(b"* ")).collect();
    tags.sort();
    assert_eq!(tags, ["l", "p1", "p2", "p3", "p4", "p5", "p6", "p7"]);
    assert!(c.drain_for(Duration::from_millis(200)).await.is_empty());
    for m in &tagged {
        assert_eq!(status_of(m), "OK", "{}", show(m));
    }
    let all = r.concat();
    assert!(contains(&all, b"* 11 EXISTS"));
    assert!(
        contains(&all, b"* SEARCH 1 2 3 4 5 6 7 8 9 10 11"),
        "{}",
        show(&all)
    );
    assert_eq!(r.iter().filter(|m| contains(m, b" FETCH (")).count(), 4);
}

fn appenduid(ok: &[u8]) -> u32 {
    let s = String::from_utf8_lossy(ok);
    let at = s
        .find("[APPENDUID ")
        .unwrap_or_else(|| panic!("no APPENDUID: {s}"));
    let rest = &s[at + 11..];
    let end = rest.find(']').unwrap();
    rest[..end].split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_with_sync_and_non_sync_literals() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;

    let m1 = make_message("sync-append", 2000);
    c.send(format!("a1 APPEND INBOX {{{}}}\r\n", m1.len()))
        .await;
    let before = c.continuation().await;
    assert_eq!(before.len(), 1, "{}", show(&before.concat()));
    c.send(&m1).await;
    c.send("\r\n").await;
    let r = c.tagged("a1").await;
    assert_starts(r.last().unwrap(), "a1 OK");
    let uid1 = appenduid(r.last().unwrap());

    let m2 = make_message("nonsync-append", 3000);
    let mut cmd = format!("a2 APPEND INBOX (\\Seen) {{{}+}}\r\n", m2.len()).into_bytes();
    cmd.extend_from_slice(&m2);
    cmd.extend_from_slice(b"\r\n");
    c.send(&cmd).await;
    let r = c.tagged("a2").await;
    assert_eq!(
        r.len(),
        1,
        "no continuation expected: {}",
        show(&r.concat())
    );
    assert_starts(&r[0], "a2 OK");
    let uid2 = appenduid(&r[0]);

    let r = c.ok("s", "SELECT INBOX").await;
    assert!(
        r.iter().any(|m| m == b"* 13 EXISTS\r\n"),
        "{}",
        show(&r.concat())
    );
    for (uid, m) in [(uid1, &m1), (uid2, &m2)] {
        let r = c.ok("f", &format!("UID FETCH {uid} BODY.PEEK[]")).await;
        assert_eq!(first_literal(&r[0]), Some(&m[..]), "uid {uid}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_mib_append_with_literal_plus_comes_back_byte_identical() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;
    let msg = make_message("big-append", 5 * 1024 * 1024);
    let mut cmd = format!("a APPEND INBOX {{{}+}}\r\n", msg.len()).into_bytes();
    cmd.extend_from_slice(&msg);
    cmd.extend_from_slice(b"\r\n");
    c.timeout = Duration::from_secs(30);
    c.send(&cmd).await;
    let r = c.tagged("a").await;
    assert_eq!(r.len(), 1, "{}", show(&r.concat()));
    assert_starts(&r[0], "a OK");
    let uid = appenduid(&r[0]);
    c.ok("s", "SELECT INBOX").await;
    let r = c.ok("f", &format!("UID FETCH {uid} BODY.PEEK[]")).await;
    let body = first_literal(&r[0]).expect("a literal");
    assert_eq!(body.len(), msg.len());
    assert!(body == &msg[..], "the message came back different");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_done() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("s", "SELECT INBOX").await;
    c.send("i IDLE\r\n").await;
    assert_starts(&c.line().await, "+ ");

    // Another session appends: the idling one hears of it.
    let mut other = proxy.login_tls(&user, &pw).await;
    let m = make_message("idle-wakeup", 500);
    let mut cmd = format!("a APPEND INBOX {{{}+}}\r\n", m.len()).into_bytes();
    cmd.extend_from_slice(&m);
    cmd.extend_from_slice(b"\r\n");
    other.send(&cmd).await;
    assert_starts(other.tagged("a").await.last().unwrap(), "a OK");

    loop {
        let m = c.message().await;
        if m == b"* 12 EXISTS\r\n" {
            break;
        }
        assert_starts(&m, "* ");
    }
    c.send("DONE\r\n").await;
    let r = c.tagged("i").await;
    assert_starts(r.last().unwrap(), "i OK");
    c.ok("n", "NOOP").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_on_the_plain_listener_then_login() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = Raw::new(TcpStream::connect(proxy.plain()).await.unwrap());
    let g = c.line().await;
    assert!(contains(&g, b" STARTTLS"), "{}", show(&g));
    let r = c.cmd("s", "STARTTLS").await;
    assert_eq!(r.len(), 1);
    assert_starts(&r[0], "s OK");
    let tls = tls_upgrade(c.into_inner(), &proxy.cert).await;
    let mut c = Raw::new(tls);
    let r = c.ok("c", "CAPABILITY").await;
    assert!(!contains(&r[0], b"STARTTLS"), "{}", show(&r[0]));
    assert!(contains(&r[0], b"AUTH=PLAIN"), "{}", show(&r[0]));
    // A second STARTTLS inside TLS is refused.
    let r = c.cmd("t", "STARTTLS").await;
    assert_eq!(status_of(&r[0]), "BAD", "{}", show(&r[0]));
    c.login(&user, &pw).await;
    c.ok("n", "SELECT INBOX").await;
}

/// Bytes a client pipelines behind STARTTLS arrive in cleartext, before TLS: they must not be
/// executed as if they had come through TLS (CVE-2011-0411 style injection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_pipelined_after_starttls_in_cleartext_are_not_executed() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = Raw::new(TcpStream::connect(proxy.plain()).await.unwrap());
    c.line().await;
    c.send(format!(
        "s STARTTLS\r\nx LOGIN {} {}\r\ny NOOP\r\n",
        quote(&user),
        quote(&pw)
    ))
    .await;
    let r = c.message().await;
    assert_starts(&r, "s OK");
    let tls = tls_upgrade(c.into_inner(), &proxy.cert).await;
    let mut c = Raw::new(tls);
    c.send("z CAPABILITY\r\n").await;
    let r = c.tagged("z").await;
    for m in &r {
        assert!(
            !is_tagged(m, "x") && !is_tagged(m, "y"),
            "injected command answered: {}",
            show(&r.concat())
        );
    }
    // Still not logged in: the pre-login capabilities, and SELECT is refused.
    assert!(contains(&r[0], b"AUTH=PLAIN"), "{}", show(&r[0]));
    let r = c.cmd("w", "SELECT INBOX").await;
    assert_eq!(status_of(r.last().unwrap()), "BAD", "{}", show(&r.concat()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_never_requires_starttls_before_login() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().env("IMAPGATE_AUTH__PLAINTEXT", "never"),
    );
    let (user, pw) = dovecot.take_user();
    let mut c = Raw::new(TcpStream::connect(proxy.plain()).await.unwrap());
    let g = c.line().await;
    assert!(contains(&g, b" STARTTLS"), "{}", show(&g));
    assert!(contains(&g, b" LOGINDISABLED"), "{}", show(&g));
    assert!(!contains(&g, b"AUTH="), "{}", show(&g));
    let r = c.ok("c", "CAPABILITY").await;
    assert!(contains(&r[0], b" LOGINDISABLED"), "{}", show(&r[0]));

    let r = c
        .cmd("a", &format!("LOGIN {} {}", quote(&user), quote(&pw)))
        .await;
    assert_eq!(r.len(), 1);
    assert_starts(&r[0], "a NO [PRIVACYREQUIRED]");
    let r = c
        .cmd("b", &format!("AUTHENTICATE PLAIN {}", plain_ir(&user, &pw)))
        .await;
    assert_starts(&r[0], "b NO [PRIVACYREQUIRED]");

    let r = c.cmd("s", "STARTTLS").await;
    assert_starts(&r[0], "s OK");
    let mut c = Raw::new(tls_upgrade(c.into_inner(), &proxy.cert).await);
    let r = c.ok("c", "CAPABILITY").await;
    assert!(!contains(&r[0], b"LOGINDISABLED"), "{}", show(&r[0]));
    assert!(contains(&r[0], b"AUTH=PLAIN"), "{}", show(&r[0]));
    c.login(&user, &pw).await;
    c.ok("n", "NOOP").await;

    // The implicit-TLS listener never says LOGINDISABLED.
    let mut t = proxy.raw_tls().await;
    let r = t.ok("c", "CAPABILITY").await;
    assert!(!contains(&r[0], b"LOGINDISABLED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_says_bye_then_ok_and_closes() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();

    // Before login (answered by the proxy).
    let mut c = proxy.raw_tls().await;
    let r = c.cmd("a", "LOGOUT").await;
    assert_eq!(r.len(), 2, "{}", show(&r.concat()));
    assert_starts(&r[0], "* BYE");
    assert_starts(&r[1], "a OK");
    assert_eq!(show(&c.read_to_close().await), "");

    // After login (Dovecot's answer, relayed).
    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("s", "SELECT INBOX").await;
    let r = c.cmd("b", "LOGOUT").await;
    assert_starts(&r[0], "* BYE");
    assert_starts(r.last().unwrap(), "b OK");
    assert_eq!(show(&c.read_to_close().await), "");

    // Same on the cleartext listener.
    let mut c = proxy.raw_plain().await;
    c.login(&user, &pw).await;
    let r = c.cmd("b", "LOGOUT").await;
    assert_starts(&r[0], "* BYE");
    assert_starts(r.last().unwrap(), "b OK");
    assert_eq!(show(&c.read_to_close().await), "");
}

/// Responses with literals (BODY[] of every seeded message, the 5 MiB one included) arrive
/// exactly as Dovecot sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_responses_are_byte_identical_to_dovecot() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let script = [
        "EXAMINE INBOX",
        "FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)",
        "FETCH 1:* BODY.PEEK[]",
        "UID FETCH 1:* (BODY.PEEK[HEADER] BODY.PEEK[TEXT]<0.100>)",
        "SEARCH SUBJECT \"message\"",
        "LIST \"\" \"*\"",
    ];
    async fn run<S>(c: &mut Raw<S>, script: &[&str]) -> Vec<Vec<u8>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut out = Vec::new();
        for (i, cmd) in script.iter().enumerate() {
            let mut r = c.ok(&format!("t{i}"), cmd).await;
            // Dovecot's timing in the tagged line differs between runs.
            r.pop();
            out.extend(r);
        }
        out
    }
    let mut direct = Raw::new(TcpStream::connect(dovecot.imap_addr()).await.unwrap());
    direct.line().await;
    direct.login(&user, &pw).await;
    direct.timeout = Duration::from_secs(30);
    // The first EXAMINE consumes \Recent; run once to settle, then compare fresh sessions.
    run(&mut direct, &script).await;
    let mut direct = Raw::new(TcpStream::connect(dovecot.imap_addr()).await.unwrap());
    direct.line().await;
    direct.login(&user, &pw).await;
    direct.timeout = Duration::from_secs(30);
    let want = run(&mut direct, &script).await;
    let mut c = proxy.login_tls(&user, &pw).await;
    c.timeout = Duration::from_secs(30);
    let got = run(&mut c, &script).await;
    if got.len() != want.len() {
        let short = |v: &Vec<Vec<u8>>| {
            v.iter()
                .map(|m| show(&m[..m.len().min(120)]))
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!("got:\n{}\n\nwant:\n{}", short(&got), short(&want));
    }
    for (g, w) in got.iter().zip(&want) {
        assert!(g == w, "differs:\n got {}\nwant {}", show(g), show(w));
    }
}

/// A short session through the proxy with the given upstream transport.
async fn session_over(mode: UpstreamMode) {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default().upstream(mode));
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.raw_tls().await;
    c.send(format!("l LOGIN {} {}\r\n", quote(&user), quote(&pw)))
        .await;
    let r = c.try_tagged("l").await;
    let r = match r {
        Ok(r) => r,
        Err(e) => panic!(
            "login failed ({e}): {}\n--- proxy log ---\n{}",
            c.tail(),
            tail(&proxy.stderr(), 20)
        ),
    };
    assert_starts(r.last().unwrap(), "l OK");
    assert!(!contains(r.last().unwrap(), b"STARTTLS"));
    let r = c.ok("s", "SELECT INBOX").await;
    assert!(
        r.iter().any(|m| m == b"* 11 EXISTS\r\n"),
        "{}",
        show(&r.concat())
    );
    let r = c.ok("f", "FETCH 4 BODY.PEEK[]").await;
    assert!(first_literal(&r[0]).unwrap().len() > 5_000_000);
    let r = c.ok("c", "CAPABILITY").await;
    assert!(!contains(&r[0], b"COMPRESS") && !contains(&r[0], b"STARTTLS"));
    c.cmd("z", "LOGOUT").await;
}

/// Upstream over implicit TLS (Dovecot's imaps port, verified with its CA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_implicit_tls() {
    session_over(UpstreamMode::Implicit).await;
}

/// Upstream over STARTTLS (Dovecot's imap port, verified with its CA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_starttls() {
    session_over(UpstreamMode::Starttls).await;
}

/// Upstream in cleartext (an explicit `--upstream-tls none`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cleartext() {
    session_over(UpstreamMode::None).await;
}

/// Many clients (`printf ... | nc`) close their sending side right after the last command.
/// Dovecot still answers everything it was sent; so must the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_client_still_gets_every_answer() {
    half_close(UpstreamMode::Default).await;
}

/// The same with TLS towards Dovecot. Dovecot over TLS drops buffered commands when it sees the
/// end of the stream (close_notify or FIN) instead of answering them, so passing the client's
/// half-close on is not enough there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_client_still_gets_every_answer_with_upstream_tls() {
    half_close(UpstreamMode::Implicit).await;
}

async fn half_close(mode: UpstreamMode) {
    use tokio::io::AsyncWriteExt;
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default().upstream(mode));
    let (user, pw) = dovecot.take_user();
    let script = format!(
        "a LOGIN {} {}\r\nb EXAMINE INBOX\r\nc FETCH 1:3 (FLAGS)\r\nd LOGOUT\r\n",
        quote(&user),
        quote(&pw)
    );

    // Dovecot itself, for reference.
    let mut direct = Raw::new(TcpStream::connect(dovecot.imap_addr()).await.unwrap());
    direct.line().await;
    direct.send(&script).await;
    direct.get_mut().shutdown().await.unwrap();
    let want = direct.read_to_close().await;
    assert!(contains(&want, b"\r\nd OK"), "{}", show(&want));

    // All in one write with the LOGIN (pre-login dialogue, then the relay).
    let mut c = proxy.raw_plain().await;
    c.send(&script).await;
    c.get_mut().shutdown().await.unwrap();
    let got = c.read_to_close().await;
    assert!(
        contains(&got, b"\r\nc OK") && contains(&got, b"\r\nd OK"),
        "after a half-close the proxy dropped answers: {}",
        show(&got)
    );

    // Logged in first, then commands and FIN (the relay alone).
    let mut c = proxy.raw_plain().await;
    c.login(&user, &pw).await;
    c.send("b EXAMINE INBOX\r\nc FETCH 1:3 (FLAGS)\r\nd LOGOUT\r\n")
        .await;
    c.get_mut().shutdown().await.unwrap();
    let got = c.read_to_close().await;
    assert!(
        contains(&got, b"\r\nc OK") && contains(&got, b"\r\nd OK"),
        "after a half-close the proxy dropped answers: {}",
        show(&got)
    );

    // Without LOGOUT, over TLS, with a big answer still streaming: all of it arrives, then
    // the session ends (Dovecot closes on the forwarded end of stream).
    let mut c = proxy.login_tls(&user, &pw).await;
    c.send("b EXAMINE INBOX\r\nc FETCH 4 BODY.PEEK[]\r\nd NOOP\r\n")
        .await;
    c.get_mut().shutdown().await.unwrap();
    let got = c.read_to_close().await;
    assert!(
        contains(&got, b"* 4 FETCH (BODY[] {7175020}") && contains(&got, b"\r\nd OK"),
        "after a half-close the proxy dropped answers: {}",
        show(&got[got.len().saturating_sub(300)..])
    );
    assert!(got.len() > 7_175_020);
}

/// MULTIAPPEND with synchronizing literals on continuation lines, then literal8 (BINARY) with
/// NUL bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiappend_and_binary_literals() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;
    let m1 = make_message("multi-1", 700);
    let m2 = make_message("multi-2", 900);
    c.send(format!("a APPEND INBOX (\\Seen) {{{}}}\r\n", m1.len()))
        .await;
    c.continuation().await;
    c.send(&m1).await;
    c.send(format!(" (\\Flagged) {{{}}}\r\n", m2.len())).await;
    c.continuation().await;
    c.send(&m2).await;
    c.send("\r\n").await;
    let r = c.tagged("a").await;
    assert_starts(r.last().unwrap(), "a OK");

    // BINARY: a literal8 with NULs (Dovecot announces BINARY).
    let mut m3 = make_message("binary", 300);
    m3.truncate(m3.len() - 2);
    m3.extend_from_slice(b"\0\0\x01binary\0\r\n");
    let mut cmd = format!("b APPEND INBOX ~{{{}+}}\r\n", m3.len()).into_bytes();
    cmd.extend_from_slice(&m3);
    cmd.extend_from_slice(b"\r\n");
    c.send(&cmd).await;
    let r = c.tagged("b").await;
    assert_starts(r.last().unwrap(), "b OK");

    let r = c.ok("s", "SELECT INBOX").await;
    assert!(
        r.iter().any(|m| m == b"* 14 EXISTS\r\n"),
        "{}",
        show(&r.concat())
    );
    let r = c.ok("f", "FETCH 12:13 BODY.PEEK[]").await;
    assert_eq!(first_literal(&r[0]), Some(&m1[..]));
    assert_eq!(first_literal(&r[1]), Some(&m2[..]));
    let r = c.ok("g", "FETCH 14 BINARY.PEEK[]").await;
    assert!(contains(&r[0], b"\0\0\x01binary\0"), "{}", show(&r[0]));
}

/// A synchronizing literal the server refuses (no `+`, a tagged NO instead): the proxy must not
/// wait for literal bytes that will never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sync_literal_leaves_the_session_in_step() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;
    c.send("a APPEND \"No Such Box\" {500}\r\n").await;
    let r = c.message().await;
    if r.starts_with(b"+") {
        // Dovecot asked for the literal after all: send it, the NO comes then.
        c.send(vec![b'x'; 500]).await;
        c.send("\r\n").await;
        let r = c.tagged("a").await;
        assert_eq!(status_of(r.last().unwrap()), "NO");
    } else {
        assert_starts(&r, "a NO");
    }
    c.ok("b", "NOOP").await;
    c.ok("c", "SELECT INBOX").await;

    // After login the proxy answers LOGIN itself; a sync literal in it gets no "+" either.
    c.send("x LOGIN {5}\r\n").await;
    let r = c.message().await;
    assert_eq!(status_of(&r), "BAD", "{}", show(&r));
    c.ok("y", "NOOP").await;
    let r = c.cmd("z", "STARTTLS").await;
    assert_eq!(status_of(&r[0]), "BAD", "{}", show(&r[0]));
    c.ok("w", "NOOP").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_done_pipelined_with_the_next_command() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("s", "SELECT INBOX").await;
    for round in 0..3 {
        c.send(format!("i{round} IDLE\r\n")).await;
        assert_starts(&c.line().await, "+ ");
        c.send(format!(
            "DONE\r\nn{round} NOOP\r\nf{round} FETCH 1 (FLAGS)\r\n"
        ))
        .await;
        // Dovecot may complete the NOOP after the FETCH: wait for all three tags.
        let mut all = Vec::new();
        while !["i", "n", "f"].iter().all(|t| {
            contains(&all, format!("\n{t}{round} OK").as_bytes())
                || all.starts_with(format!("{t}{round} OK").as_bytes())
        }) {
            all.extend(c.message().await);
        }
        assert!(
            contains(&all, format!("i{round} OK").as_bytes()),
            "{}",
            show(&all)
        );
        assert!(
            contains(&all, format!("n{round} OK").as_bytes()),
            "{}",
            show(&all)
        );
    }
}

/// Server lines longer than `limits.max_response_line` are streamed in parts: still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_response_lines_stream_unchanged() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().env("IMAPGATE_LIMITS__MAX_RESPONSE_LINE", 1024),
    );
    let (user, pw) = dovecot.take_user();
    let script = [
        "EXAMINE INBOX",
        "FETCH 1:* (ENVELOPE BODYSTRUCTURE)",
        "FETCH 6 (BODY.PEEK[HEADER] ENVELOPE)",
        "SEARCH ALL",
        "CAPABILITY",
    ];
    let mut direct = Raw::new(TcpStream::connect(dovecot.imap_addr()).await.unwrap());
    direct.line().await;
    direct.login(&user, &pw).await;
    direct.ok("w", "EXAMINE INBOX").await;
    let mut direct = Raw::new(TcpStream::connect(dovecot.imap_addr()).await.unwrap());
    direct.line().await;
    direct.login(&user, &pw).await;
    let mut c = proxy.login_tls(&user, &pw).await;
    let mut long = 0;
    for (i, cmd) in script.iter().enumerate() {
        let tag = format!("t{i}");
        let mut want = direct.ok(&tag, cmd).await;
        let mut got = c.ok(&tag, cmd).await;
        want.pop();
        got.pop();
        if *cmd == "CAPABILITY" {
            // The one difference allowed: no COMPRESS.
            let w = String::from_utf8_lossy(&want[0]).replace(" COMPRESS=DEFLATE", "");
            assert_eq!(String::from_utf8_lossy(&got[0]), w);
            continue;
        }
        long += want.iter().filter(|m| m.len() > 1024).count();
        assert_eq!(got.len(), want.len(), "{cmd}");
        for (g, w) in got.iter().zip(&want) {
            assert!(g == w, "{cmd}:\n got {}\nwant {}", show(g), show(w));
        }
    }
    assert!(long > 0, "no line over 1024 bytes was exercised");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_failed_logins_close_the_connection() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, _) = dovecot.take_user();
    let mut c = proxy.raw_tls().await;
    for i in 0..2 {
        let r = c
            .cmd(&format!("a{i}"), &format!("LOGIN {user} wrong"))
            .await;
        assert_starts(&r[0], &format!("a{i} NO"));
    }
    c.send(format!("a2 LOGIN {user} wrong\r\n")).await;
    let rest = c.read_to_close().await;
    assert!(rest.starts_with(b"a2 NO"), "{}", show(&rest));
    assert!(contains(&rest, b"\r\n* BYE"), "{}", show(&rest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_authenticated_session_is_logged_out_after_the_timeout() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().env("IMAPGATE_TIMEOUTS__AUTHENTICATED_SECS", 1),
    );
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("s", "SELECT INBOX").await;
    let start = std::time::Instant::now();
    let rest = c.read_to_close().await;
    assert!(rest.starts_with(b"* BYE"), "{}", show(&rest));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_turns_away_the_extra_client() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().env("IMAPGATE_LIMITS__MAX_CONNECTIONS", 2),
    );
    let (user, pw) = dovecot.take_user();
    let mut a = proxy.login_tls(&user, &pw).await;
    let mut b = proxy.raw_plain().await;
    // Every slot taken, one of them by a connection that has not logged in: it is dropped to
    // make room (as Dovecot's login processes do) and the newcomer is served.
    let mut c = proxy.raw_plain().await;
    let got = b.read_to_close().await;
    assert!(
        got.starts_with(b"* BYE [UNAVAILABLE] Connection queue full"),
        "{}",
        show(&got)
    );
    c.login(&user, &pw).await;
    // Now every slot is logged in: the extra client is turned away.
    let mut extra = Raw::new(TcpStream::connect(proxy.plain()).await.unwrap());
    let got = extra.read_to_close().await;
    assert!(got.starts_with(b"* BYE"), "{}", show(&got));
    let mut extra = Raw::new(TcpStream::connect(proxy.tls()).await.unwrap());
    extra.read_to_close().await;
    assert!(
        proxy
            .stderr()
            .contains("dropping the oldest connection not logged in")
    );
    a.ok("n", "NOOP").await;
    c.ok("n", "NOOP").await;
    drop(c);
    // The freed slot is usable again (the session ends asynchronously: retry briefly).
    let mut ok = false;
    for _ in 0..50 {
        let mut c = Raw::new(TcpStream::connect(proxy.plain()).await.unwrap());
        if let Ok(g) = c.try_line().await {
            if g.starts_with(b"* OK") {
                ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the slot never came back");
}

/// Every way a TLS session ends, the proxy closes TLS properly (close_notify), so a client can
/// tell a complete answer from a truncated connection (RFC 8446 6.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_end_with_close_notify() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default()
            .env("IMAPGATE_TIMEOUTS__PREAUTH_SECS", 1)
            .env("IMAPGATE_LIMITS__MAX_BAD_COMMANDS", 2)
            .env("IMAPGATE_AUTH__MAX_FAILURES", 1),
    );
    let (user, pw) = dovecot.take_user();
    let mut failures = Vec::new();
    for case in [
        "LOGOUT after login",
        "LOGOUT before login",
        "too many bad commands",
        "too many failed logins",
        "literal too large before login",
        "pre-login timeout",
    ] {
        let mut c = proxy.raw_tls().await;
        match case {
            "LOGOUT after login" => {
                c.login(&user, &pw).await;
                c.cmd("a", "LOGOUT").await;
            }
            "LOGOUT before login" => {
                c.cmd("a", "LOGOUT").await;
            }
            "too many bad commands" => c.send("a BLAH\r\nb BLAH\r\n").await,
            "too many failed logins" => c.send(format!("a LOGIN {user} wrong\r\n")).await,
            "literal too large before login" => c.send("a LOGIN {70000+}\r\n").await,
            _ => {}
        }
        if let Err((got, e)) = c.read_to_close_clean().await {
            failures.push(format!("{case}: {e} (after {})", show(&got)));
        }
    }
    assert!(
        failures.is_empty(),
        "closed without close_notify:\n{}",
        failures.join("\n")
    );
}

/// Thousands of pipelined commands with a small pipelining limit: the proxy throttles reading
/// but answers every one, in a session that keeps reading and writing at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_pipelining_under_a_small_pipelining_limit() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().env("IMAPGATE_LIMITS__MAX_PIPELINED", 4),
    );
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("s", "SELECT INBOX").await;
    let (r, mut w) = tokio::io::split(c.into_inner());
    let n = 3000;
    let writer = tokio::spawn(async move {
        let mut all = Vec::new();
        for i in 0..n {
            if i % 3 == 0 {
                all.extend_from_slice(format!("n{i} FETCH {} (FLAGS)\r\n", 1 + i % 11).as_bytes());
            } else {
                all.extend_from_slice(format!("n{i} NOOP\r\n").as_bytes());
            }
        }
        w.write_all(&all).await.unwrap();
        w.flush().await.unwrap();
        w
    });
    let mut lines = BufReader::new(r).lines();
    let mut seen = vec![false; n];
    let mut count = 0;
    while count < n {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("stalled")
            .unwrap()
            .expect("closed");
        if let Some(rest) = line.strip_prefix('n') {
            let (num, status) = rest.split_once(' ').unwrap();
            let i: usize = num.parse().unwrap();
            assert!(status.starts_with("OK"), "{line}");
            assert!(!seen[i], "n{i} answered twice");
            seen[i] = true;
            count += 1;
        }
    }
    writer.await.unwrap();
}

/// Passwords that need escaping or a literal (quotes, backslashes, braces, 8-bit bytes) reach
/// Dovecot intact whichever way the client sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_with_special_characters_reach_the_upstream_intact() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let ascii = br#"a"b\c {3} d%*"#;
    let eight_bit = "q\"uo\\te {5} \u{fc}!".as_bytes();
    let ascii_user = dovecot.add_user("esc", ascii);
    let utf8_user = dovecot.add_user("utf", eight_bit);
    let mut failures = Vec::new();
    for (user, pw) in [(&ascii_user, &ascii[..]), (&utf8_user, eight_bit)] {
        let mut ways: Vec<(&str, Vec<u8>)> = vec![
            ("LOGIN literals", {
                let mut v = format!(
                    "a LOGIN {{{}+}}\r\n{user} {{{}+}}\r\n",
                    user.len(),
                    pw.len()
                )
                .into_bytes();
                v.extend_from_slice(pw);
                v.extend_from_slice(b"\r\n");
                v
            }),
            ("AUTHENTICATE PLAIN", {
                let mut m = format!("\0{user}\0").into_bytes();
                m.extend_from_slice(pw);
                format!("a AUTHENTICATE PLAIN {}\r\n", B64.encode(m)).into_bytes()
            }),
        ];
        if pw.is_ascii() {
            let mut v = format!("a LOGIN {user} \"").into_bytes();
            for &b in pw {
                if b == b'"' || b == b'\\' {
                    v.push(b'\\');
                }
                v.push(b);
            }
            v.extend_from_slice(b"\"\r\n");
            ways.push(("LOGIN quoted", v));
        }
        for (how, bytes) in ways {
            let mut c = proxy.raw_tls().await;
            c.send(&bytes).await;
            let r = c.tagged("a").await;
            if status_of(r.last().unwrap()) != "OK" {
                failures.push(format!("{user} by {how}: {}", show(&r.concat())));
                continue;
            }
            c.ok("s", "SELECT INBOX").await;
        }
        // AUTHENTICATE LOGIN, step by step.
        let mut c = proxy.raw_tls().await;
        c.send("a AUTHENTICATE LOGIN\r\n").await;
        assert_starts(&c.line().await, "+ ");
        c.send(format!("{}\r\n", B64.encode(user))).await;
        assert_starts(&c.line().await, "+ ");
        c.send(format!("{}\r\n", B64.encode(pw))).await;
        let r = c.tagged("a").await;
        if status_of(r.last().unwrap()) != "OK" {
            failures.push(format!(
                "{user} by AUTHENTICATE LOGIN: {}",
                show(&r.concat())
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Many sessions at once, TLS and cleartext, each with its own little script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_sessions() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let tasks = (0..60).map(|i| {
        let (proxy, user, pw) = (&proxy, &user, &pw);
        async move {
            let script = |i: usize| {
                [
                    "EXAMINE INBOX".to_string(),
                    format!(
                        "FETCH {} (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
                        1 + i % 11
                    ),
                    format!("UID SEARCH UID {}", 1 + i % 11),
                    "NOOP".to_string(),
                ]
            };
            if i % 2 == 0 {
                let mut c = proxy.login_tls(user, pw).await;
                for (j, cmd) in script(i).iter().enumerate() {
                    c.ok(&format!("c{j}"), cmd).await;
                }
                c.cmd("z", "LOGOUT").await;
            } else {
                let mut c = proxy.raw_plain().await;
                c.login(user, pw).await;
                for (j, cmd) in script(i).iter().enumerate() {
                    let r = c.ok(&format!("c{j}"), cmd).await;
                    if j == 2 {
                        let want = format!("* SEARCH {}\r\n", 1 + i % 11);
                        assert_eq!(show(&r[0]), show(want.as_bytes()));
                    }
                }
                c.cmd("z", "LOGOUT").await;
            }
        }
    });
    futures::future::join_all(tasks).await;
    proxy.assert_no_panic();
}
