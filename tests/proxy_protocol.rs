//! The PROXY protocol in front of the listeners (HAProxy `send-proxy` / `send-proxy-v2`): the
//! client's address is taken from the header, which decides the loopback rule for cleartext
//! passwords and appears in the logs; connections without a valid header are closed.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::raw::{Raw, contains, quote};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn with_proxy_protocol() -> ProxyOpts {
    ProxyOpts::default()
        .env("IMAPGATE_LISTEN__PROXY_PROTOCOL", "true")
        .env("IMAPGATE_TLS__HANDSHAKE_TIMEOUT_SECS", 2)
}

/// A v2 header for a TCP4 client.
fn v2_tcp4(src: [u8; 4], sport: u16, local: bool) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(if local { 0x20 } else { 0x21 });
    h.push(0x11);
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&993u16.to_be_bytes());
    h
}

async fn plain_with_header(proxy: &Proxy, header: &[u8]) -> Raw<TcpStream> {
    let mut tcp = TcpStream::connect(proxy.plain()).await.unwrap();
    tcp.write_all(header).await.unwrap();
    Raw::new(tcp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_remote_client_is_not_on_loopback() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, with_proxy_protocol());
    let (user, pw) = dovecot.take_user();
    let mut c = plain_with_header(&proxy, b"PROXY TCP4 203.0.113.7 127.0.0.1 40001 143\r\n").await;
    let greeting = c.line().await;
    assert!(
        contains(&greeting, b"LOGINDISABLED") && contains(&greeting, b"STARTTLS"),
        "a remote client must not send passwords in cleartext: {}",
        show(&greeting)
    );
    let r = c
        .cmd("a", &format!("LOGIN {} {}", quote(&user), quote(&pw)))
        .await;
    assert_starts(r.last().unwrap(), "a NO [PRIVACYREQUIRED]");
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = proxy.stderr();
    assert!(
        log.contains("client=203.0.113.7:40001"),
        "{}",
        tail(&log, 20)
    );
    assert!(log.contains("via=127.0.0.1:"), "{}", tail(&log, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_loopback_client_logs_in() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, with_proxy_protocol());
    let (user, pw) = dovecot.take_user();
    let mut c = plain_with_header(&proxy, b"PROXY TCP4 127.0.0.1 127.0.0.1 40002 143\r\n").await;
    let greeting = c.line().await;
    assert!(
        !contains(&greeting, b"LOGINDISABLED"),
        "{}",
        show(&greeting)
    );
    c.login(&user, &pw).await;
    c.ok("b", "EXAMINE INBOX").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_header_then_tls() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, with_proxy_protocol());
    let (user, pw) = dovecot.take_user();
    let mut tcp = TcpStream::connect(proxy.tls()).await.unwrap();
    tcp.write_all(&v2_tcp4([198, 51, 100, 9], 40003, false))
        .await
        .unwrap();
    let tls = tls_upgrade(tcp, &proxy.cert).await;
    let mut c = Raw::new(tls);
    assert_starts(&c.line().await, "* OK");
    c.login(&user, &pw).await;
    c.ok("b", "EXAMINE INBOX").await;
    c.ok("c", "LOGOUT").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(proxy.stderr().contains("client=198.51.100.9:40003"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_local_keeps_the_socket_address() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, with_proxy_protocol());
    let mut c = plain_with_header(&proxy, &v2_tcp4([0; 4], 0, true)).await;
    let greeting = c.line().await;
    assert!(
        !contains(&greeting, b"LOGINDISABLED"),
        "{}",
        show(&greeting)
    );
    c.ok("a", "NOOP").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_valid_header_are_closed() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, with_proxy_protocol());
    for junk in [
        &b"a1 CAPABILITY\r\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
        b"PROXY TCP4 this header never ends because it is far too long for version one.....................\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x11\x11\0\0",
    ] {
        let mut c = plain_with_header(&proxy, junk).await;
        let got = c.read_to_close().await;
        assert!(got.is_empty(), "answered without a valid header: {}", show(&got));
    }
    // A client that sends nothing is closed after the handshake timeout.
    let mut c = plain_with_header(&proxy, b"").await;
    assert!(c.read_to_close().await.is_empty());
    // And the proxy goes on.
    let mut c = plain_with_header(&proxy, b"PROXY UNKNOWN\r\n").await;
    assert_starts(&c.line().await, "* OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_believed_only_from_trusted_networks_and_per_listener() {
    let dovecot = Dovecot::shared();
    // The listener from the config file expects PROXY headers; the flag's listener does not.
    // Only 127.0.0.2 may send them.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("imapgate.toml");
    std::fs::write(
        &config,
        "[[listen.listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n",
    )
    .unwrap();
    let mut opts = ProxyOpts::default()
        .args(["--proxy-trusted", "127.0.0.2/32", "--config"])
        .args([config.display().to_string()]);
    opts.tls_listener = false;
    opts.listeners = 2;
    let proxy = Proxy::start(&dovecot, opts);
    assert_eq!(proxy.listening[0].1, proxy.plain());
    let behind_lb = proxy.listening[1].1;
    let from = |src: &'static str| tcp_from(src, behind_lb);
    // A trusted balancer's header is read: the client is who the header says.
    let mut tcp = from("127.0.0.2").await;
    tcp.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 40009 143\r\n")
        .await
        .unwrap();
    let mut c = Raw::new(tcp);
    assert!(c.line().await.starts_with(b"* OK"));
    c.ok("a", "NOOP").await;
    // Believed: the client is not on loopback, so no password over cleartext.
    let r = c.cmd("l", "LOGIN someone secret").await;
    assert_starts(&r[0], "l NO [PRIVACYREQUIRED]");
    // The same header from an address outside the trusted networks: closed, nothing said.
    let mut tcp = from("127.0.0.1").await;
    tcp.write_all(b"PROXY TCP4 127.0.0.1 127.0.0.1 40010 143\r\n")
        .await
        .unwrap();
    let got = Raw::new(tcp).read_to_close().await;
    assert!(got.is_empty(), "{}", show(&got));
    // The listener without PROXY protocol greets at once, whoever connects.
    let mut plain = proxy.raw_plain().await;
    plain.ok("b", "NOOP").await;
    let log = proxy.stderr();
    assert!(
        log.contains("outside listen.proxy_trusted_networks"),
        "{log}"
    );
}
