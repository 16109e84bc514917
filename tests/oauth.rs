//! OAuth injection against real peers: a legacy client logs in to imapgate (TLS) with a local
//! password; imapgate logs in at a real Dovecot with XOAUTH2 or OAUTHBEARER and an access token
//! it got from a real OAuth2 authorization server (npm `oidc-provider`, tests/oauth-server);
//! Dovecot's `oauth2` passdb checks every token at that server's introspection endpoint.
//! Token requests are counted at the authorization server. Nothing sleeps for a fixed time:
//! tests wait for log lines and counts, with deadlines.

// Tests run on their own runtimes, with tokio's timers (clippy.toml refuses them in the crate).
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::oauth::{Account, AuthServer, LocalUser, Redis, import, proxy_env, write_config};
use common::{Dovecot, Proxy, ProxyOpts, raw::status_of, show};

const REFRESH: &str = "refresh_token";

/// The authorization server, a Dovecot checking tokens there, and a scratch directory.
struct Bed {
    server: AuthServer,
    dovecot: Dovecot,
    dir: tempfile::TempDir,
}

fn bed() -> Bed {
    let server = AuthServer::start();
    let dovecot = Dovecot::start_oauth(&server);
    let dir = tempfile::Builder::new()
        .prefix("imapgate-oauth-")
        .tempdir()
        .unwrap();
    Bed {
        server,
        dovecot,
        dir,
    }
}

impl Bed {
    /// One Dovecot user with a local user `legacy-<user>` (password `local-<user>`) mapped to an
    /// account `acct-<user>` at `client`; the account's grant is imported into the store.
    /// Returns the config path, the local user and the refresh token.
    fn single(
        &self,
        mechanism: &str,
        client: &str,
        extra_oauth: &str,
    ) -> (std::path::PathBuf, LocalUser, String) {
        let (user, _) = self.dovecot.take_user();
        let local = LocalUser {
            name: format!("legacy-{user}"),
            password: format!("local-{user}"),
            account: format!("acct-{user}"),
            upstream_user: user.clone(),
        };
        let account = Account {
            name: local.account.clone(),
            client: client.into(),
            grant: REFRESH,
        };
        let config = write_config(
            self.dir.path(),
            &self.dovecot,
            &self.server,
            mechanism,
            &[account],
            std::slice::from_ref(&local),
            extra_oauth,
        );
        let rt = self.server.grant(&user, client)["refresh_token"]
            .as_str()
            .unwrap()
            .to_string();
        import(&config, &local.account, &rt);
        (config, local, rt)
    }

    fn proxy(&self, config: &std::path::Path) -> Proxy {
        let mut opts =
            ProxyOpts::default().args(["--config".to_string(), config.display().to_string()]);
        opts.env = proxy_env();
        opts.plain_listener = false;
        Proxy::start(&self.dovecot, opts)
    }

    fn store_file(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("store/tokens")).unwrap()
    }
}

/// LOGIN through the proxy: the tagged answer.
async fn login(proxy: &Proxy, user: &str, password: &str) -> Vec<u8> {
    let mut c = proxy.raw_tls().await;
    let r = c.cmd("a", &format!("LOGIN {user} {password}")).await;
    r.last().unwrap().clone()
}

