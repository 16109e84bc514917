//! TLS on both sides against a real Dovecot: upstream certificate pins (certificate and SPKI
//! digests computed with openssl), a self-signed `CA:TRUE` certificate made by `openssl req -x509`
//! as the upstream's `ca_file`, ALPN `imap` towards clients (required when offered) and towards
//! the upstream (offered), and the configuration checks for pins and cleartext upstreams.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::raw::{is_tagged, quote};
use common::*;
use imapgate::config::{Config, UpstreamConfig, UpstreamTls};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Runs a shell pipeline and returns its stdout, trimmed.
fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `AB:CD:...`, the SHA-256 fingerprint of a PEM certificate as openssl prints it.
fn openssl_fingerprint(cert: &Path) -> String {
    let out = sh(&format!(
        "openssl x509 -noout -fingerprint -sha256 -in '{}'",
        cert.display()
    ));
    // "sha256 Fingerprint=AB:CD:..." (OpenSSL 3) or "SHA256 Fingerprint=..." (1.1).
    out.rsplit('=').next().unwrap().to_string()
}

/// The hex SHA-256 of a PEM certificate's SubjectPublicKeyInfo, computed by openssl.
fn openssl_spki_digest(cert: &Path) -> String {
    let out = sh(&format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -r",
        cert.display()
    ));
    out.split_whitespace().next().unwrap().to_string()
}

/// A self-signed certificate made the way admins make one: `openssl req -x509`, whose default
/// extensions mark it `CA:TRUE`.
fn openssl_self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    sh(&format!(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
         -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
         -keyout '{}' -out '{}' 2>/dev/null",
        key.display(),
        cert.display()
    ));
    let text = sh(&format!(
        "openssl x509 -noout -text -in '{}'",
        cert.display()
    ));
    assert!(text.contains("CA:TRUE"), "not a CA certificate:\n{text}");
    (cert, key)
}

/// A proxy in front of `address` over `tls`, with `ca` as `--upstream-ca` and extra arguments.
fn proxy_to(
    dovecot: &Dovecot,
    address: String,
    tls: &'static str,
    ca: Option<PathBuf>,
    opts: ProxyOpts,
) -> Proxy {
    Proxy::start(
        dovecot,
        opts.upstream(UpstreamMode::Custom { address, tls, ca }),
    )
}

/// Logs in through the proxy and, when that worked, selects INBOX and logs out; the login's
/// responses (a `* BYE` alone when the upstream could not be set up).
async fn login(proxy: &Proxy, dovecot: &Dovecot) -> Vec<Vec<u8>> {
    let (user, pw) = dovecot.take_user();
    let mut c = proxy.raw_tls().await;
    c.send(format!("l LOGIN {} {}\r\n", quote(&user), quote(&pw)))
        .await;
    let first = c.message().await;
    if first.starts_with(b"* BYE") {
        return vec![first];
    }
    let mut all = vec![first];
    if !is_tagged(&all[0], "l") {
        all.extend(c.tagged("l").await);
    }
    if !all.last().is_some_and(|m| m.starts_with(b"l OK")) {
        return all;
    }
    let r = c.ok("s", "SELECT INBOX").await;
    assert!(
        r.iter().any(|m| m == b"* 11 EXISTS\r\n"),
        "{}",
        show(&r.concat())
    );
    c.cmd("z", "LOGOUT").await;
    all
}

fn assert_logged_in(r: &[Vec<u8>], proxy: &Proxy) {
    let last = r.last().unwrap();
    assert!(
        last.starts_with(b"l OK"),
        "{}\n--- proxy log ---\n{}",
        show(&r.concat()),
        tail(&proxy.stderr(), 20)
    );
}

fn assert_unavailable(r: &[Vec<u8>], proxy: &Proxy) {
    assert!(
        r[0].starts_with(b"* BYE [UNAVAILABLE]"),
        "{}\n--- proxy log ---\n{}",
        show(&r.concat()),
        tail(&proxy.stderr(), 20)
    );
}

