//! The Lua policy through a real client, the proxy as a subprocess (`--policy FILE`), against
//! the real Dovecot: each example policy of `config/policies/`, the readonly policy against the
//! smuggling table, sandbox escapes in a running proxy, and reload by SIGHUP. What a refused
//! command would have changed is checked at Dovecot directly, never only from the answer.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};

use common::raw::{contains, quote};
use common::*;
use tokio::net::TcpStream;

/// An example policy's path.
fn example(name: &str) -> PathBuf {
    root().join("config/policies").join(name)
}

/// A proxy running `policy`, with extra arguments.
fn proxy_with(dovecot: &Dovecot, policy: &Path, opts: ProxyOpts) -> Proxy {
    Proxy::start(
        dovecot,
        opts.args(["--policy".to_string(), policy.display().to_string()]),
    )
}

/// A client straight to Dovecot, logged in.
async fn direct(dovecot: &Dovecot, user: &str, pw: &str) -> Raw<TcpStream> {
    let mut c = Raw::new(TcpStream::connect(dovecot.imap_addr()).await.unwrap());
    assert!(c.line().await.starts_with(b"* OK"));
    c.login(user, pw).await;
    c
}

/// What Dovecot holds for the user: mailboxes with their message counts, and INBOX's flags.
async fn state(dovecot: &Dovecot, user: &str, pw: &str) -> String {
    let mut c = direct(dovecot, user, pw).await;
    let list = c
        .ok("l", "LIST \"\" \"*\" RETURN (STATUS (MESSAGES))")
        .await;
    let mut lines: Vec<String> = list
        .iter()
        .map(|l| String::from_utf8_lossy(l).trim_end().to_string())
        .filter(|l| l.starts_with("* "))
        .collect();
    c.ok("e", "EXAMINE INBOX").await;
    let flags = c.ok("f", "FETCH 1:* (UID FLAGS)").await;
    lines.extend(
        flags
            .iter()
            .map(|l| String::from_utf8_lossy(l).trim_end().to_string())
            .filter(|l| l.starts_with("* ")),
    );
    c.ok("z", "LOGOUT").await;
    lines.sort();
    lines.join("\n")
}

