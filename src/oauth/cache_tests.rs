use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::oauth::config::{AccountConfig, ClientAuth};
use crate::oauth::http::HttpClient;
use crate::oauth::store::Sealer;
use crate::oauth::store::file::FileStore;

/// A token endpoint on loopback answering every request with `answer` after `delay`, counting.
async fn endpoint(
    answer: &'static str,
    status: u16,
    delay: Duration,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}/token"), count)
}

fn service(url: &str, dir: &std::path::Path, timeout_ms: u64) -> TokenService {
    let mut config = OAuthConfig {
        token_endpoint: url.into(),
        client_id: "proxy".into(),
        client_secret: Some("s3cret".into()),
        request_timeout_ms: timeout_ms,
        store_file: dir.join("tokens"),
        ..OAuthConfig::default()
    };
    for (name, grant) in [
        ("alice", GrantKind::RefreshToken),
        ("app", GrantKind::ClientCredentials),
    ] {
        config.accounts.insert(
            name.into(),
            AccountConfig {
                grant,
                token_endpoint: None,
                client_id: None,
                client_secret: None,
                scope: None,
            },
        );
    }
    let tls = crate::tls::https_client_config(None).unwrap_or_else(|_| {
        // No system roots in a bare container: loopback http needs none.
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
    });
    let http = HttpClient::new(tls, Duration::from_millis(timeout_ms));
    let store = Store::File(FileStore::new(dir.join("tokens"), Sealer::new(&[5; 32])));
    TokenService::new(config, TokenClient::new(http, ClientAuth::Basic), store)
}

#[test]
fn expiry_margin() {
    let m = Duration::from_secs(60);
    assert_eq!(
        usable_for(Duration::from_secs(3600), m),
        Duration::from_secs(3540)
    );
    // Short tokens are used for half their life, not never.
    assert_eq!(
        usable_for(Duration::from_secs(2), m),
        Duration::from_secs(1)
    );
    assert_eq!(usable_for(Duration::ZERO, m), Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_waiters_one_request_then_cached() {
    let (url, count) = endpoint(
        r#"{"access_token":"at-1","expires_in":3600,"token_type":"Bearer"}"#,
        200,
        Duration::from_millis(150),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let svc = Arc::new(service(&url, dir.path(), 5000));
    svc.store()
        .put_refresh_token("alice", &Secret::new(b"rt".to_vec()))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.token("alice").await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().token.expose(), b"at-1");
    }
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Warm: no request at all.
    let t = svc.token("alice").await.unwrap();
    assert!(t.cached);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Invalidated: the next login requests again.
    svc.invalidate("alice", &t.token).await;
    assert!(!svc.token("alice").await.unwrap().cached);
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert!(matches!(
        svc.token("nobody").await,
        Err(OAuthError::UnknownAccount)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_shared_and_rotation_is_stored() {
    let (url, count) = endpoint(
        r#"{"error":"invalid_grant","error_description":"revoked"}"#,
        400,
        Duration::from_millis(50),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let svc = Arc::new(service(&url, dir.path(), 5000));
    // Not enrolled: no request at all.
    assert!(matches!(
        svc.token("alice").await,
        Err(OAuthError::NotEnrolled)
    ));
    let dir2 = tempfile::tempdir().unwrap();
    let svc = Arc::new(service(&url, dir2.path(), 5000));
    svc.store()
        .put_refresh_token("alice", &Secret::new(b"rt".to_vec()))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.token("alice").await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(OAuthError::InvalidGrant(_))));
    }
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // The stored token is left alone.
    let stored = svc.store().refresh_token("alice").await.unwrap().unwrap();
    assert_eq!(stored.expose(), b"rt");

    // A rotated refresh token is stored as soon as it arrives.
    let (url, _) = endpoint(
        r#"{"access_token":"at","expires_in":60,"refresh_token":"rt-2"}"#,
        200,
        Duration::ZERO,
    )
    .await;
    let svc = service(&url, dir2.path(), 5000);
    svc.token("alice").await.unwrap();
    let stored = svc.store().refresh_token("alice").await.unwrap().unwrap();
    assert_eq!(stored.expose(), b"rt-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_is_bounded() {
    let (url, _) = endpoint(r#"{"access_token":"late"}"#, 200, Duration::from_secs(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = service(&url, dir.path(), 300);
    let started = std::time::Instant::now();
    let e = svc.token("app").await.unwrap_err();
    assert!(matches!(e, OAuthError::Unavailable(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Nobody listening at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let svc = service(&format!("http://127.0.0.1:{port}/token"), dir.path(), 300);
    assert!(matches!(
        svc.token("app").await,
        Err(OAuthError::Unavailable(_))
    ));
}