/// A pin of the certificate's digest (as openssl prints it) or of its key replaces the CA: no
/// `--upstream-ca`, and Dovecot's self-signed certificate is trusted by pin alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_upstream_by_certificate_or_key_digest() {
    let dovecot = Dovecot::shared();
    let cert = dovecot.info.ca_file.clone();
    let fingerprint = openssl_fingerprint(&cert);
    let spki = format!("spki:{}", openssl_spki_digest(&cert));
    let wrong = format!("spki:{}", "00".repeat(32));

    // Implicit TLS, the openssl fingerprint among other pins.
    let opts =
        ProxyOpts::default().args(["--upstream-pin", &wrong, "--upstream-pin", &fingerprint]);
    let proxy = proxy_to(&dovecot, dovecot.imaps_addr(), "implicit", None, opts);
    assert_logged_in(&login(&proxy, &dovecot).await, &proxy);

    // STARTTLS, pinned by key, lowercase without colons would do too: use the config key.
    let opts = ProxyOpts::default().env("IMAPGATE_UPSTREAM__PIN_SHA256", format!("[\"{spki}\"]"));
    let proxy = proxy_to(&dovecot, dovecot.imap_addr(), "starttls", None, opts);
    assert_logged_in(&login(&proxy, &dovecot).await, &proxy);
}

/// A certificate that matches no pin fails the upstream connection as a TLS failure, and the
/// log names the fingerprint that was presented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_mismatch_is_a_tls_failure_naming_the_presented_fingerprint() {
    let dovecot = Dovecot::shared();
    let fingerprint = openssl_fingerprint(&dovecot.info.ca_file);
    let wrong = "AB:".repeat(31) + "AB";
    let opts = ProxyOpts::default()
        .admin()
        .args(["--upstream-pin", &wrong]);
    let proxy = proxy_to(&dovecot, dovecot.imaps_addr(), "implicit", None, opts);
    assert_unavailable(&login(&proxy, &dovecot).await, &proxy);
    let log = proxy.stderr();
    assert!(
        log.contains("matches no pin_sha256") && log.contains(&fingerprint),
        "{}",
        tail(&log, 20)
    );
    assert!(log.contains("TLS handshake"), "{}", tail(&log, 20));
    let metrics = http_get(proxy.admin(), "/metrics").await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("imapgate_upstream_connect_failures_total")
                && l.contains("cause=\"tls\"")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
}

/// A body of `GET path` from the admin listener.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut body)
        .await
        .unwrap();
    body
}

/// `openssl req -x509` makes a `CA:TRUE` certificate; served by Dovecot and given as the
/// proxy's CA file, it is accepted (as OpenSSL does), over implicit TLS and STARTTLS. Another
/// self-signed certificate in the CA file, or a server name the certificate does not carry,
/// is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_ca_certificate_as_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_self_signed(dir.path(), "server");
    let (other, _) = openssl_self_signed(dir.path(), "other");
    let dovecot = Dovecot::start_with_cert(Some((&cert, &key)));
    assert_eq!(
        openssl_fingerprint(&dovecot.info.ca_file),
        openssl_fingerprint(&cert)
    );

    for (address, mode) in [
        (dovecot.imaps_addr(), "implicit"),
        (dovecot.imap_addr(), "starttls"),
    ] {
        let proxy = proxy_to(
            &dovecot,
            address,
            mode,
            Some(cert.clone()),
            ProxyOpts::default(),
        );
        assert_logged_in(&login(&proxy, &dovecot).await, &proxy);
    }

    let proxy = proxy_to(
        &dovecot,
        dovecot.imaps_addr(),
        "implicit",
        Some(other),
        ProxyOpts::default(),
    );
    assert_unavailable(&login(&proxy, &dovecot).await, &proxy);
    assert!(
        proxy.stderr().contains("CaUsedAsEndEntity"),
        "{}",
        tail(&proxy.stderr(), 20)
    );

    let opts = ProxyOpts::default().env("IMAPGATE_UPSTREAM__SERVER_NAME", "imap.wrong.example");
    let proxy = proxy_to(&dovecot, dovecot.imaps_addr(), "implicit", Some(cert), opts);
    assert_unavailable(&login(&proxy, &dovecot).await, &proxy);
    assert!(
        proxy.stderr().contains("imap.wrong.example"),
        "{}",
        tail(&proxy.stderr(), 20)
    );
}

