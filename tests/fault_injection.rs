//! Faults between the proxy and Dovecot, injected by a TCP shim: the upstream connection cut
//! at many points of a response, slow and fragmented upstream traffic, corrupted bytes. The
//! client must see a clean `* BYE [UNAVAILABLE]` or a closed connection, never a hang; other
//! sessions must not notice; responses must not depend on how the bytes were chunked.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::raw::{Raw, contains, is_tagged, literal_at_end};
use common::shim::{Faults, Shim};
use common::*;

const BYE_LOST: &[u8] = b"* BYE [UNAVAILABLE]";

/// A proxy whose upstream is a shim in front of Dovecot's plain port.
async fn setup(dovecot: &Dovecot, opts: ProxyOpts) -> (Shim, Proxy) {
    let up: SocketAddr = dovecot.imap_addr().parse().unwrap();
    let shim = Shim::start(up).await;
    let proxy = Proxy::start(
        dovecot,
        opts.upstream(UpstreamMode::Custom {
            address: shim.address(),
            tls: "none",
            ca: None,
        }),
    );
    // The proxy probes the upstream once at start-up; let that pass first.
    shim.wait_quiet(1).await;
    (shim, proxy)
}

/// Offsets in `bytes` where a response message ends (0 included).
fn boundaries(bytes: &[u8]) -> Vec<usize> {
    let mut out = vec![0];
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let mut end = pos + nl + 1;
        while let Some(n) = literal_at_end(&bytes[pos..end]) {
            end += n;
            let Some(nl) = bytes
                .get(end..)
                .and_then(|r| r.iter().position(|&b| b == b'\n'))
            else {
                return out;
            };
            end += nl + 1;
        }
        out.push(end);
        pos = end;
    }
    out
}