/// LOGIN, then SELECT and FETCH: the session works as the upstream user.
async fn login_and_read(proxy: &Proxy, user: &LocalUser) {
    let mut c = proxy.raw_tls().await;
    let r = c
        .cmd("a", &format!("LOGIN {} {}", user.name, user.password))
        .await;
    assert_eq!(status_of(r.last().unwrap()), "OK", "{}", show(&r.concat()));
    let r = c.ok("b", "SELECT INBOX").await;
    assert!(
        r.iter().any(|l| l.ends_with(b" EXISTS\r\n")),
        "{}",
        show(&r.concat())
    );
    let r = c
        .ok("c", "FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await;
    assert!(
        common::raw::contains(&r.concat(), b"Plain text message"),
        "{}",
        show(&r.concat())
    );
    c.ok("d", "LOGOUT").await;
}

#[tokio::test]
async fn legacy_login_becomes_a_real_xoauth2_login() {
    let bed = bed();
    let (config, user, _) = bed.single("xoauth2", "imapgate", "");
    let proxy = bed.proxy(&config);
    login_and_read(&proxy, &user).await;
    // Dovecot's oauth2 passdb took the login: mechanism XOAUTH2, the upstream user.
    bed.dovecot
        .wait_log(
            &format!("Login: user=<{}>, method=XOAUTH2", user.upstream_user),
            1,
        )
        .await;
    assert_eq!(bed.server.count("imapgate", REFRESH), 1);
    // AUTHENTICATE PLAIN with the local password works the same; the token is warm now.
    let mut c = proxy.raw_tls().await;
    use base64::Engine as _;
    let plain = base64::engine::general_purpose::STANDARD
        .encode(format!("\0{}\0{}", user.name, user.password));
    let r = c.cmd("p", &format!("AUTHENTICATE PLAIN {plain}")).await;
    assert_eq!(status_of(r.last().unwrap()), "OK", "{}", show(&r.concat()));
    bed.dovecot
        .wait_log(
            &format!("Login: user=<{}>, method=XOAUTH2", user.upstream_user),
            2,
        )
        .await;
    assert_eq!(
        bed.server.count("imapgate", REFRESH),
        1,
        "warm token reused"
    );
    // Never a password upstream for this user.
    assert!(
        !bed.dovecot
            .log()
            .contains(&format!("user=<{}>, method=PLAIN", user.upstream_user))
    );
    assert!(
        !bed.dovecot
            .log()
            .contains(&format!("user=<{}>, method=LOGIN", user.upstream_user))
    );
}

#[tokio::test]
async fn legacy_login_becomes_a_real_oauthbearer_login() {
    let bed = bed();
    let (config, user, _) = bed.single("oauthbearer", "imapgate", "");
    let proxy = bed.proxy(&config);
    login_and_read(&proxy, &user).await;
    bed.dovecot
        .wait_log(
            &format!("Login: user=<{}>, method=OAUTHBEARER", user.upstream_user),
            1,
        )
        .await;
    assert_eq!(bed.server.count("imapgate", REFRESH), 1);
}

#[tokio::test]
async fn a_wrong_local_password_changes_nothing() {
    let bed = bed();
    let (config, user, _) = bed.single("xoauth2", "imapgate", "");
    let before = bed.store_file();
    let proxy = bed.proxy(&config);
    let answer = login(&proxy, &user.name, "not-the-password").await;
    assert!(
        answer.starts_with(b"a NO [AUTHENTICATIONFAILED]"),
        "{}",
        show(&answer)
    );
    assert_eq!(bed.store_file(), before, "the stored token is untouched");
    assert_eq!(bed.server.count("imapgate", REFRESH), 0, "no token request");
    // The right password still works afterwards (the token was not harmed).
    login_and_read(&proxy, &user).await;
    assert_eq!(bed.store_file(), before);
}

/// Logs in until the authorization server has seen `n` refreshes from `client`; every login
/// must succeed (Dovecot checks each token: an expired one would be refused).
async fn login_until_refreshes(bed: &Bed, proxy: &Proxy, user: &LocalUser, client: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut logins = 0;
    while bed.server.count(client, REFRESH) < n {
        assert!(
            Instant::now() < deadline,
            "no refresh #{n} after {logins} logins"
        );
        let answer = login(proxy, &user.name, &user.password).await;
        assert!(
            answer.starts_with(b"a OK"),
            "login {logins}: {}",
            show(&answer)
        );
        logins += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn expired_tokens_are_refreshed() {
    let bed = bed();
    // imapgate-short's access tokens live 2 s at the authorization server.
    let (config, user, _) = bed.single("xoauth2", "imapgate-short", "");
    let proxy = bed.proxy(&config);
    login_and_read(&proxy, &user).await;
    assert_eq!(bed.server.count("imapgate-short", REFRESH), 1);
    // Within its (shortened) life the token is reused ...
    let answer = login(&proxy, &user.name, &user.password).await;
    assert!(answer.starts_with(b"a OK"), "{}", show(&answer));
    // ... and refreshed before it expires: logins keep working across two more refreshes.
    login_until_refreshes(&bed, &proxy, &user, "imapgate-short", 3).await;
    login_and_read(&proxy, &user).await;
}

#[tokio::test]
async fn rotated_refresh_tokens_are_stored_at_once() {
    let bed = bed();
    // imapgate-rotate: every refresh returns a new refresh token and kills the old one (and
    // reusing an old one revokes the grant). Access tokens live 2 s.
    let (config, user, first) = bed.single("xoauth2", "imapgate-rotate", "");
    let before = bed.store_file();
    let proxy = bed.proxy(&config);
    login_and_read(&proxy, &user).await;
    assert_ne!(bed.store_file(), before, "the rotated token was stored");
    // Two more refreshes: each needs the token stored by the one before.
    login_until_refreshes(&bed, &proxy, &user, "imapgate-rotate", 3).await;
    login_and_read(&proxy, &user).await;
    // The original refresh token is dead at the server: only the stored ones worked.
    let (status, body) = common::oauth::http(
        bed.server.http,
        "POST",
        "/token",
        Some(("imapgate-rotate", "imapgate-rotate-secret")),
        &format!("grant_type=refresh_token&refresh_token={first}"),
    );
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_logins_refresh_once() {
    let bed = bed();
    let (config, user, _) = bed.single("xoauth2", "imapgate", "");
    let proxy = std::sync::Arc::new(bed.proxy(&config));
    // Warm the password check only (not the token): one login of another kind would refresh.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let proxy = proxy.clone();
            let (name, pw) = (user.name.clone(), user.password.clone());
            tokio::spawn(async move { login(&proxy, &name, &pw).await })
        })
        .collect();
    for t in tasks {
        let answer = t.await.unwrap();
        assert!(answer.starts_with(b"a OK"), "{}", show(&answer));
    }
    assert_eq!(
        bed.server.count("imapgate", REFRESH),
        1,
        "{:?}",
        common::oauth::counts(&bed.server)
    );
    bed.dovecot
        .wait_log(
            &format!("Login: user=<{}>, method=XOAUTH2", user.upstream_user),
            50,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_sharing_redis_refresh_once() {
    let bed = bed();
    let redis = Redis::start();
    let extra = format!("store = \"redis\"\nredis_url = \"{}\"\n", redis.url());
    let (config, user, _) = bed.single("xoauth2", "imapgate", &extra);
    // The refresh token went to Redis, sealed.
    let key = format!("imapgate:oauth:{}:refresh", user.account);
    let stored = redis.get(&key).expect("refresh token in Redis");
    let rt = bed.server.count("imapgate", REFRESH);
    assert_eq!(rt, 0);
    let replicas: Vec<_> = (0..2)
        .map(|_| std::sync::Arc::new(bed.proxy(&config)))
        .collect();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let proxy = replicas[i % 2].clone();
            let (name, pw) = (user.name.clone(), user.password.clone());
            tokio::spawn(async move { login(&proxy, &name, &pw).await })
        })
        .collect();
    for t in tasks {
        let answer = t.await.unwrap();
        assert!(answer.starts_with(b"a OK"), "{}", show(&answer));
    }
    assert_eq!(
        bed.server.count("imapgate", REFRESH),
        1,
        "{:?}",
        common::oauth::counts(&bed.server)
    );
    // Both replicas served logins; the token was shared through Redis, sealed.
    for p in &replicas {
        p.wait_log("logged in", 1).await;
    }
    let access = redis
        .get(&format!("imapgate:oauth:{}:access", user.account))
        .expect("shared access token");
    assert!(!access.is_empty());
    assert_eq!(
        redis.get(&key).unwrap(),
        stored,
        "the refresh token did not change"
    );
    assert!(
        redis
            .get(&format!("imapgate:oauth:{}:lock", user.account))
            .is_none()
    );
}

#[tokio::test]
async fn a_revoked_grant_fails_authentication_and_names_the_account() {
    let bed = bed();
    let (config, user, rt) = bed.single("xoauth2", "imapgate", "");
    let proxy = bed.proxy(&config);
    login_and_read(&proxy, &user).await;
    let before = bed.store_file();
    // Revoking the refresh token kills the grant and its access tokens: the cached token is
    // refused by Dovecot, the refresh by the authorization server.
    bed.server.revoke("imapgate", &rt);
    let answer = login(&proxy, &user.name, &user.password).await;
    assert!(
        answer.starts_with(b"a NO [AUTHENTICATIONFAILED]"),
        "{}",
        show(&answer)
    );
    proxy
        .wait_log(&format!("grant not usable for account {}", user.account), 1)
        .await;
    assert_eq!(bed.server.count("imapgate", REFRESH), 2);
    // The stored token is left for an administrator to replace (enroll again).
    assert_eq!(bed.store_file(), before);
    // Never a password upstream.
    let log = bed.dovecot.log();
    assert!(!log.contains(&format!("user=<{}>, method=PLAIN", user.upstream_user)));
    assert!(!log.contains(&format!("user=<{}>, method=LOGIN", user.upstream_user)));
}

#[tokio::test]
async fn a_slow_or_dead_token_endpoint_is_unavailable_in_bounded_time() {
    let mut bed = bed();
    let (config, user, _) = bed.single(
        "xoauth2",
        "imapgate",
        "request_timeout_ms = 1000\nfailure_cache_secs = 0\n",
    );
    let proxy = bed.proxy(&config);
    // Warm the password check so the timing is the token's alone.
    let answer = login(&proxy, &user.name, "wrong").await;
    assert!(answer.starts_with(b"a NO"), "{}", show(&answer));
    bed.server.slow(30_000);
    let started = Instant::now();
    let answer = login(&proxy, &user.name, &user.password).await;
    let took = started.elapsed();
    assert!(
        answer.starts_with(b"a NO [UNAVAILABLE]"),
        "{}",
        show(&answer)
    );
    assert!(took < Duration::from_millis(3000), "took {took:?}");
    assert!(took >= Duration::from_millis(900), "took {took:?}");
    // Down altogether: refused at once.
    bed.server.stop();
    let started = Instant::now();
    let answer = login(&proxy, &user.name, &user.password).await;
    assert!(
        answer.starts_with(b"a NO [UNAVAILABLE]"),
        "{}",
        show(&answer)
    );
    assert!(started.elapsed() < Duration::from_millis(2000));
    proxy.wait_log("oauth: no access token", 2).await;
    // The proxy never went to Dovecot with anything for this user.
    assert!(
        !bed.dovecot
            .log()
            .contains(&format!("user=<{}>", user.upstream_user))
    );
}

#[tokio::test]
async fn enroll_with_the_device_flow() {
    use std::io::BufRead as _;
    let bed = bed();
    let (user, _) = bed.dovecot.take_user();
    let local = LocalUser {
        name: format!("legacy-{user}"),
        password: "pw".into(),
        account: format!("acct-{user}"),
        upstream_user: user.clone(),
    };
    let account = Account {
        name: local.account.clone(),
        client: "imapgate".into(),
        grant: REFRESH,
    };
    let config = write_config(
        bed.dir.path(),
        &bed.dovecot,
        &bed.server,
        "xoauth2",
        &[account],
        std::slice::from_ref(&local),
        "",
    );
    // Not enrolled yet: the login fails, naming the account.
    let proxy = bed.proxy(&config);
    let answer = login(&proxy, &local.name, &local.password).await;
    assert!(
        answer.starts_with(b"a NO [AUTHENTICATIONFAILED]"),
        "{}",
        show(&answer)
    );
    let mut child = common::oauth::imapgate_env(std::process::Command::new(common::bin()))
        .args([
            "oauth",
            "enroll",
            &local.account,
            "--poll-interval",
            "0.2",
            "--config",
        ])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut code = None;
    let mut line = String::new();
    while code.is_none() {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "enroll printed no USER_CODE"
        );
        code = line
            .strip_prefix("USER_CODE ")
            .map(|c| c.trim().to_string());
    }
    // The account's owner approves the code (through the server's real forms).
    bed.server.approve(&code.unwrap(), &user);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "enroll failed: {rest}");
    assert!(
        rest.contains(&format!("ENROLLED {}", local.account)),
        "{rest}"
    );
    // The running proxy reads the new token from the store.
    login_and_read(&proxy, &local).await;
}