/// A rustls client configuration trusting the proxy's certificate and offering `alpn`.
fn client_with_alpn(ca: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut config = (*client_config(ca)).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The proxy's server side speaks ALPN `imap`: a client offering ALPN without `imap` is refused
/// in the handshake; offering `imap` (alone or among others) or no ALPN at all works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_offering_alpn_must_offer_imap() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    // (offered, negotiated); `None` with something offered means refused.
    type Case<'a> = (&'a [&'a [u8]], Option<&'a [u8]>);
    let cases: [Case; 4] = [
        (&[], None),
        (&[b"imap"], Some(b"imap")),
        (&[b"h2", b"imap"], Some(b"imap")),
        (&[b"h2", b"http/1.1"], None),
    ];
    for (offered, expect) in cases {
        let tcp = TcpStream::connect(proxy.tls()).await.unwrap();
        let result = client_with_alpn(&proxy.cert, offered)
            .connect(name.clone(), tcp)
            .await;
        if offered.is_empty() || expect.is_some() {
            let tls = result.unwrap_or_else(|e| panic!("ALPN {offered:?}: {e}"));
            assert_eq!(tls.get_ref().1.alpn_protocol(), expect, "ALPN {offered:?}");
            let mut c = common::Raw::new(tls);
            assert!(c.line().await.starts_with(b"* OK"));
        } else {
            let err = result.expect_err("a client without imap in its ALPN was served");
            assert!(
                err.to_string().contains("NoApplicationProtocol"),
                "ALPN {offered:?}: {err}"
            );
        }
    }
    // The proxy itself goes on serving.
    proxy.raw_tls().await;
}

/// Towards the upstream the proxy offers ALPN `imap`: a TLS server that requires it (a rustls
/// server with `alpn_protocols = ["imap"]`) sees it chosen in the proxy's start-up probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_is_offered_alpn_imap() {
    let dovecot = Dovecot::shared();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let generated = imapgate::tls::generate(&names).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, &generated.cert_pem).unwrap();
    std::fs::write(&key, &generated.key_pem).unwrap();
    let server = imapgate::config::TlsConfig {
        cert: Some(cert.clone()),
        key: Some(key),
        ..Default::default()
    };
    let server = imapgate::tls::server_config(&server).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server.config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();

    // The probe at start-up connects, reads the greeting and says LOGOUT.
    let upstream = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let mut tls = BufReader::new(tls);
        tls.write_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] fake\r\n")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        let mut line = String::new();
        tls.read_line(&mut line).await.unwrap();
        let tag = line.split(' ').next().unwrap_or("x").to_string();
        let _ = tls
            .write_all(format!("* BYE bye\r\n{tag} OK done\r\n").as_bytes())
            .await;
        (alpn, line)
    });
    let opts = ProxyOpts::default().args(["--upstream-pin", &generated_fingerprint(&cert)]);
    let proxy = proxy_to(&dovecot, address, "implicit", None, opts);
    let (alpn, line) = tokio::time::timeout(Duration::from_secs(20), upstream)
        .await
        .expect("the proxy never connected upstream")
        .unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"imap"[..]), "{}", proxy.stderr());
    assert!(line.ends_with("LOGOUT\r\n"), "{line:?}");
}

fn generated_fingerprint(cert: &Path) -> String {
    openssl_fingerprint(cert).replace(':', "").to_lowercase()
}

