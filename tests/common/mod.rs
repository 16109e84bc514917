//! Test harness for the integration tests: a real Dovecot (scripts/dovecot.py), the `imapgate`
//! binary in front of it, a TLS connector trusting the proxy's certificate, a raw byte-level IMAP
//! client ([`raw`]) and a fault-injecting TCP shim ([`shim`]).
//!
//! Tests run in parallel (cargo-nextest runs every test in its own process), so nothing here uses
//! fixed ports: Dovecot and the proxy bind port 0 and report what they got.
//!
//! # Sharing Dovecot between test processes
//! Starting Dovecot costs about a second, and nextest gives every test its own process, so a
//! `OnceLock` would share nothing. [`Dovecot::shared`] shares one instance per test binary across
//! processes instead: a directory keyed by the binary's identity holds the instance, a start lock
//! (exclusive `flock`) serialises starting it, and every user holds a shared `flock` on a lease
//! file for as long as its process lives (the kernel drops it when the process ends, even on a
//! crash). A detached reaper stops the instance once nobody has held the lease for a few
//! seconds. Tests never touch another test's mail: [`Dovecot::take_user`] hands out each seeded
//! user once (exclusive file creation), so every test works on a fresh, seeded mailbox set.
//! `TEST_IMAPGATE_PRIVATE_DOVECOT=1` gives every test its own instance instead.
//!
//! # Upstream TLS
//! [`UpstreamMode::Default`] is `none` (plain IMAP to Dovecot) unless `TEST_IMAPGATE_UPSTREAM` says
//! `implicit` or `starttls`, so the whole suite can be run over upstream TLS.
#![allow(dead_code)]

pub mod oauth;
pub mod raw;
pub mod shim;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub use raw::Raw;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The proxy binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imapgate"))
}

/// Seeded users beyond alice/bob/carol in a shared instance.
const SHARED_USERS: usize = 120;
/// Seeded users in a private instance.
const PRIVATE_USERS: usize = 12;
/// Seconds without any lease holder after which the reaper stops a shared instance.
const REAPER_IDLE_SECS: f64 = 3.0;

/// What `dovecot.py start` reports.
#[derive(Debug, Clone)]
pub struct DovecotInfo {
    pub host: String,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub ca_file: PathBuf,
    pub pid_file: PathBuf,
    pub dir: PathBuf,
    pub users: BTreeMap<String, String>,
}

impl DovecotInfo {
    fn parse(json: &str) -> Result<DovecotInfo, String> {
        let v: serde_json::Value =
            serde_json::from_str(json.trim()).map_err(|e| format!("bad JSON {json:?}: {e}"))?;
        let s = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("no {k} in {json}"))
        };
        let port = |k: &str| {
            v[k].as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| format!("no {k} in {json}"))
        };
        let users = v["users"]
            .as_object()
            .ok_or_else(|| format!("no users in {json}"))?
            .iter()
            .map(|(k, p)| (k.clone(), p.as_str().unwrap_or_default().to_string()))
            .collect();
        Ok(DovecotInfo {
            host: s("host")?,
            imap_port: port("imap_port")?,
            imaps_port: port("imaps_port")?,
            ca_file: s("ca_file")?.into(),
            pid_file: s("pid_file")?.into(),
            dir: s("dir")?.into(),
            users,
        })
    }
}

/// A running Dovecot. Private instances are stopped on drop; shared ones by their reaper.
pub struct Dovecot {
    pub info: DovecotInfo,
    /// Where user claims are recorded.
    claims: PathBuf,
    /// Held (shared flock) while this handle lives, for shared instances.
    _lease: Option<File>,
    /// For private instances: the directory to stop and remove on drop.
    private_dir: Option<PathBuf>,
}