#[tokio::test]
async fn client_credentials_accounts_need_no_enrolment() {
    let bed = bed();
    // imapgate-cc's tokens name Dovecot's user3 (its client metadata).
    let local = LocalUser {
        name: "legacy-app".into(),
        password: "app-pw".into(),
        account: "app".into(),
        upstream_user: "user3".into(),
    };
    let account = Account {
        name: "app".into(),
        client: "imapgate-cc".into(),
        grant: "client_credentials",
    };
    let config = write_config(
        bed.dir.path(),
        &bed.dovecot,
        &bed.server,
        "oauthbearer",
        &[account],
        std::slice::from_ref(&local),
        "",
    );
    let proxy = bed.proxy(&config);
    login_and_read(&proxy, &local).await;
    login_and_read(&proxy, &local).await;
    assert_eq!(bed.server.count("imapgate-cc", "client_credentials"), 1);
    bed.dovecot
        .wait_log("Login: user=<user3>, method=OAUTHBEARER", 2)
        .await;
}

/// Not a check, a measurement (`cargo nextest run --release --test oauth measure
/// --run-ignored only --no-capture`): the LOGIN command's latency through the proxy, warm OAuth
/// injection (cached password check and token) against a password passed through to Dovecot,
/// interleaved, each on a fresh TLS connection (the handshake is not timed).
#[tokio::test]
#[ignore]
async fn measure_warm_oauth_login_against_password_login() {
    let bed = bed();
    let (config, user, _) = bed.single("xoauth2", "imapgate", "");
    let (plain_user, plain_pw) = bed.dovecot.take_user();
    let proxy = bed.proxy(&config);
    async fn timed(proxy: &Proxy, user: &str, pw: &str) -> Duration {
        let mut c = proxy.raw_tls().await;
        let started = Instant::now();
        let r = c.cmd("a", &format!("LOGIN {user} {pw}")).await;
        let took = started.elapsed();
        assert_eq!(status_of(r.last().unwrap()), "OK");
        took
    }
    // The same logins straight at Dovecot (plain TCP), for what the upstream itself costs: a
    // token login there includes the introspection request to the authorization server.
    let token = bed.server.grant(&user.upstream_user, "imapgate")["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    async fn direct(dovecot: &Dovecot, command: &str) -> Duration {
        let tcp = tokio::net::TcpStream::connect(dovecot.imap_addr())
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut c = common::Raw::new(tcp);
        c.line().await;
        let started = Instant::now();
        let r = c.cmd("a", command).await;
        let took = started.elapsed();
        assert_eq!(status_of(r.last().unwrap()), "OK", "{}", show(&r.concat()));
        took
    }
    use base64::Engine as _;
    let xoauth2 = base64::engine::general_purpose::STANDARD.encode(format!(
        "user={}\x01auth=Bearer {token}\x01\x01",
        user.upstream_user
    ));
    let n = 300;
    let (mut oauth, mut password, mut d_oauth, mut d_password) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n + 20 {
        let a = timed(&proxy, &user.name, &user.password).await;
        let b = timed(&proxy, &plain_user, &format!("\"{plain_pw}\"")).await;
        let c = direct(&bed.dovecot, &format!("AUTHENTICATE XOAUTH2 {xoauth2}")).await;
        let d = direct(&bed.dovecot, &format!("LOGIN {plain_user} \"{plain_pw}\"")).await;
        if i >= 20 {
            oauth.push(a);
            password.push(b);
            d_oauth.push(c);
            d_password.push(d);
        }
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() * 99 / 100])
    };
    let (om, o99) = stats(&mut oauth);
    let (pm, p99) = stats(&mut password);
    let (dom, do99) = stats(&mut d_oauth);
    let (dpm, dp99) = stats(&mut d_password);
    println!("LOGIN latency over {n} logins each (median / p99):");
    println!("  proxy, warm OAuth injection (LOGIN -> XOAUTH2): {om:?} / {o99:?}");
    println!("  proxy, password passed through (LOGIN):         {pm:?} / {p99:?}");
    println!("  Dovecot direct, AUTHENTICATE XOAUTH2:           {dom:?} / {do99:?}");
    println!("  Dovecot direct, LOGIN:                          {dpm:?} / {dp99:?}");
    println!(
        "  proxy's own share (median): OAuth {:?}, password {:?}",
        om.saturating_sub(dom),
        pm.saturating_sub(dpm)
    );
    println!("  token requests: {:?}", common::oauth::counts(&bed.server));
}

