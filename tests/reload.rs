//! SIGHUP reloads the configuration file, the certificate and the upstreams without dropping a
//! session: a session in IDLE lives through reloads, a new connection sees the new certificate
//! and the new upstream, and a reload that fails validation keeps the running configuration.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;

use common::raw::quote;
use common::*;

/// Writes the config file: the upstream given, the certificate files of the proxy's directory.
fn write_config(path: &Path, upstream: &str, extra: &str) {
    std::fs::write(
        path,
        format!("[upstream]\naddress = \"{upstream}\"\ntls = \"none\"\n{extra}"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_certificate_and_upstream_and_keeps_sessions() {
    let dovecot = Dovecot::shared();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("imapgate.toml");
    write_config(&config, &dovecot.imap_addr(), "");
    let mut opts =
        ProxyOpts::default().args(["--config".to_string(), config.display().to_string()]);
    opts.upstream_flags = false;
    let proxy = Proxy::start(&dovecot, opts);
    let (user, pw) = dovecot.take_user();

    // A session in IDLE across everything below.
    let mut idle = proxy.login_tls(&user, &pw).await;
    idle.ok("s", "SELECT INBOX").await;
    idle.send("i IDLE\r\n").await;
    assert!(idle.line().await.starts_with(b"+"));

    // New certificate in place of the old one (same file names), then SIGHUP.
    let old_cert = dir.path().join("old.pem");
    std::fs::copy(&proxy.cert, &old_cert).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let (new_cert, new_key) = gen_cert(fresh.path());
    std::fs::copy(&new_cert, &proxy.cert).unwrap();
    std::fs::copy(&new_key, proxy.dir().join("proxy.key")).unwrap();
    proxy.sighup();
    proxy.wait_log("reload: configuration applied", 1).await;

    // A new connection sees the new certificate (trusting only the new one works) ...
    let mut c = Raw::new(tls_connect(proxy.tls(), &new_cert).await);
    assert!(c.line().await.starts_with(b"* OK"));
    c.login(&user, &pw).await;
    // ... and a client trusting only the old one fails its handshake.
    let tcp = tokio::net::TcpStream::connect(proxy.tls()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(&old_cert));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    assert!(connector.connect(name, tcp).await.is_err());

    // The upstream moves (to a port where nothing listens): new logins fail, the IDLE session
    // does not notice.
    write_config(&config, &format!("127.0.0.1:{}", closed_port()), "");
    proxy.sighup();
    proxy.wait_log("reload: configuration applied", 2).await;
    let mut c = proxy.raw_tls().await;
    c.send(format!("l LOGIN {} {}\r\n", quote(&user), quote(&pw)))
        .await;
    let got = c.read_to_close().await;
    assert!(got.starts_with(b"* BYE [UNAVAILABLE]"), "{}", show(&got));

    // A file that fails validation: refused, the running configuration stays.
    std::fs::write(&config, "[upstream]\naddress = \"no port\"\n").unwrap();
    proxy.sighup();
    proxy.wait_log("reload refused", 1).await;
    write_config(&config, &dovecot.imap_addr(), "[limits]\nmax_line = 100\n");
    proxy.sighup();
    proxy.wait_log("reload refused", 2).await;
    assert!(proxy.stderr().contains("max_line"));

    // Back to Dovecot: logins work again.
    write_config(&config, &dovecot.imap_addr(), "");
    proxy.sighup();
    proxy.wait_log("reload: configuration applied", 3).await;
    let mut c = Raw::new(tls_connect(proxy.tls(), &new_cert).await);
    assert!(c.line().await.starts_with(b"* OK"));
    c.login(&user, &pw).await;
    c.ok("n", "NOOP").await;

    // The IDLE session never noticed: it ends its IDLE and goes on.
    idle.send("DONE\r\n").await;
    let r = idle.tagged("i").await;
    assert_starts(r.last().unwrap(), "i OK");
    idle.ok("n", "NOOP").await;
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_audit_log_after_rotation() {
    let dovecot = Dovecot::shared();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let proxy = Proxy::start(
        &dovecot,
        ProxyOpts::default().args(["--audit-log".to_string(), audit.display().to_string()]),
    );
    let (user, pw) = dovecot.take_user();
    let logins = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .matches("\"audit\":\"login\"")
            .count()
    };
    let wait_for = |path: std::path::PathBuf, n: usize| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while logins(&path) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "no audit line in {path:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    proxy.login_tls(&user, &pw).await;
    wait_for(audit.clone(), 1).await;
    // Rotate as logrotate does: rename, then SIGHUP.
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&audit, &rotated).unwrap();
    proxy.sighup();
    // Without a config file the reload has nothing to change, and says so.
    proxy.wait_log("reload: configuration applied", 1).await;
    proxy.login_tls(&user, &pw).await;
    wait_for(audit.clone(), 1).await;
    assert_eq!(logins(&rotated), 1);
}
