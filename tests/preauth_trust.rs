//! What the proxy believes before login: a SASL answer is one line of base64 (decoded and encoded
//! again, never relayed as sent), ID fields said in cleartext are forgotten at STARTTLS, and a NUL
//! in a user name or password never leaves the proxy. Against a real Dovecot (which logs the ID
//! fields it receives: `imap_id_log = *` in scripts/dovecot.py).

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::*;

fn plain(user: &str, pw: &str) -> String {
    BASE64.encode(format!("\0{user}\0{pw}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sasl_answer_is_exactly_one_line_of_base64() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.raw_tls().await;
    // A literal is not base64: refused, and its "bytes" are the next command (a BAD here).
    for bad in [
        "{5}".to_string(),
        format!("{} ", plain(&user, &pw)),
        format!("{} extra", plain(&user, &pw)),
    ] {
        c.send("a AUTHENTICATE PLAIN\r\n").await;
        assert!(c.line().await.starts_with(b"+"));
        c.send(format!("{bad}\r\n")).await;
        let r = c.tagged("a").await;
        assert_starts(r.last().unwrap(), "a BAD");
    }
    // The answer and a pipelined command in one write: the second line is a command.
    c.send("b AUTHENTICATE PLAIN\r\n").await;
    assert!(c.line().await.starts_with(b"+"));
    c.send(format!("{}\r\nc NOOP\r\n", plain(&user, &pw))).await;
    let r = c.tagged("b").await;
    assert_starts(r.last().unwrap(), "b OK");
    c.ok("c", "NOOP").await;
    c.ok("d", "SELECT INBOX").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_id_is_forgotten_at_starttls() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let before = format!("before-tls-{}", std::process::id());
    let after = format!("after-tls-{}", std::process::id());
    let mut c = proxy.raw_plain().await;
    c.ok("i", &format!("ID (\"name\" \"{before}\")")).await;
    c.ok("s", "STARTTLS").await;
    let tls = tls_upgrade(c.into_inner(), &proxy.cert).await;
    let mut c = Raw::new(tls);
    c.ok("j", "NOOP").await;
    c.login(&user, &pw).await;
    c.ok("k", "NOOP").await;
    // Control: an ID said inside TLS does arrive (so the check below can fail).
    let mut d = proxy.raw_tls().await;
    d.ok("i", &format!("ID (\"name\" \"{after}\")")).await;
    d.login(&user, &pw).await;
    d.ok("k", "NOOP").await;
    let log_has = |needle: &str| {
        std::fs::read_to_string(dovecot.info.dir.join("log/dovecot.log"))
            .unwrap_or_default()
            .contains(needle)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !log_has(&after) {
        assert!(
            std::time::Instant::now() < deadline,
            "Dovecot never logged the ID"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!log_has(&before), "a cleartext ID reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_credentials_is_refused_before_the_upstream() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.raw_tls().await;
    // A literal password with a NUL in it.
    c.send(format!("a LOGIN {user} {{4+}}\r\nx\0yz\r\n")).await;
    let r = c.tagged("a").await;
    assert_starts(r.last().unwrap(), "a NO [AUTHENTICATIONFAILED]");
    // A PLAIN message with a NUL inside the user name is four fields: malformed.
    let four = BASE64.encode(format!("\0{user}\0x\0{pw}"));
    let r = c.cmd("b", &format!("AUTHENTICATE PLAIN {four}")).await;
    assert_starts(r.last().unwrap(), "b NO");
    assert!(!proxy.stderr().contains("upstream refused login"));
    c.login(&user, &pw).await;
}