/// config/policies/oauth-legacy.lua with its users table replaced by `users` (Lua source).
fn oauth_legacy_policy(dir: &std::path::Path, users: &str) -> std::path::PathBuf {
    let example =
        std::fs::read_to_string(common::root().join("config/policies/oauth-legacy.lua")).unwrap();
    let begin = example
        .find("-- users: begin\n")
        .expect("users: begin marker");
    let end = example.find("-- users: end\n").expect("users: end marker");
    let script = format!("{}{users}\n{}", &example[..begin], &example[end..]);
    let path = dir.join("oauth-legacy.lua");
    std::fs::write(&path, script).unwrap();
    path
}

#[tokio::test]
async fn the_oauth_legacy_example_policy_logs_in_with_oauth() {
    let bed = bed();
    let (user, _) = bed.dovecot.take_user();
    let account = Account {
        name: format!("acct-{user}"),
        client: "imapgate".into(),
        grant: REFRESH,
    };
    // No [oauth.users]: the policy maps the local user and checks its password.
    let config = write_config(
        bed.dir.path(),
        &bed.dovecot,
        &bed.server,
        "xoauth2",
        std::slice::from_ref(&account),
        &[],
        "",
    );
    let rt = bed.server.grant(&user, "imapgate")["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    import(&config, &account.name, &rt);
    let hash = common::oauth::hash_password("local-secret");
    let policy = oauth_legacy_policy(
        bed.dir.path(),
        &format!(
            "local USERS = {{\n  legacy = {{ hash = \"{hash}\", account = \"{}\", mailbox = \"{user}\" }},\n}}",
            account.name
        ),
    );
    let mut opts = ProxyOpts::default().args([
        "--config".to_string(),
        config.display().to_string(),
        "--policy".to_string(),
        policy.display().to_string(),
    ]);
    opts.env = proxy_env();
    opts.plain_listener = false;
    let proxy = Proxy::start(&bed.dovecot, opts);
    let store_before = bed.store_file();
    // Wrong local password, unknown user: refused, the store untouched, no token request.
    let r = login(&proxy, "legacy", "wrong").await;
    assert_eq!(status_of(&r), "NO", "{}", show(&r));
    assert!(show(&r).contains("[AUTHENTICATIONFAILED]"), "{}", show(&r));
    let r = login(&proxy, "stranger", "local-secret").await;
    assert_eq!(status_of(&r), "NO", "{}", show(&r));
    assert_eq!(bed.store_file(), store_before);
    assert_eq!(bed.server.count("imapgate", REFRESH), 0);
    // The right one: a real XOAUTH2 login upstream as the mailbox, checked by Dovecot.
    let local = LocalUser {
        name: "legacy".into(),
        password: "local-secret".into(),
        account: account.name.clone(),
        upstream_user: user.clone(),
    };
    login_and_read(&proxy, &local).await;
    bed.dovecot
        .wait_log(&format!("Login: user=<{user}>, method=XOAUTH2"), 1)
        .await;
    assert_eq!(bed.server.count("imapgate", REFRESH), 1);
    assert!(
        !bed.dovecot
            .log()
            .contains(&format!("user=<{user}>, method=LOGIN"))
    );
}