fn flock(f: &File, op: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on a file descriptor we own.
        let r = unsafe { libc::flock(f.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn pid_alive(pid_file: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return false;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return false;
    };
    // SAFETY: signal 0 only checks existence.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// Runs `dovecot.start(dir, users=N, warm_up=False)` from scripts/dovecot.py. The warm-up (which
/// makes later sessions byte-identical, at ~2 s) is skipped: every test takes a fresh user.
fn run_start(dir: &Path, users: usize) -> DovecotInfo {
    run_start_with(dir, users, None)
}

/// [`run_start`] with Dovecot serving the given certificate and key files instead of its own.
fn run_start_with(dir: &Path, users: usize, cert: Option<(&Path, &Path)>) -> DovecotInfo {
    run_start_full(dir, users, cert, "", "")
}

/// [`run_start_with`] with configuration text before the password passdb (`passdb_extra`) and
/// at the end (`extra_config`), as `dovecot.start` takes them.
fn run_start_full(
    dir: &Path,
    users: usize,
    cert: Option<(&Path, &Path)>,
    passdb_extra: &str,
    extra_config: &str,
) -> DovecotInfo {
    let scripts = root().join("scripts");
    let code = "import json, sys\n\
                sys.path.insert(0, sys.argv[1])\n\
                import dovecot\n\
                cert = tuple(sys.argv[6:8]) or None\n\
                info = dovecot.start(sys.argv[2], users=int(sys.argv[3]), warm_up=False, cert=cert, passdb_extra=sys.argv[4], extra_config=sys.argv[5])\n\
                sys.stdout.write(json.dumps(info) + '\\n')\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(code)
        .arg(&scripts)
        .arg(dir)
        .arg(users.to_string())
        .arg(passdb_extra)
        .arg(extra_config)
        .args(cert.into_iter().flat_map(|(c, k)| [c, k]))
        .stdin(Stdio::null())
        .output()
        .expect("running python3 scripts/dovecot.py");
    assert!(
        out.status.success(),
        "dovecot.py start {} failed: {}\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    DovecotInfo::parse(line).unwrap_or_else(|e| panic!("{e}"))
}

/// Removes the lock directories of other (older) test builds: no instance, no reaper, unused
/// for a day.
fn collect_stale_dirs(ours: &Path) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let day = Duration::from_secs(24 * 3600);
    for e in entries.flatten() {
        let dir = e.path();
        let name = e.file_name();
        if dir == ours || !name.to_string_lossy().starts_with("imapgate-it-") {
            continue;
        }
        let unused = std::fs::metadata(dir.join("start.lock"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if unused && !dir.join("inst").exists() && !pid_alive(&dir.join("reaper.pid")) {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Spawns `command` detached from this process (own session, no inherited stdio), so that it
/// outlives the test and nextest does not wait for it.
fn spawn_detached(command: &mut Command) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    // Never waited for: it is meant to outlive this process (init reaps it then).
    #[allow(clippy::zombie_processes)]
    let _ = command.spawn().expect("spawning a detached helper");
}

const REAPER: &str = r#"
import fcntl, os, shutil, sys, time
sys.path.insert(0, sys.argv[1])
import dovecot
base, idle_needed = sys.argv[2], float(sys.argv[3])
inst = os.path.join(base, "inst")
with open(os.path.join(base, "reaper.pid"), "w") as f:
    f.write(str(os.getpid()))
idle = 0.0
started = time.monotonic()
while True:
    time.sleep(0.5)
    with open(os.path.join(base, "start.lock"), "a") as s:
        fcntl.flock(s, fcntl.LOCK_EX)
        with open(os.path.join(base, "lease"), "a") as l:
            try:
                fcntl.flock(l, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                idle = 0.0
                continue
            idle += 0.5
            # Twelve hours is more than any test run: never leak an instance for ever.
            if idle >= idle_needed or time.monotonic() - started > 12 * 3600:
                try:
                    dovecot.stop(inst)
                finally:
                    shutil.rmtree(inst, ignore_errors=True)
                    try:
                        os.unlink(os.path.join(base, "reaper.pid"))
                    except OSError:
                        pass
                sys.exit(0)
"#;

impl Dovecot {
    /// A private instance in a fresh temporary directory, stopped (in the background) on drop.
    pub fn start() -> Dovecot {
        Dovecot::start_with_cert(None)
    }

    /// A private instance serving `cert` (certificate and key files) when given.
    pub fn start_with_cert(cert: Option<(&Path, &Path)>) -> Dovecot {
        Dovecot::start_private(cert, "", "")
    }

    /// A private instance with extra configuration: `passdb_extra` goes before the password
    /// passdb (a master passdb, say), `extra_config` at the end.
    pub fn start_with_config(passdb_extra: &str, extra_config: &str) -> Dovecot {
        Dovecot::start_private(None, passdb_extra, extra_config)
    }

    fn start_private(
        cert: Option<(&Path, &Path)>,
        passdb_extra: &str,
        extra_config: &str,
    ) -> Dovecot {
        let dir = tempfile::Builder::new()
            .prefix("imapgate-dovecot-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let info = run_start_full(&dir, PRIVATE_USERS, cert, passdb_extra, extra_config);
        let claims = dir.join("claims");
        std::fs::create_dir_all(&claims).unwrap();
        Dovecot {
            info,
            claims,
            _lease: None,
            private_dir: Some(dir),
        }
    }

    /// The instance shared by every test process of this test binary (see the module docs).
    pub fn shared() -> Dovecot {
        if std::env::var("TEST_IMAPGATE_PRIVATE_DOVECOT").is_ok_and(|v| v == "1") {
            return Dovecot::start();
        }
        let exe = std::env::current_exe().expect("current_exe");
        let meta = std::fs::metadata(&exe).expect("test binary metadata");
        let mut h = std::collections::hash_map::DefaultHasher::new();
        exe.hash(&mut h);
        meta.len().hash(&mut h);
        meta.modified().ok().hash(&mut h);
        let base = std::env::temp_dir().join(format!("imapgate-it-{:016x}", h.finish()));
        std::fs::create_dir_all(&base).unwrap();
        let open = |name: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(base.join(name))
                .unwrap()
        };
        let start_lock = open("start.lock");
        flock(&start_lock, libc::LOCK_EX).unwrap();
        // Marks this directory as in use, for `collect_stale_dirs` run by other builds.
        let _ = start_lock.set_modified(std::time::SystemTime::now());
        collect_stale_dirs(&base);
        let lease = open("lease");
        flock(&lease, libc::LOCK_SH).unwrap();
        let inst = base.join("inst");
        let claims = inst.join("claims");
        let reuse = std::fs::read_to_string(inst.join("instance.json"))
            .ok()
            .and_then(|j| DovecotInfo::parse(&j).ok())
            .filter(|info| pid_alive(&info.pid_file));
        let info = match reuse {
            Some(info) => info,
            None => {
                if !pid_alive(&base.join("reaper.pid")) {
                    spawn_detached(
                        Command::new("python3")
                            .arg("-c")
                            .arg(REAPER)
                            .arg(root().join("scripts"))
                            .arg(&base)
                            .arg(REAPER_IDLE_SECS.to_string()),
                    );
                }
                let _ = std::fs::remove_dir_all(&inst);
                let info = run_start(&inst, SHARED_USERS);
                std::fs::create_dir_all(&claims).unwrap();
                info
            }
        };
        drop(start_lock);
        let d = Dovecot {
            info,
            claims,
            _lease: Some(lease),
            private_dir: None,
        };
        // Back-to-back runs of the same build can use up the users of an instance that was
        // still alive: fall back to a private one then.
        let taken = std::fs::read_dir(&d.claims).map(|r| r.count()).unwrap_or(0);
        if taken + 16 > SHARED_USERS {
            return Dovecot::start();
        }
        d
    }

    /// A seeded user that no other test touches: (name, password).
    pub fn take_user(&self) -> (String, String) {
        for (user, pw) in &self.info.users {
            if !user.starts_with("user") {
                continue;
            }
            let claim = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.claims.join(user));
            if claim.is_ok() {
                return (user.clone(), pw.clone());
            }
        }
        panic!("out of fresh Dovecot users");
    }

    /// Adds a user with an arbitrary password (no ':' or newline) and an empty mailbox set;
    /// Dovecot rereads its passwd-file when it changes. The name gets a unique suffix, which is
    /// returned.
    pub fn add_user(&self, prefix: &str, password: &[u8]) -> String {
        use std::io::Write;
        use std::os::unix::fs::chown;
        assert!(!password.contains(&b':') && !password.contains(&b'\n'));
        let passwd = self.info.dir.join("passwd");
        let text = std::fs::read_to_string(&passwd).expect("passwd");
        // uid and gid from an existing line: user:{PLAIN}pw:uid:gid::home::
        let first = text.lines().next().unwrap();
        let fields: Vec<&str> = first.split(':').collect();
        let (uid, gid): (u32, u32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
        let home_root = Path::new(fields[5]).parent().unwrap().to_path_buf();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}{}x{n}", std::process::id());
        let home = home_root.join(&name);
        std::fs::create_dir_all(&home).unwrap();
        chown(&home, Some(uid), Some(gid)).unwrap();
        let mut line = format!("{name}:{{PLAIN}}").into_bytes();
        line.extend_from_slice(password);
        line.extend_from_slice(format!(":{uid}:{gid}::{}::\n", home.display()).as_bytes());
        let mut f = OpenOptions::new().append(true).open(&passwd).unwrap();
        f.write_all(&line).unwrap();
        drop(f);
        // Dovecot rereads the file at most once a second: wait until the user can log in.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.direct_login_works(&name, password) {
            assert!(
                Instant::now() < deadline,
                "Dovecot never learnt user {name}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        name
    }

    /// Whether LOGIN (with literals) as `user` succeeds directly at Dovecot.
    fn direct_login_works(&self, user: &str, password: &[u8]) -> bool {
        use std::io::Write;
        let Ok(mut s) = std::net::TcpStream::connect(self.imap_addr()) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut cmd = format!(
            "a LOGIN {{{}+}}\r\n{user} {{{}+}}\r\n",
            user.len(),
            password.len()
        )
        .into_bytes();
        cmd.extend_from_slice(password);
        cmd.extend_from_slice(b"\r\nb LOGOUT\r\n");
        if s.write_all(&cmd).is_err() {
            return false;
        }
        let mut all = String::new();
        let _ = BufReader::new(s).read_to_string(&mut all);
        all.contains("\r\na OK")
    }

    /// The tail of Dovecot's log, for diagnostics.
    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.info.dir.join("log/dovecot.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Dovecot's plain IMAP address.
    pub fn imap_addr(&self) -> String {
        format!("{}:{}", self.info.host, self.info.imap_port)
    }

    /// Dovecot's implicit-TLS address.
    pub fn imaps_addr(&self) -> String {
        format!("{}:{}", self.info.host, self.info.imaps_port)
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(dir) = self.private_dir.take() {
            let script = root().join("scripts/dovecot.py");
            spawn_detached(Command::new("sh").arg("-c").arg(format!(
                "python3 '{}' stop '{}'; rm -rf '{}'",
                script.display(),
                dir.display(),
                dir.display()
            )));
        }
    }
}

/// How the proxy reaches Dovecot.
#[derive(Debug, Clone)]
pub enum UpstreamMode {
    /// `TEST_IMAPGATE_UPSTREAM` (none | implicit | starttls), `none` when unset.
    Default,
    /// Plain IMAP to Dovecot's imap port.
    None,
    /// Implicit TLS to Dovecot's imaps port, verified with its CA.
    Implicit,
    /// STARTTLS on Dovecot's imap port, verified with its CA.
    Starttls,
    /// Any address (a shim, a closed port) with the given `--upstream-tls` mode.
    Custom {
        address: String,
        tls: &'static str,
        ca: Option<PathBuf>,
    },
}

/// How to run the proxy.
#[derive(Debug, Clone)]
pub struct ProxyOpts {
    pub upstream: UpstreamMode,
    /// `IMAPGATE_*` overrides (and anything else) for the proxy's environment.
    pub env: Vec<(String, String)>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Bind an implicit-TLS listener.
    pub tls_listener: bool,
    /// Bind a cleartext listener.
    pub plain_listener: bool,
    /// Pass the upstream as flags (`--upstream` ...); off when a test's config file names it.
    pub upstream_flags: bool,
    /// `LISTENING` lines to wait for in all (listeners from a config file too); 0: just the
    /// ones the two flags above ask for.
    pub listeners: usize,
}

impl Default for ProxyOpts {
    fn default() -> Self {
        ProxyOpts {
            upstream: UpstreamMode::Default,
            env: Vec::new(),
            args: Vec::new(),
            tls_listener: true,
            plain_listener: true,
            listeners: 0,
            upstream_flags: true,
        }
    }
}

impl ProxyOpts {
    /// Adds an environment variable.
    pub fn env(mut self, k: &str, v: impl ToString) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// Sets the upstream mode.
    pub fn upstream(mut self, mode: UpstreamMode) -> Self {
        self.upstream = mode;
        self
    }

    /// Adds command-line arguments.
    pub fn args<I: IntoIterator<Item = S>, S: ToString>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(|a| a.to_string()));
        self
    }

    /// Turns on the admin listener (`/metrics`, `/healthz`, `/readyz`) on a free loopback port;
    /// [`Proxy::admin`] is its address.
    pub fn admin(self) -> Self {
        self.args(["--admin", "127.0.0.1:0"])
    }

    /// Points the proxy at a closed port on loopback: no upstream can be reached.
    #[allow(dead_code)]
    pub fn unreachable_upstream(self) -> Self {
        self.upstream(UpstreamMode::Custom {
            address: format!("127.0.0.1:{}", closed_port()),
            tls: "none",
            ca: None,
        })
    }
}

/// The upstream mode selected by `TEST_IMAPGATE_UPSTREAM`.
pub fn default_upstream_mode() -> UpstreamMode {
    match std::env::var("TEST_IMAPGATE_UPSTREAM").as_deref() {
        Ok("implicit") => UpstreamMode::Implicit,
        Ok("starttls") => UpstreamMode::Starttls,
        _ => UpstreamMode::None,
    }
}

/// A running `imapgate serve`, killed on drop (after checking its stderr for panics).
pub struct Proxy {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The proxy's certificate (trust anchor for clients).
    pub cert: PathBuf,
    pub tls_addr: Option<SocketAddr>,
    pub plain_addr: Option<SocketAddr>,
    /// Every `LISTENING` line: kind and address, in order.
    pub listening: Vec<(String, SocketAddr)>,
    /// The admin listener's address (from its `ADMIN` line), when it has one.
    pub admin_addr: Option<SocketAddr>,
    stderr_path: PathBuf,
    exit: Option<ExitStatus>,
}

/// Writes a certificate and key for localhost and 127.0.0.1 with `imapgate gen-cert`.
pub fn gen_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("proxy.pem");
    let key = dir.join("proxy.key");
    let out = Command::new(bin())
        .args(["gen-cert", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["localhost", "127.0.0.1"])
        .output()
        .expect("running imapgate gen-cert");
    assert!(
        out.status.success(),
        "gen-cert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

impl Proxy {
    /// Starts the proxy in front of `dovecot` and waits for its LISTENING lines.
    pub fn start(dovecot: &Dovecot, opts: ProxyOpts) -> Proxy {
        let dir = tempfile::Builder::new()
            .prefix("imapgate-proxy-")
            .tempdir()
            .unwrap();
        let (cert, key) = gen_cert(dir.path());
        let info = &dovecot.info;
        let mode = match opts.upstream {
            UpstreamMode::Default => default_upstream_mode(),
            m => m,
        };
        let (address, tls, ca) = match mode {
            UpstreamMode::Default | UpstreamMode::None => (dovecot.imap_addr(), "none", None),
            UpstreamMode::Implicit => {
                (dovecot.imaps_addr(), "implicit", Some(info.ca_file.clone()))
            }
            UpstreamMode::Starttls => (dovecot.imap_addr(), "starttls", Some(info.ca_file.clone())),
            UpstreamMode::Custom { address, tls, ca } => (address, tls, ca),
        };
        let mut cmd = Command::new(bin());
        cmd.arg("serve");
        if opts.upstream_flags {
            cmd.args(["--upstream", &address, "--upstream-tls", tls]);
            if let Some(ca) = ca {
                cmd.arg("--upstream-ca").arg(ca);
            }
        }
        if opts.tls_listener {
            cmd.args(["--listen-tls", "127.0.0.1:0"]);
        }
        if opts.plain_listener {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.arg("--cert").arg(&cert).arg("--key").arg(&key);
        cmd.args(&opts.args);
        for (k, _) in std::env::vars() {
            if k.starts_with("IMAPGATE_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_BACKTRACE", "1");
        // Every test client comes from 127.0.0.1 and a suite opens hundreds of connections a
        // second: the per-address connection limits are off unless a test turns them on.
        for k in [
            "IMAPGATE_LIMITS__ACCEPT_RATE_PER_IP",
            "IMAPGATE_LIMITS__MAX_CONNECTIONS_PER_IP",
            "IMAPGATE_LIMITS__MAX_PREAUTH_PER_IP",
        ] {
            cmd.env(k, "0");
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let stderr_path = dir.path().join("stderr.log");
        let stderr = File::create(&stderr_path).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .current_dir(dir.path());
        let mut child = cmd.spawn().expect("spawning imapgate serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let _ = tx.send(line.trim_end().to_string());
                    }
                }
            }
        });
        let mut proxy = Proxy {
            child: Some(child),
            dir,
            cert,
            tls_addr: None,
            plain_addr: None,
            listening: Vec::new(),
            admin_addr: None,
            stderr_path,
            exit: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while (opts.tls_listener && proxy.tls_addr.is_none())
            || (opts.plain_listener && proxy.plain_addr.is_none())
            || proxy.listening.len() < opts.listeners
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    let parts: Vec<&str> = line.split_whitespace().collect();
                    // The proxy prints ADMIN before its LISTENING lines.
                    if let ["ADMIN", addr] = parts[..] {
                        proxy.admin_addr = Some(addr.parse().expect("ADMIN address"));
                    }
                    if let ["LISTENING", kind, addr] = parts[..] {
                        let addr: SocketAddr = addr.parse().expect("LISTENING address");
                        proxy.listening.push((kind.to_string(), addr));
                        match kind {
                            "tls" => {
                                proxy.tls_addr.get_or_insert(addr);
                            }
                            "plain" => {
                                proxy.plain_addr.get_or_insert(addr);
                            }
                            _ => {}
                        }
                    }
                }
                Err(_) => {
                    if let Some(status) = proxy.child.as_mut().unwrap().try_wait().unwrap() {
                        panic!(
                            "imapgate exited with {status} before listening:\n{}",
                            proxy.stderr()
                        );
                    }
                    if Instant::now() >= deadline {
                        panic!("imapgate printed no LISTENING lines:\n{}", proxy.stderr());
                    }
                }
            }
        }
        proxy
    }

    /// Everything the proxy logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Panics if the proxy's stderr shows a panic.
    pub fn assert_no_panic(&self) {
        let err = self.stderr();
        assert!(
            !err.contains("panicked"),
            "the proxy panicked:\n{}",
            tail(&err, 80)
        );
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM.
    pub fn sighup(&self) {
        // SAFETY: plain kill(2) on our own child.
        let r = unsafe { libc::kill(self.pid() as i32, libc::SIGHUP) };
        assert_eq!(r, 0, "kill SIGHUP");
    }

    /// Waits until the proxy's log holds `needle` at least `n` times; panics after 10 s.
    pub async fn wait_log(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.stderr().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} (x{n}) in the log:\n{}",
                tail(&self.stderr(), 30)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn sigterm(&self) {
        // SAFETY: plain kill(2) on our own child.
        let r = unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        assert_eq!(r, 0, "kill SIGTERM");
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.exit {
            return s;
        }
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.exit = Some(s);
                return s;
            }
            if Instant::now() >= deadline {
                panic!(
                    "imapgate did not exit within {timeout:?}:\n{}",
                    tail(&self.stderr(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// The TLS listener's address.
    pub fn tls(&self) -> SocketAddr {
        self.tls_addr.expect("no TLS listener")
    }

    /// The admin listener's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin_addr
            .expect("no admin listener (ProxyOpts::admin)")
    }

    /// The cleartext listener's address.
    pub fn plain(&self) -> SocketAddr {
        self.plain_addr.expect("no plain listener")
    }

    /// A TLS connection to the proxy (handshake done, greeting not read).
    pub async fn connect_tls(&self) -> TlsStream<TcpStream> {
        tls_connect(self.tls(), &self.cert).await
    }

    /// A raw client over TLS, greeting read and checked.
    pub async fn raw_tls(&self) -> Raw<TlsStream<TcpStream>> {
        let mut c = Raw::new(self.connect_tls().await);
        let g = c.line().await;
        assert!(g.starts_with(b"* OK"), "greeting: {}", show(&g));
        c
    }

    /// A raw client on the cleartext listener, greeting read and checked.
    pub async fn raw_plain(&self) -> Raw<TcpStream> {
        let mut c = Raw::new(TcpStream::connect(self.plain()).await.unwrap());
        let g = c.line().await;
        assert!(g.starts_with(b"* OK"), "greeting: {}", show(&g));
        c
    }

    /// A raw client over TLS, logged in as `user`.
    pub async fn login_tls(&self, user: &str, pw: &str) -> Raw<TlsStream<TcpStream>> {
        let mut c = self.raw_tls().await;
        c.login(user, pw).await;
        c
    }

    /// The proxy's working directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let err = self.stderr();
        if std::env::var("TEST_IMAPGATE_SHOW_LOG").is_ok() {
            eprintln!("---- proxy stderr ----\n{err}");
        }
        if !std::thread::panicking() && err.contains("panicked") {
            panic!("the proxy panicked:\n{}", tail(&err, 80));
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Bytes for assertion messages.
/// Asserts that a response starts with `prefix`, showing it when it does not.
#[allow(dead_code)]
pub fn assert_starts(msg: &[u8], prefix: &str) {
    assert!(
        msg.starts_with(prefix.as_bytes()),
        "expected {prefix:?}..., got {}",
        show(msg)
    );
}

pub fn show(b: &[u8]) -> String {
    let shown = &b[..b.len().min(600)];
    let mut s = shown.escape_ascii().to_string();
    if b.len() > shown.len() {
        s.push_str(&format!("...({} bytes)", b.len()));
    }
    s
}

/// A rustls client configuration trusting the certificates in `ca` (PEM).
pub fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("reading CA file") {
        roots.add(cert.expect("CA PEM")).expect("adding CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// TLS over an established TCP connection (implicit TLS, or after STARTTLS), as "localhost".
pub async fn tls_upgrade(tcp: TcpStream, ca: &Path) -> TlsStream<TcpStream> {
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(client_config(ca)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake timed out")
    .expect("TLS handshake")
}

/// Connects to `addr` and does the TLS handshake, trusting `ca`.
pub async fn tls_connect(addr: SocketAddr, ca: &Path) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connecting");
    tcp.set_nodelay(true).unwrap();
    tls_upgrade(tcp, ca).await
}

/// A TCP connection to `addr` from the loopback address `src` (127.0.0.2, ...): tests that need
/// several client addresses.
pub async fn tcp_from(src: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{src}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A port on 127.0.0.1 where nothing listens.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Reads a file fully (a helper for logs).
pub fn read_file(p: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// A small deterministic PRNG (xorshift64*), for garbage and offsets.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A message of about `size` bytes with CRLF line endings, unique by `label`.
pub fn make_message(label: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Test <test@example.com>\r\nTo: user@example.com\r\nSubject: {label}\r\n\
         Date: Fri, 01 Mar 2024 09:00:00 +0000\r\nMessage-ID: <{label}@imapgate.test>\r\n\r\n"
    )
    .into_bytes();
    let mut n = 0u64;
    while m.len() + 80 <= size {
        let line = format!(
            "{label} line {n:08} {}\r\n",
            "abcdefghijklmnopqrstuvwxyz0123456789"
        );
        m.extend_from_slice(line.as_bytes());
        n += 1;
    }
    while m.len() + 2 < size {
        m.push(b'x');
    }
    m.extend_from_slice(b"\r\n");
    m
}
