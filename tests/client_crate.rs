//! A real IMAP client library (async-imap) through the proxy over real TLS.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::imap_proto::{BodyStructure, MailboxDatum, Response};
use async_imap::types::Flag;
use common::*;
use futures::TryStreamExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

type Session = async_imap::Session<TlsStream<TcpStream>>;

async fn login(proxy: &Proxy, user: &str, pw: &str) -> Session {
    let tls = proxy.connect_tls().await;
    let mut client = async_imap::Client::new(tls);
    let greeting = client
        .read_response()
        .await
        .expect("greeting")
        .expect("greeting");
    assert!(
        matches!(greeting.parsed(), Response::Data { .. }),
        "greeting: {:?}",
        greeting.parsed()
    );
    client
        .login(user, pw)
        .await
        .map_err(|(e, _)| e)
        .expect("login")
}

/// Every call must finish; a hang fails the test.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_imap_full_session() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut s = within("login", login(&proxy, &user, &pw)).await;

    // Capabilities: Dovecot's, without COMPRESS.
    let caps = within("capabilities", s.capabilities()).await.unwrap();
    assert!(caps.has_str("IMAP4rev1") && caps.has_str("IDLE") && caps.has_str("MOVE"));
    assert!(!caps.iter().any(|c| format!("{c:?}").contains("COMPRESS")));

    // LIST
    let names: Vec<String> = within("list", async {
        s.list(Some(""), Some("*"))
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    })
    .await
    .iter()
    .map(|n| n.name().to_string())
    .collect();
    for want in ["INBOX", "Archive", "Sent", "Trash", "Folder With Spaces"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }

    // SELECT
    let mb = within("select", s.select("INBOX")).await.unwrap();
    assert_eq!(mb.exists, 11);
    assert_eq!(mb.uid_validity, Some(1_700_000_000));

    // FETCH headers, body, BODYSTRUCTURE
    let msgs: Vec<_> = within("fetch", async {
        s.fetch(
            "1:3",
            "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER] BODY.PEEK[] BODYSTRUCTURE)",
        )
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
    })
    .await;
    assert_eq!(msgs.len(), 3);
    let m1 = msgs.iter().find(|m| m.message == 1).unwrap();
    assert_eq!(m1.uid, Some(1));
    assert_eq!(m1.size, Some(390));
    let header = String::from_utf8_lossy(m1.header().unwrap()).to_string();
    assert!(header.contains("Subject: Plain text message"), "{header}");
    let body = m1.body().unwrap();
    assert_eq!(body.len(), 390);
    assert!(String::from_utf8_lossy(body).contains("Hello Alice"));
    assert!(matches!(
        m1.bodystructure(),
        Some(BodyStructure::Text { .. })
    ));
    let m2 = msgs.iter().find(|m| m.message == 2).unwrap();
    assert!(
        matches!(m2.bodystructure(), Some(BodyStructure::Multipart { .. })),
        "{:?}",
        m2.bodystructure()
    );
    assert!(m2.flags().any(|f| f == Flag::Flagged));

    // The 5 MiB message, whole.
    let big: Vec<_> = within("fetch 4", async {
        s.fetch("4", "(RFC822.SIZE BODY.PEEK[])")
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    })
    .await;
    assert_eq!(big[0].body().unwrap().len() as u32, big[0].size.unwrap());
    assert!(big[0].size.unwrap() > 5_000_000);

    // UID FETCH
    let by_uid: Vec<_> = within("uid fetch", async {
        s.uid_fetch("5,7", "(UID FLAGS ENVELOPE)")
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    })
    .await;
    let uids: HashSet<u32> = by_uid.iter().filter_map(|m| m.uid).collect();
    assert_eq!(uids, HashSet::from([5, 7]));
    assert!(by_uid.iter().all(|m| m.envelope().is_some()));

    // SEARCH
    let flagged = within("search", s.search("FLAGGED")).await.unwrap();
    assert!(flagged.contains(&2) && flagged.contains(&7), "{flagged:?}");
    let unseen = within("search", s.search("UNSEEN")).await.unwrap();
    assert_eq!(unseen, HashSet::from([3, 5, 7, 10]), "{unseen:?}");

    // STORE
    let stored: Vec<_> = within("store", async {
        s.store("3", "+FLAGS (\\Seen \\Flagged)")
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    })
    .await;
    assert!(stored[0].flags().any(|f| f == Flag::Flagged));
    let flagged = within("search", s.search("FLAGGED")).await.unwrap();
    assert!(flagged.contains(&3));

    // COPY and MOVE
    within("copy", s.copy("1:2", "Archive")).await.unwrap();
    within("move", s.mv("11", "Trash")).await.unwrap();
    let archive = within("status", s.status("Archive", "(MESSAGES)"))
        .await
        .unwrap();
    let trash = within("status", s.status("Trash", "(MESSAGES)"))
        .await
        .unwrap();
    assert!(archive.exists >= 4, "{archive:?}");
    assert!(trash.exists >= 3, "{trash:?}");

    // APPEND
    let msg = make_message("async-imap-append", 4000);
    within("append", s.append("INBOX", Some("(\\Seen)"), None, &msg))
        .await
        .unwrap();
    within("noop", s.noop()).await.unwrap();
    let found = within("search", s.search("SUBJECT async-imap-append"))
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let seq = *found.iter().next().unwrap();
    let back: Vec<_> = within("fetch", async {
        s.fetch(seq.to_string(), "BODY.PEEK[]")
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    })
    .await;
    assert_eq!(back[0].body().unwrap(), &msg[..]);

    // EXPUNGE
    within("store", async {
        s.store("1", "+FLAGS (\\Deleted)")
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    })
    .await;
    let expunged: Vec<u32> = within("expunge", async {
        s.expunge()
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    })
    .await;
    assert_eq!(expunged, [1]);
    let mb = within("select", s.select("INBOX")).await.unwrap();
    assert_eq!(mb.exists, 10); // 11 - moved 1 + appended 1 - expunged 1

    within("logout", s.logout()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_imap_idle_woken_by_append_from_another_session() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut s = within("login", login(&proxy, &user, &pw)).await;
    let mb = within("select", s.select("INBOX")).await.unwrap();
    assert_eq!(mb.exists, 11);

    let mut idle = s.idle();
    within("idle init", idle.init()).await.unwrap();
    let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(15));

    let appender = async {
        // Give the IDLE a moment to be in place upstream.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut other = login(&proxy, &user, &pw).await;
        other
            .append("INBOX", None, None, make_message("wake-up", 600))
            .await
            .unwrap();
        other.logout().await.unwrap();
    };
    let (woke, ()) = within("idle wait", async { tokio::join!(wait, appender) }).await;
    match woke.unwrap() {
        IdleResponse::NewData(data) => match data.parsed() {
            Response::MailboxData(MailboxDatum::Exists(n)) => assert_eq!(*n, 12),
            other => {
                // Some servers say RECENT first; EXISTS must follow.
                assert!(
                    matches!(other, Response::MailboxData(MailboxDatum::Recent(_))),
                    "{other:?}"
                );
            }
        },
        other => panic!("IDLE ended without news: {other:?}"),
    }
    let mut s = within("idle done", idle.done()).await.unwrap();
    let mb = within("select", s.select("INBOX")).await.unwrap();
    assert_eq!(mb.exists, 12);
    within("logout", s.logout()).await.unwrap();
}