/// The last line of an answer.
fn last(r: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(r.last().unwrap())
        .trim_end()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_refuses_every_change_and_selects_read_only() {
    let dovecot = Dovecot::shared();
    let proxy = proxy_with(&dovecot, &example("readonly.lua"), ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let before = state(&dovecot, &user, &pw).await;

    let mut c = proxy.login_tls(&user, &pw).await;
    let r = c.ok("s", "SELECT INBOX").await;
    assert!(last(&r).contains("[READ-ONLY]"), "{}", last(&r));
    // Reading does not mark as seen (read-only on the server).
    c.ok("b", "FETCH 1:* BODY[HEADER]").await;
    for (tag, cmd) in [
        ("st", "STORE 1:* +FLAGS (\\Deleted)"),
        ("us", "UID STORE 1 -FLAGS (\\Seen)"),
        ("ex", "EXPUNGE"),
        ("ue", "UID EXPUNGE 1:*"),
        ("cp", "COPY 1 Trash"),
        ("mv", "UID MOVE 1:2 Trash"),
        ("cr", "CREATE Made"),
        ("de", "DELETE Trash"),
        ("rn", "RENAME Trash Other"),
        ("su", "SUBSCRIBE INBOX"),
        ("xx", "XAPPLEPUSHSERVICE aps-version 2"),
    ] {
        let r = c.cmd(tag, cmd).await;
        let l = last(&r);
        assert!(l.starts_with(&format!("{tag} NO [NOPERM]")), "{cmd}: {l}");
    }
    // APPEND with a synchronizing literal: refused before the client sends the message.
    c.send("ap APPEND INBOX {5}\r\n").await;
    let r = c.tagged("ap").await;
    assert!(last(&r).starts_with("ap NO [NOPERM]"), "{}", last(&r));
    // ... and with a non-synchronizing one: the message is dropped, the session goes on.
    c.send("aq APPEND INBOX {5+}\r\nhello\r\n").await;
    let r = c.tagged("aq").await;
    assert!(last(&r).starts_with("aq NO [NOPERM]"), "{}", last(&r));
    c.ok("n", "NOOP").await;
    c.ok("z", "LOGOUT").await;
    assert_eq!(
        state(&dovecot, &user, &pw).await,
        before,
        "Dovecot's state changed"
    );
    proxy.assert_no_panic();
}

/// The smuggling table's shapes (tests/smuggling.rs), each carrying a refused command where a
/// naive proxy would see literal bytes; and pipelined, literal and UID forms.
fn smuggled(hidden: &str) -> Vec<String> {
    let n = hidden.len() + 2;
    vec![
        format!("a SELECT \"{{{n}+}}\r\n{hidden}\r\n"),
        format!("a SELECT x{{{n}+}}\r\n{hidden}\r\n"),
        format!("a FETCH 1 BODY[]{{{n}+}}\r\n{hidden}\r\n"),
        format!("a NOOP {{{n}+}}\r\n{hidden}\r\n"),
        format!("a SELECT \"x\\\"{{{n}+}}\r\n{hidden}\r\n"),
        format!("a IDLE\r\nb SELECT {{{n}+}}\r\n{hidden}\r\n"),
        format!("a NOOP\r\n{hidden}\r\nd NOOP\r\n"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_holds_against_the_smuggling_table() {
    let dovecot = Dovecot::shared();
    let proxy = proxy_with(&dovecot, &example("readonly.lua"), ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let before = state(&dovecot, &user, &pw).await;
    let hidden = [
        "c STORE 1:* +FLAGS (\\Deleted)",
        "c uid store 1:* +flags.silent (\\Flagged)",
        "c UID EXPUNGE 1:*",
        "c EXPUNGE",
        "c COPY 1:* Trash",
        "c UID MOVE 1:* Trash",
        "c CREATE Smuggled",
        "c DELETE Trash",
        "c RENAME Trash Smuggled",
        "c APPEND INBOX {5+}\r\nhello",
        "c UID COPY 1 {5+}\r\nTrash",
        "c STORE 1 +FLAGS {10+}\r\n(\\Deleted)",
    ];
    let mut cases = 0;
    for h in hidden {
        for bytes in smuggled(h) {
            let mut c = proxy.login_tls(&user, &pw).await;
            // A read-write mailbox would be one that could change: SELECT comes back read-only.
            let r = c.ok("s", "SELECT INBOX").await;
            assert!(last(&r).contains("[READ-ONLY]"));
            c.send(bytes.as_bytes()).await;
            let got = c.tagged("c").await;
            assert!(
                last(&got).starts_with("c NO [NOPERM]"),
                "{}: {}",
                show(bytes.as_bytes()),
                show(&got.concat())
            );
            // The session is still in step with the server.
            c.ok("n", "NOOP").await;
            c.ok("z", "LOGOUT").await;
            cases += 1;
        }
    }
    assert_eq!(cases, 12 * 7);
    assert_eq!(
        state(&dovecot, &user, &pw).await,
        before,
        "a smuggled command reached Dovecot"
    );
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hide_folders_hides_from_lists_and_refuses_every_use() {
    let dovecot = Dovecot::shared();
    let proxy = proxy_with(&dovecot, &example("hide-folders.lua"), ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let before = state(&dovecot, &user, &pw).await;
    assert!(before.contains("Archive") && before.contains("Folder With Spaces"));

    let mut c = proxy.login_tls(&user, &pw).await;
    for cmd in [
        "LIST \"\" \"*\"",
        "LSUB \"\" \"*\"",
        "LIST \"\" \"*\" RETURN (STATUS (MESSAGES) SUBSCRIBED)",
        "LIST \"\" \"%\"",
        "LIST \"\" Archive",
    ] {
        let r = c.ok("l", cmd).await.concat();
        // (INBOX is not subscribed in the seeded set.)
        let visible: &[u8] = if cmd.starts_with("LSUB") {
            b"Trash"
        } else {
            b"INBOX"
        };
        assert!(
            contains(&r, visible) || cmd.ends_with("Archive"),
            "{cmd}: {}",
            show(&r)
        );
        assert!(!contains(&r, b"Archive"), "{cmd}: {}", show(&r));
        assert!(!contains(&r, b"Folder With Spaces"), "{cmd}: {}", show(&r));
    }
    let r = c.ok("l", "LIST \"\" \"*\"").await.concat();
    assert!(
        contains(&r, b"Trash") && contains(&r, b"Sent"),
        "{}",
        show(&r)
    );
    for (tag, cmd) in [
        ("s1", "SELECT Archive"),
        ("s2", "EXAMINE \"Folder With Spaces\""),
        ("s3", "STATUS Archive (MESSAGES)"),
        ("s4", "DELETE Archive"),
        ("s5", "SUBSCRIBE Archive"),
        ("s6", "RENAME Archive Visible"),
    ] {
        let r = c.cmd(tag, cmd).await;
        assert!(
            last(&r).starts_with(&format!("{tag} NO [NONEXISTENT]")),
            "{cmd}: {}",
            last(&r)
        );
    }
    c.ok("s", "SELECT INBOX").await;
    for (tag, cmd) in [
        ("c1", "COPY 1 Archive"),
        ("c2", "UID MOVE 1 \"Folder With Spaces\""),
    ] {
        let r = c.cmd(tag, cmd).await;
        assert!(
            last(&r).starts_with(&format!("{tag} NO [NONEXISTENT]")),
            "{cmd}: {}",
            last(&r)
        );
    }
    c.send("a1 APPEND Archive {5+}\r\nhello\r\n").await;
    assert!(last(&c.tagged("a1").await).starts_with("a1 NO [NONEXISTENT]"));
    // Names sent as literals: the proxy gives the `+`, reads the name, refuses.
    c.send("l1 SELECT {7}\r\n").await;
    c.continuation().await;
    c.send("Archive\r\n").await;
    assert!(last(&c.tagged("l1").await).starts_with("l1 NO [NONEXISTENT]"));
    c.send("l2 COPY 1 {18}\r\n").await;
    c.continuation().await;
    c.send("Folder With Spaces\r\n").await;
    assert!(last(&c.tagged("l2").await).starts_with("l2 NO [NONEXISTENT]"));
    c.send("l3 UID MOVE 1 {7+}\r\nArchive\r\n").await;
    assert!(last(&c.tagged("l3").await).starts_with("l3 NO [NONEXISTENT]"));
    // APPEND is never held: a literal name cannot be read, so it is refused.
    c.send("l4 APPEND {7}\r\n").await;
    assert!(last(&c.tagged("l4").await).starts_with("l4 NO [CANNOT]"));
    // Visible mailboxes work, by any form of name.
    c.send("l5 EXAMINE {5}\r\n").await;
    c.continuation().await;
    c.send("Trash\r\n").await;
    assert!(last(&c.tagged("l5").await).starts_with("l5 OK"));
    c.ok("z", "LOGOUT").await;
    assert_eq!(
        state(&dovecot, &user, &pw).await,
        before,
        "Dovecot's state changed"
    );
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_by_domain_picks_the_upstream_by_the_login_domain() {
    let dovecot = Dovecot::shared();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    // Two named upstreams, both this Dovecot: which one a login went to shows in the audit log.
    let opts = ProxyOpts::default()
        .env("IMAPGATE_UPSTREAMS__EU__ADDRESS", dovecot.imap_addr())
        .env("IMAPGATE_UPSTREAMS__EU__TLS", "none")
        .args(["--audit-log".to_string(), audit.display().to_string()])
        .upstream(UpstreamMode::None);
    let proxy = proxy_with(&dovecot, &example("route-by-domain.lua"), opts);
    let (user_a, pw_a) = dovecot.take_user();
    let (user_b, pw_b) = dovecot.take_user();

    let mut c = proxy
        .login_tls(&format!("{user_a}@example.org"), &pw_a)
        .await;
    c.ok("s", "SELECT INBOX").await;
    c.ok("z", "LOGOUT").await;
    let mut c = proxy
        .login_tls(&format!("{user_b}@EXAMPLE.com"), &pw_b)
        .await;
    c.ok("z", "LOGOUT").await;
    for bad in [user_a.clone(), format!("{user_a}@example.net")] {
        let mut c = proxy.raw_tls().await;
        let r = c
            .cmd("l", &format!("LOGIN {} {}", quote(&bad), quote(&pw_a)))
            .await;
        assert!(
            last(&r).starts_with("l NO [AUTHENTICATIONFAILED]"),
            "{bad}: {}",
            last(&r)
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let records = loop {
        let text = read_file(&audit);
        if text
            .lines()
            .filter(|l| l.contains("\"audit\":\"login\""))
            .count()
            >= 4
        {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "audit log:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let logins: Vec<serde_json::Value> = records
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["audit"] == "login")
        .collect();
    let find = |user: &str| {
        logins
            .iter()
            .find(|v| v["user"] == user)
            .unwrap_or_else(|| panic!("{user}: {records}"))
    };
    let a = find(&format!("{user_a}@example.org"));
    assert_eq!(
        (&a["upstream"], &a["result"]),
        (&"eu".into(), &"ok".into()),
        "{a}"
    );
    let b = find(&format!("{user_b}@EXAMPLE.com"));
    assert_eq!(
        (&b["upstream"], &b["result"]),
        (&"default".into(), &"ok".into()),
        "{b}"
    );
    assert_eq!(find(&user_a)["result"], "denied");
    // The policy's own audit event.
    assert!(
        records.contains("\"audit\":\"policy\"") && records.contains("\"routed\":\"eu\""),
        "{records}"
    );
    proxy.assert_no_panic();
}

/// A private Dovecot that knows the master user `support` (password `support-pw`), by SASL
/// PLAIN authzid and by Dovecot's `user*support` form.
fn dovecot_with_master() -> (Dovecot, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let masters = dir.path().join("masters");
    std::fs::write(&masters, "support:{PLAIN}support-pw\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&masters, std::fs::Permissions::from_mode(0o644)).unwrap();
    let passdb = format!(
        "passdb {{\n  driver = passwd-file\n  master = yes\n  pass = yes\n  args = scheme=PLAIN username_format=%u {}\n}}\n",
        masters.display()
    );
    let dovecot = Dovecot::start_with_config(&passdb, "auth_master_user_separator = *\n");
    (dovecot, dir)
}

/// Logs in through the proxy as `user*support` and proves the session is `user`'s: a mailbox
/// created there shows up in `user`'s own login at Dovecot.
async fn master_login_reaches_the_users_mailbox(proxy: &Proxy, dovecot: &Dovecot, mark: &str) {
    let (user, pw) = dovecot.take_user();
    let mut c = proxy
        .login_tls(&format!("{user}*support"), "support-pw")
        .await;
    c.ok("c", &format!("CREATE {mark}")).await;
    c.ok("z", "LOGOUT").await;
    assert!(state(dovecot, &user, &pw).await.contains(mark));
    // A wrong master password, or a master the policy does not know, is refused.
    for (login, password) in [
        (format!("{user}*support"), "wrong"),
        (format!("{user}*other"), "support-pw"),
    ] {
        let mut c = proxy.raw_tls().await;
        let r = c
            .cmd("l", &format!("LOGIN {} {}", quote(&login), quote(password)))
            .await;
        assert!(last(&r).starts_with("l NO"), "{login}: {}", last(&r));
    }
    // Ordinary logins are untouched.
    let mut c = proxy.login_tls(&user, &pw).await;
    c.ok("z", "LOGOUT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_user_by_sasl_plain_authzid() {
    let (dovecot, _dir) = dovecot_with_master();
    let proxy = proxy_with(&dovecot, &example("master-user.lua"), ProxyOpts::default());
    master_login_reaches_the_users_mailbox(&proxy, &dovecot, "ByPlain").await;
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_user_by_dovecot_separator_form() {
    let (dovecot, dir) = dovecot_with_master();
    let script = std::fs::read_to_string(example("master-user.lua"))
        .unwrap()
        .replace("local FORM = \"plain\"", "local FORM = \"dovecot\"");
    assert!(script.contains("FORM = \"dovecot\""));
    let path = dir.path().join("master-dovecot.lua");
    std::fs::write(&path, script).unwrap();
    let proxy = proxy_with(&dovecot, &path, ProxyOpts::default());
    master_login_reaches_the_users_mailbox(&proxy, &dovecot, "ByLogin").await;
    proxy.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_escapes_in_a_running_proxy_fail_closed() {
    let dovecot = Dovecot::shared();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("escapes.lua");
    std::fs::write(
        &script,
        "local escapes = {\n\
         \x20 x1 = function() while true do end end,\n\
         \x20 x2 = function() return os.execute('touch /tmp/imapgate-policy-pwned') end,\n\
         \x20 x3 = function() return io.open('/etc/passwd') end,\n\
         \x20 x4 = function() return require('os') end,\n\
         \x20 x5 = function() return load(string.dump(print)) end,\n\
         \x20 x6 = function() local t = {} while true do t[#t + 1] = string.rep('m', 65536) .. #t end end,\n\
         \x20 x7 = function() return 42 end,\n\
         }\n\
         function on_command(ctx)\n\
         \x20 local escape = escapes[ctx.tag]\n\
         \x20 if escape then return escape() end\n\
         end\n",
    )
    .unwrap();
    let proxy = proxy_with(
        &dovecot,
        &script,
        ProxyOpts::default()
            .admin()
            .env("IMAPGATE_POLICY__MEMORY_LIMIT_BYTES", 8 * 1024 * 1024)
            // The endless loop (x1) runs out of instructions (1,000,000) within ~10 ms; a
            // wall-clock limit of 50 ms could also stop the memory eater (x6) on a loaded
            // machine before it reaches its limit (CI saw timeout 2, memory 0).
            .env("IMAPGATE_POLICY__TIME_LIMIT_MS", 10_000),
    );
    let (user, pw) = dovecot.take_user();
    let mut other = proxy.login_tls(&user, &pw).await;
    let mut c = proxy.login_tls(&user, &pw).await;
    for tag in ["x1", "x2", "x3", "x4", "x5", "x6", "x7"] {
        let r = c.cmd(tag, "NOOP").await;
        assert!(
            last(&r).starts_with(&format!("{tag} NO [UNAVAILABLE]")),
            "{tag}: {}",
            last(&r)
        );
        // The session and the other one go on.
        c.ok("n", "NOOP").await;
        other.ok("o", "NOOP").await;
    }
    assert!(!Path::new("/tmp/imapgate-policy-pwned").exists());
    c.ok("z", "LOGOUT").await;
    other.ok("z", "LOGOUT").await;
    // Logged with the script's file and line, and counted.
    let log = proxy.stderr();
    assert!(log.contains("policy failed; refused"), "{log}");
    // In the session's span, though logged after login (telemetry::in_session).
    for line in log.lines().filter(|l| l.contains("policy failed; refused")) {
        assert!(
            line.contains("session{") && line.contains(&format!("user={user}")),
            "{line}"
        );
    }
    assert!(
        log.contains(&format!("{}:2", script.display())),
        "{}",
        tail(&log, 20)
    );
    let metrics = http_get(proxy.admin(), "/metrics").await;
    for (kind, n) in [
        ("timeout", 1),
        ("error", 4),
        ("memory", 1),
        ("bad_return", 1),
    ] {
        let series =
            format!("imapgate_policy_failures_total{{kind=\"{kind}\",phase=\"on_command\"}} {n}");
        assert!(metrics.contains(&series), "{series}\n{metrics}");
    }
    proxy.assert_no_panic();
}

/// GET `path` from the admin listener; the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_script_for_new_sessions_only() {
    let dovecot = Dovecot::shared();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("policy.lua");
    let version = |v: &str| {
        format!(
            "function on_command(ctx)\n  if ctx.command == 'DELETE' then return {{deny = '{v}'}} end\nend\n"
        )
    };
    std::fs::write(&script, version("v1")).unwrap();
    let proxy = proxy_with(&dovecot, &script, ProxyOpts::default());
    let (user, pw) = dovecot.take_user();
    let mut old = proxy.login_tls(&user, &pw).await;
    assert_eq!(last(&old.cmd("d", "DELETE x").await), "d NO [NOPERM] v1");

    std::fs::write(&script, version("v2")).unwrap();
    proxy.sighup();
    proxy
        .wait_log("reload: policy loaded for new sessions", 1)
        .await;
    // The new stages are built (the line above) before new connections are given them.
    proxy
        .wait_log("reload: configuration applied to new connections", 1)
        .await;
    let mut new = proxy.login_tls(&user, &pw).await;
    assert_eq!(last(&new.cmd("d", "DELETE x").await), "d NO [NOPERM] v2");
    // The session that started before keeps its version.
    assert_eq!(last(&old.cmd("d", "DELETE x").await), "d NO [NOPERM] v1");

    // A script that does not load keeps the running one.
    std::fs::write(&script, "function on_command(ctx\n").unwrap();
    proxy.sighup();
    proxy.wait_log("reload: policy script refused", 1).await;
    let log = proxy.stderr();
    assert!(
        log.contains(&format!("{}:2", script.display())),
        "{}",
        tail(&log, 10)
    );
    let mut newer = proxy.login_tls(&user, &pw).await;
    assert_eq!(last(&newer.cmd("d", "DELETE x").await), "d NO [NOPERM] v2");
    for c in [&mut old, &mut new, &mut newer] {
        c.ok("z", "LOGOUT").await;
    }
    proxy.assert_no_panic();
}