fn upstream(address: &str, tls: UpstreamTls) -> UpstreamConfig {
    UpstreamConfig {
        address: address.into(),
        tls,
        ..UpstreamConfig::default()
    }
}

fn config_error(config: &Config) -> String {
    config
        .validate()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// `tls = "none"` only to loopback unless `allow_cleartext_upstream`; pins must be digests,
/// and do not go with `ca_file` or without TLS. Each refusal names its key.
#[test]
fn configuration_checks_pins_and_cleartext_upstreams() {
    let with = |up: UpstreamConfig| Config {
        upstream: up,
        ..Config::default()
    };
    for host in [
        "127.0.0.1:143",
        "127.8.9.10:143",
        "localhost:143",
        "LOCALHOST:1",
        "[::1]:143",
    ] {
        assert_eq!(
            config_error(&with(upstream(host, UpstreamTls::None))),
            "",
            "{host}"
        );
    }
    let err = config_error(&with(upstream("192.0.2.7:143", UpstreamTls::None)));
    assert!(
        err.contains("`upstream.tls`") && err.contains("allow_cleartext_upstream"),
        "{err}"
    );
    let err = config_error(&with(upstream("imap.example.com:143", UpstreamTls::None)));
    assert!(err.contains("`upstream.tls`"), "{err}");
    let mut up = upstream("192.0.2.7:143", UpstreamTls::None);
    up.allow_cleartext_upstream = true;
    assert_eq!(config_error(&with(up)), "");
    assert_eq!(
        config_error(&with(upstream("192.0.2.7:143", UpstreamTls::Starttls))),
        ""
    );
    let mut named = with(upstream("127.0.0.1:143", UpstreamTls::None));
    named
        .upstreams
        .insert("eu".into(), upstream("192.0.2.8:143", UpstreamTls::None));
    let err = config_error(&named);
    assert!(
        err.contains("`upstreams.*.tls`") && err.contains("\"eu\""),
        "{err}"
    );

    let pinned = |pins: &[&str]| {
        let mut up = upstream("imap.example.com:993", UpstreamTls::Implicit);
        up.pin_sha256 = pins.iter().map(|p| p.to_string()).collect();
        up
    };
    let good = "AB:".repeat(31) + "AB";
    assert_eq!(config_error(&with(pinned(&[&good]))), "");
    let err = config_error(&with(pinned(&[&good, "AB:CD"])));
    assert!(
        err.contains("`upstream.pin_sha256`") && err.contains("\"AB:CD\""),
        "{err}"
    );
    let mut up = pinned(&[&good]);
    up.ca_file = Some("/etc/ssl/ca.pem".into());
    assert!(config_error(&with(up)).contains("ca_file"));
    let mut up = pinned(&[&good]);
    up.tls = UpstreamTls::None;
    up.address = "127.0.0.1:143".into();
    assert!(config_error(&with(up)).contains("`upstream.pin_sha256`"));
    let mut named = with(upstream("127.0.0.1:993", UpstreamTls::Implicit));
    named.upstreams.insert("eu".into(), pinned(&["spki:xyz"]));
    assert!(config_error(&named).contains("`upstreams.*.pin_sha256`"));
}

/// The same checks refuse `imapgate serve` before it binds anything, naming the key.
#[test]
fn serve_refuses_cleartext_to_a_remote_host_and_bad_pins() {
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--listen-tls", "127.0.0.1:0"])
            .args(args)
            .env_remove("IMAPGATE_UPSTREAM__ADDRESS")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&["--upstream", "192.0.2.7:143", "--upstream-tls", "none"]);
    assert!(
        err.contains("upstream.tls") && err.contains("allow_cleartext_upstream"),
        "{err}"
    );
    let err = run(&[
        "--upstream",
        "imap.example.com:993",
        "--upstream-pin",
        "sha1:00",
    ]);
    assert!(err.contains("upstream.pin_sha256"), "{err}");
}