/// Dovecot's tagged lines carry timings that differ between runs.
fn normalize(msg: &[u8]) -> Vec<u8> {
    let s = msg.to_vec();
    if let Some(open) = s.windows(2).rposition(|w| w == b" (") {
        let tail = &s[open..];
        if tail.ends_with(b"secs).\r\n")
            && tail[2..tail.len() - 8]
                .iter()
                .all(|b| b.is_ascii_digit() || b" .+".contains(b))
        {
            let mut out = s[..open].to_vec();
            out.extend_from_slice(b" (TIME).\r\n");
            return out;
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cut_mid_fetch_gives_bye_or_close_never_a_hang() {
    let dovecot = Dovecot::shared();
    let (shim, proxy) = setup(&dovecot, ProxyOpts::default()).await;
    let (user, pw) = dovecot.take_user();

    let mut keeper = proxy.login_tls(&user, &pw).await;
    keeper.ok("k", "SELECT INBOX").await;

    // The exact bytes of the response, from an undisturbed session.
    let fetch = "FETCH 1:3 (UID FLAGS BODY.PEEK[])";
    let mut base = proxy.login_tls(&user, &pw).await;
    base.ok("s", "EXAMINE INBOX").await;
    let mut r = base.ok("f", fetch).await;
    r.pop(); // the tagged line (timings vary)
    let want = r.concat();
    let bounds = boundaries(&want);
    assert_eq!(bounds.len(), 4, "{bounds:?}");
    let lit = bounds[1] + want[bounds[1]..].iter().position(|&b| b == b'{').unwrap();
    let mut cuts = vec![
        0,
        1,
        10,
        bounds[1] - 2,
        bounds[1] - 1,
        bounds[1],
        bounds[1] + 1,
        lit + 8,   // just after a literal announcement
        lit + 100, // inside a literal
        bounds[2],
        bounds[3] - 1,
        bounds[3],
    ];
    cuts.sort_unstable();
    cuts.dedup();

    for (i, &cut) in cuts.iter().enumerate() {
        let before = shim.accepted();
        let mut c = proxy.login_tls(&user, &pw).await;
        assert_eq!(shim.accepted(), before + 1);
        let conn = shim.last();
        c.ok("s", "EXAMINE INBOX").await;
        conn.cut_down_after(cut);
        c.send(format!("f {fetch}\r\n")).await;
        let got = c.read_to_close().await;
        let (prefix, bye) = match got.windows(BYE_LOST.len()).rposition(|w| w == BYE_LOST) {
            Some(at) if got[at..].ends_with(b"\r\n") && bounds.contains(&at) => (&got[..at], true),
            _ => (&got[..], false),
        };
        assert!(
            prefix.len() <= cut && want.starts_with(prefix),
            "cut at {cut}: the client got bytes that are not the response's prefix: {}",
            show(&got)
        );
        let at_boundary = bounds.contains(&prefix.len());
        eprintln!("cut at {cut}: relayed {} bytes, BYE: {bye}", prefix.len());
        assert_eq!(
            bye,
            at_boundary,
            "cut at {cut}: {} bytes relayed, at a boundary: {at_boundary}, BYE: {bye}: ...{}",
            prefix.len(),
            show(&got[got.len().saturating_sub(200)..])
        );
        if !at_boundary {
            assert!(!contains(&got, b"* BYE"), "a BYE inside a response");
        }
        keeper.ok(&format!("k{i}"), "NOOP").await;
    }
    keeper.ok("kf", "FETCH 1 FLAGS").await;
    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("n", "SELECT INBOX").await;
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cut_inside_a_big_literal_closes_the_client() {
    let dovecot = Dovecot::shared();
    let (shim, proxy) = setup(&dovecot, ProxyOpts::default()).await;
    let (user, pw) = dovecot.take_user();
    for cut in [70_000usize, 2_000_000] {
        let mut c = proxy.login_tls(&user, &pw).await;
        let conn = shim.last();
        c.ok("s", "EXAMINE INBOX").await;
        conn.cut_down_after(cut);
        c.send("f FETCH 4 BODY.PEEK[]\r\n").await;
        let got = c.read_to_close().await;
        assert!(got.starts_with(b"* 4 FETCH (BODY[] {"), "{}", show(&got));
        assert!(
            got.len() <= cut && got.len() > cut / 2,
            "{} of {cut}",
            got.len()
        );
        assert!(!contains(&got[got.len() - 100..], b"* BYE"));
    }
    // Cut while idling: a clean BYE.
    let mut c = proxy.login_tls(&user, &pw).await;
    let conn = shim.last();
    c.ok("s", "SELECT INBOX").await;
    c.send("i IDLE\r\n").await;
    assert!(c.line().await.starts_with(b"+ "));
    conn.cut_down_after(0);
    let got = c.read_to_close().await;
    assert!(got.starts_with(BYE_LOST), "{}", show(&got));
    // Cut towards the upstream in the middle of an APPEND literal.
    let mut c = proxy.login_tls(&user, &pw).await;
    let conn = shim.last();
    conn.cut_up_after(5000);
    let m = make_message("cut-upward", 50_000);
    let mut cmd = format!("a APPEND INBOX {{{}+}}\r\n", m.len()).into_bytes();
    cmd.extend_from_slice(&m);
    cmd.extend_from_slice(b"\r\n");
    let _ = c.try_send(&cmd).await;
    let got = c.read_to_close().await;
    assert!(got.starts_with(BYE_LOST), "{}", show(&got));

    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("n", "SELECT INBOX").await;
    proxy.assert_no_panic();
}

/// A session script whose responses do not change when it runs again (EXAMINE, PEEK).
async fn run_script<S>(c: &mut Raw<S>) -> Vec<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    for (tag, cmd) in [
        ("c1", "CAPABILITY"),
        ("c2", "LIST \"\" \"*\""),
        ("c3", "EXAMINE INBOX"),
        (
            "c4",
            "FETCH 1:3,5:11 (UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE)",
        ),
        ("c5", "FETCH 1:3,5:11 BODY.PEEK[]"),
        (
            "c6",
            "UID FETCH 2,6 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BODY.PEEK[TEXT]<10.200>)",
        ),
        ("c7", "SEARCH OR FLAGGED UNSEEN"),
        ("c8", "EXAMINE \"Folder With Spaces\""),
        ("c9", "FETCH 1:* (FLAGS BODY.PEEK[])"),
    ] {
        out.extend(c.cmd(tag, cmd).await);
    }
    // Pipelined.
    c.send("p1 NOOP\r\np2 FETCH 1 (UID)\r\np3 NOOP\r\n").await;
    let mut tagged = 0;
    while tagged < 3 {
        let m = c.message().await;
        if !m.starts_with(b"* ") {
            tagged += 1;
        }
        out.push(m);
    }
    c.send("i IDLE\r\n").await;
    out.push(c.line().await);
    c.send("DONE\r\n").await;
    out.extend(c.tagged("i").await);
    out.extend(c.cmd("z", "LOGOUT").await);
    out.push(c.read_to_close().await);
    out.iter().map(|m| normalize(m)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_fragmented_upstream_gives_identical_responses() {
    let dovecot = Dovecot::shared();
    let (shim, proxy) = setup(&dovecot, ProxyOpts::default()).await;
    let (user, pw) = dovecot.take_user();

    let session = |faults: Faults| {
        shim.set_defaults(faults);
        async {
            let mut c = proxy.raw_tls().await;
            c.timeout = Duration::from_secs(30);
            let login = c.login(&user, &pw).await;
            let mut out = vec![normalize(&login)];
            out.extend(run_script(&mut c).await);
            out
        }
    };
    // The first run consumes \Recent; the second is the reference.
    session(Faults::default()).await;
    let want = session(Faults::default()).await;
    let variants = [
        Faults {
            delay: Duration::from_millis(20),
            ..Faults::default()
        },
        Faults {
            split: Some(13),
            ..Faults::default()
        },
        Faults {
            split: Some(700),
            delay: Duration::from_millis(1),
            ..Faults::default()
        },
    ];
    for faults in variants {
        let label = format!("{faults:?}");
        let got = session(faults).await;
        assert_eq!(got.len(), want.len(), "{label}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                g == w,
                "{label}: differs:\n got {}\nwant {}",
                show(g),
                show(w)
            );
        }
    }
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_upstream_bytes_never_hurt_other_sessions() {
    let dovecot = Dovecot::shared();
    let (shim, proxy) = setup(&dovecot, ProxyOpts::default()).await;
    let (user, pw) = dovecot.take_user();
    let mut keeper = proxy.login_tls(&user, &pw).await;
    keeper.ok("k", "SELECT INBOX").await;

    // A broken greeting: the login fails cleanly with UNAVAILABLE.
    shim.set_defaults(Faults {
        flip_down: vec![(0, 0x55)],
        ..Faults::default()
    });
    let mut c = proxy.raw_tls().await;
    c.send(format!("a LOGIN {user} {pw}\r\n")).await;
    let got = c.read_to_close().await;
    assert!(got.starts_with(BYE_LOST), "{}", show(&got));
    shim.set_defaults(Faults::default());

    // Flips anywhere in a FETCH response: the corrupted session may end or get garbage, and
    // may even wait for bytes that never come (a literal size changed), but nobody else notices.
    let mut rng = Rng::new(99);
    for i in 0..16 {
        let mut c = proxy.login_tls(&user, &pw).await;
        let conn = shim.last();
        c.ok("s", "EXAMINE INBOX").await;
        for _ in 0..3 {
            let mask = [0x01u8, 0x20, 0x80, 0xff, 0x0a ^ b' '][rng.below(5)];
            conn.flip_down_in(rng.below(6000), mask);
        }
        c.send("f FETCH 1:3 (UID FLAGS BODY.PEEK[])\r\ng NOOP\r\n")
            .await;
        c.timeout = Duration::from_millis(1500);
        loop {
            match c.try_message().await {
                Ok(m) if is_tagged(&m, "g") => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        drop(c);
        keeper.ok(&format!("k{i}"), "NOOP").await;
    }
    let r = keeper.ok("kf", "FETCH 1:3 (UID)").await;
    assert_eq!(r.len(), 4);
    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("n", "SELECT INBOX").await;
    proxy.assert_no_panic();
}

/// `doveadm kick`: Dovecot says BYE and closes. The client sees Dovecot's BYE, once, and a clean
/// close; no BYE of the proxy's own after it, and other users' sessions go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_bye_is_relayed_once_and_the_session_closes() {
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(&dovecot, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let (other, other_pw) = dovecot.take_user();
    let mut keeper = proxy.login_tls(&other, &other_pw).await;
    keeper.ok("k", "SELECT INBOX").await;

    let mut selected = proxy.login_tls(&user, &pw).await;
    selected.ok("s", "SELECT INBOX").await;
    let mut idler = proxy.login_tls(&user, &pw).await;
    idler.ok("s", "SELECT INBOX").await;
    idler.send("i IDLE\r\n").await;
    assert!(idler.line().await.starts_with(b"+ "));

    let out = std::process::Command::new("doveadm")
        .arg("-c")
        .arg(dovecot.info.dir.join("dovecot.conf"))
        .args(["kick", &user])
        .output()
        .expect("doveadm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for c in [&mut selected, &mut idler] {
        let got = match c.read_to_close_clean().await {
            Ok(got) => got,
            Err((got, e)) => panic!("unclean close ({e}) after {}", show(&got)),
        };
        let byes = got.windows(5).filter(|w| w == b"* BYE").count();
        assert_eq!(byes, 1, "{}", show(&got));
        assert!(!contains(&got, b"UNAVAILABLE"), "{}", show(&got));
        assert!(got.ends_with(b"\r\n"));
    }
    keeper.ok("k2", "NOOP").await;
    proxy.assert_no_panic();
}
