//! Commands hidden in bytes that only look like literals, through the proxy against Dovecot
//! after login: each hidden command must be classified (here: answered by the proxy's own rule
//! for COMPRESS / STARTTLS / LOGIN, whose texts Dovecot never uses) and never reach Dovecot, and
//! the session must go on working. The byte-level table, split at every byte, is in
//! `src/proto/framer_tests.rs` and `src/session/core_tests.rs`.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use common::raw::contains;
use common::*;

/// (what the client sends, the tag that carries the hidden command, the proxy's own answer).
const CASES: &[(&str, &str, &str)] = &[
    (
        "a SELECT \"{20+}\r\nc COMPRESS DEFLATE\r\n",
        "c",
        "c BAD COMPRESS is not available through this proxy.",
    ),
    (
        "a SELECT x{22+}\r\nc STARTTLS\r\n",
        "c",
        "c BAD STARTTLS is only valid before login.",
    ),
    (
        "a FETCH 1 BODY[]{17+}\r\nc LOGIN x y\r\n",
        "c",
        "c BAD Already logged in.",
    ),
    (
        "a NOOP {20+}\r\nc COMPRESS DEFLATE\r\n",
        "c",
        "c BAD COMPRESS is not available through this proxy.",
    ),
    (
        "a SELECT \"x\\\"{20+}\r\nc COMPRESS DEFLATE\r\n",
        "c",
        "c BAD COMPRESS is not available through this proxy.",
    ),
    (
        "a IDLE\r\nb SELECT {20+}\r\nc COMPRESS DEFLATE\r\n",
        "c",
        "c BAD COMPRESS is not available through this proxy.",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_commands_are_classified_and_never_reach_the_server() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    for (i, (bytes, tag, answer)) in CASES.iter().enumerate() {
        let mut c = proxy.login_tls(&user, &pw).await;
        c.send(bytes.as_bytes()).await;
        let got = c.tagged(tag).await.concat();
        assert!(
            contains(&got, answer.as_bytes()),
            "case {i}: {}",
            show(&got)
        );
        // The session is still in step with the server.
        c.ok("n", "NOOP").await;
        c.ok("z", "LOGOUT").await;
    }
    proxy.assert_no_panic();
}

/// A client that sends a synchronizing literal's bytes without waiting for the `+` (as some old
/// clients do): the bytes wait in the proxy until Dovecot's `+` and then go on, and the command
/// completes without the client sending anything more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literal_bytes_sent_before_the_continuation_are_relayed_after_it() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.login_tls(&user, &pw).await;
    let msg = "Subject: eager\r\n\r\nhi\r\n";
    c.send(format!("a APPEND INBOX {{{}}}\r\n{msg}\r\n", msg.len()))
        .await;
    let got = c.tagged("a").await.concat();
    assert!(contains(&got, b"a OK"), "{}", show(&got));
    c.ok("z", "LOGOUT").await;
    proxy.assert_no_panic();
}
